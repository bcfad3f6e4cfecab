//! Settings of the I/O layers, shared by the sync and tokio servers and clients.

use std::fmt;
use std::time::Duration;

use crate::proto::Config;

/// The default read buffer of a connection: 64 KiB.
pub const DEFAULT_READ_BUFFER_SIZE: usize = 64 << 10;
/// The default high-water mark of a connection's outgoing bytes: 256 KiB.
///
/// Chosen from the soak test of 300 clients that flood 64 KiB messages and never read
/// (`crates/wsline-cli/tests/soak.rs`): at 4 MiB the server held 4.2 MiB per such client
/// (1.25 GiB in all) and a normal client's p99 echo took 105–121 ms; at 256 KiB, 362–427 KiB
/// per client and a p99 of 3–21 ms; at 64 KiB, 170–242 KiB and 5–9 ms. Above the kernel's
/// own socket buffer, this is how far the server reads ahead of a peer that does not read;
/// a larger mark buys nothing for a peer that does.
pub const DEFAULT_SEND_HIGH_WATER: usize = 256 << 10;

/// The default budget of bytes queued for all of a server's connections together: 512 MiB,
/// some 2,000 connections at the default high-water mark.
pub const DEFAULT_SEND_BUDGET: usize = 512 << 20;

/// The default of [`ServerConfig::max_publish_backlog`]: 64 MiB.
pub const DEFAULT_MAX_PUBLISH_BACKLOG: usize = 64 << 20;

/// What a server does when a connection's outgoing bytes pass the high-water mark
/// (a client that reads too slowly).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackpressurePolicy {
    /// `send` returns [`Error::SendBufferFull`](crate::Error::SendBufferFull) and the
    /// message is not queued; the application decides (drop, retry later, close).
    Error,
    /// The connection is failed with 1008 (policy violation) and dropped. The default: a
    /// broadcast to many clients must not stall on, or buffer for, one slow reader.
    #[default]
    Close,
}

/// Whether a client opens its WebSocket as a stream of an HTTP/2 connection (RFC 8441
/// extended CONNECT) instead of over HTTP/1.1: [`ConnectConfig::http2`].
///
/// Over HTTP/1.1 a WebSocket has its TCP connection to itself, which costs the least CPU per
/// message; HTTP/2 pays off when a client keeps several WebSockets to one server (use
/// `tokio::Http2Connection` to open them on one connection) or reaches it through
/// infrastructure that speaks only HTTP/2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Http2Policy {
    /// HTTP/1.1 only. The default.
    #[default]
    Never,
    /// HTTP/2 when the server offers it (tokio client, feature `http2`): over `wss://` the
    /// TLS handshake offers `h2` and `http/1.1` by ALPN, and when the server picks `h2` and
    /// advertises `SETTINGS_ENABLE_CONNECT_PROTOCOL` the WebSocket is an HTTP/2 stream;
    /// otherwise it is HTTP/1.1 (on a new connection when the server picked `h2` without
    /// RFC 8441). `ws://` stays HTTP/1.1: nothing in plain TCP says that a server speaks
    /// HTTP/2. The blocking client and builds without `http2` use HTTP/1.1.
    WhenOffered,
    /// HTTP/2 always (tokio client, feature `http2`): ALPN `h2` alone over `wss://`, h2c
    /// with prior knowledge over `ws://`. A server without HTTP/2 or RFC 8441 fails the
    /// attempt with [`Error::Handshake`](crate::Error::Handshake) or
    /// [`Error::Tls`](crate::Error::Tls), one that hangs up with a transient error as over
    /// HTTP/1.1 (closed early, or I/O); the blocking client and builds without `http2`
    /// fail every attempt with [`Error::Unsupported`](crate::Error::Unsupported).
    Always,
}

/// Socket and buffer settings of one connection, shared by [`ServerConfig::io`] and
/// [`ConnectConfig::io`].
///
/// ```
/// use wsline::{IoConfig, ServerConfig};
/// let config = ServerConfig {
///     io: IoConfig { send_high_water: 1 << 20, ..IoConfig::default() },
///     ..ServerConfig::default()
/// };
/// assert!(config.io.nodelay);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoConfig {
    /// Bytes read from a socket at a time. Default: 64 KiB ([`DEFAULT_READ_BUFFER_SIZE`]).
    pub read_buffer_size: usize,
    /// Most bytes queued for one connection before sending pushes back: a server applies
    /// [`ServerConfig::backpressure`], a client's `send` waits for the socket.
    /// Default: 256 KiB ([`DEFAULT_SEND_HIGH_WATER`]).
    pub send_high_water: usize,
    /// Set `TCP_NODELAY` on the socket. Default: `true`.
    pub nodelay: bool,
}

impl Default for IoConfig {
    fn default() -> Self {
        Self {
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            send_high_water: DEFAULT_SEND_HIGH_WATER,
            nodelay: true,
        }
    }
}

/// Settings of a server, sync or tokio.
///
/// ```
/// use std::time::Duration;
/// use wsline::{Config, ServerConfig};
/// let config = ServerConfig {
///     protocol: Config { max_message_size: Some(16 << 20), ..Config::default() },
///     max_connections: 50_000,
///     ..ServerConfig::default()
/// };
/// assert_eq!(config.protocol.open_timeout, Some(Duration::from_secs(10)));
/// ```
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Protocol settings of every connection: limits, timeouts, keepalive, subprotocols,
    /// extensions. Default: [`Config::default`] plus permessage-deflate when the `deflate`
    /// feature is on.
    pub protocol: Config,
    /// Event-loop threads of the sync event-loop server (`sync::server::serve`) only: the
    /// thread-per-connection server and the tokio server ignore it (under tokio, the runtime
    /// the application builds decides the threads). Default: the number of CPUs this process may run on (so a server pinned
    /// to one core runs one loop).
    pub workers: usize,
    /// Most connections open at once; further clients wait in the listen backlog (the
    /// tokio server keeps one of them for the next client while it waits). On an HTTP/2
    /// connection each WebSocket counts as one more besides the connection itself, and one
    /// that finds none left is answered 503. Default: 100,000.
    pub max_connections: usize,
    /// Buffers, high-water mark and `TCP_NODELAY` of every accepted connection; past the
    /// high-water mark [`ServerConfig::backpressure`] applies. Default: [`IoConfig::default`].
    pub io: IoConfig,
    /// What happens past the high-water mark. Default: close the connection.
    pub backpressure: BackpressurePolicy,
    /// Most bytes queued for all connections together (output their sockets have not taken
    /// yet). Past it, a connection holding more than its fair share (the budget divided
    /// among the open connections) is treated as past its own high-water mark: it is not
    /// read, and [`ServerConfig::backpressure`] applies to its sends. So the connections
    /// holding the most are the ones held back, and the server's output memory stays near
    /// the budget however many peers stop reading. Input is bounded per connection instead
    /// (`max_message_size`, the read buffer). `None`: no budget. Default: 512 MiB
    /// ([`DEFAULT_SEND_BUDGET`]).
    pub send_budget: Option<usize>,
    /// How long a shutdown waits for connections to finish their closing handshake before
    /// dropping them. Default: 5 s.
    pub shutdown_timeout: Duration,
    /// Serve WebSockets over HTTP/2 as well (RFC 8441 extended CONNECT, many WebSockets on
    /// one connection): h2 over TLS when the client picks it by ALPN (`h2` is offered before
    /// `http/1.1` unless the TLS configuration sets its own ALPN list), h2c when a plain
    /// connection starts with the HTTP/2 preface. The tokio server with the `http2` feature
    /// only; ignored otherwise. Default: `true`.
    pub http2: bool,
    /// Most WebSockets open at once on one HTTP/2 connection (its
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`): a client that wants more waits for one to end,
    /// or has the extra streams refused (`REFUSED_STREAM`). Each counts against the send
    /// budget like a connection of its own, and costs what one does (its read buffer, a
    /// message being reassembled, compression state), plus up to 64 KiB that h2
    /// buffers for it to send and its 256 KiB receive window of what the client sent ahead
    /// of the WebSocket's reads. The connection's receive window is room for every stream's,
    /// up to 16 MiB: a WebSocket whose handler does not read holds its own 256 KiB, not the
    /// others'. Default: 256.
    pub http2_max_streams: u32,
    /// TLS (feature `rustls`): every accepted connection runs the TLS handshake with this
    /// configuration before the WebSocket one, and the server serves `wss://`. Default:
    /// `None`, plain `ws://`.
    #[cfg(feature = "rustls")]
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The topics the server's connections subscribe to and publish on
    /// ([`topics`](crate::topics)). Default: a registry of its own, for this node only;
    /// servers given clones of one share it (a sync and a tokio server, or several ports).
    #[cfg(any(feature = "sync", feature = "tokio"))]
    pub topics: crate::topics::Topics,
    /// Sync event-loop server: most bytes of published messages waiting for one event loop
    /// to deliver them. Past it a publish is dropped for that loop's subscribers, and
    /// counted ([`TopicStats::dropped`](crate::topics::TopicStats::dropped)): publishers
    /// faster than the loop cannot grow its queue without bound. (A tokio connection's
    /// publications count against its own high-water mark instead.) Default: 64 MiB
    /// ([`DEFAULT_MAX_PUBLISH_BACKLOG`]).
    pub max_publish_backlog: usize,
}

impl ServerConfig {
    /// The URI scheme clients use: `wss` with TLS, else `ws`.
    #[cfg(any(feature = "sync", feature = "tokio"))]
    pub(crate) fn scheme(&self) -> &'static str {
        #[cfg(feature = "rustls")]
        if self.tls.is_some() {
            return "wss";
        }
        "ws"
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            protocol: crate::default_protocol_config(),
            workers: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            max_connections: 100_000,
            io: IoConfig::default(),
            backpressure: BackpressurePolicy::default(),
            send_budget: Some(DEFAULT_SEND_BUDGET),
            shutdown_timeout: Duration::from_secs(5),
            http2: true,
            http2_max_streams: 256,
            #[cfg(feature = "rustls")]
            tls: None,
            #[cfg(any(feature = "sync", feature = "tokio"))]
            topics: crate::topics::Topics::new(),
            max_publish_backlog: DEFAULT_MAX_PUBLISH_BACKLOG,
        }
    }
}

impl ServerConfig {
    /// Makes every extension that has a variant for broadcasts use it: permessage-deflate
    /// then negotiates `server_no_context_takeover`, so that a message published to many
    /// connections is compressed once per distinct set of parameters instead of once per
    /// connection (see [`topics`](crate::topics)). The price is the ratio: each message is
    /// compressed without the ones before it as dictionary, which costs most on small,
    /// similar messages. For 2,000 JSON chat messages of 118 bytes on average, at wsline's
    /// defaults (level 2, 12-bit window, memLevel 5), the output was 21 % of the input with
    /// context takeover and 79 % without (measured with zlib, which zlib-rs matches): a
    /// room of more than a handful of members still saves CPU, at up to 4× the bytes.
    #[must_use]
    pub fn with_shared_compression(mut self) -> Self {
        for extension in &mut self.protocol.extensions {
            if let Some(shared) = extension.for_broadcast() {
                *extension = shared;
            }
        }
        self
    }
}

/// Settings of a client connection, sync or tokio.
///
/// ```
/// use wsline::ConnectConfig;
/// let config = ConnectConfig {
///     origin: Some("https://example.com".into()),
///     headers: vec![("Authorization".into(), "Bearer token".into())],
///     ..ConnectConfig::default()
/// };
/// assert!(config.io.nodelay);
/// ```
#[derive(Clone)]
pub struct ConnectConfig {
    /// Protocol settings: limits, timeouts (`open_timeout` bounds connect + handshake),
    /// keepalive, subprotocols, extensions, `User-Agent`. Default: [`Config::default`] plus
    /// permessage-deflate when the `deflate` feature is on.
    pub protocol: Config,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// Extra headers for the handshake request.
    pub headers: Vec<(String, String)>,
    /// Buffers, high-water mark (past it `send` waits for the socket) and `TCP_NODELAY`.
    /// Default: [`IoConfig::default`].
    pub io: IoConfig,
    /// Redirects (301, 302, 303, 307, 308 with a `Location`) followed before the last one
    /// is reported as the handshake's rejection; `0` follows none. A redirect from `wss://`
    /// to `ws://` is never followed, and one to another origin (scheme, host, port) drops
    /// [`headers`](Self::headers), since they may carry credentials. Default: 10.
    pub max_redirects: usize,
    /// An HTTP proxy to tunnel through with `CONNECT`, for `ws://` and `wss://` alike:
    /// `http://[user:password@]host[:port]`. Default: `None`, connect directly (the
    /// `HTTPS_PROXY` environment variable is not read: pass its value here to use it).
    pub proxy: Option<String>,
    /// Whether the WebSocket may be a stream of an HTTP/2 connection (RFC 8441): see
    /// [`Http2Policy`]. Redirects, the proxy and TLS settings apply either way. Default:
    /// [`Http2Policy::Never`], HTTP/1.1.
    pub http2: Http2Policy,
    /// The waits between failed attempts of a reconnecting client
    /// (`sync::client::reconnecting`, `tokio::reconnecting`). Default: [`Backoff::default`](crate::Backoff::default).
    #[cfg(any(feature = "sync", feature = "tokio"))]
    pub backoff: crate::Backoff,
    /// TLS settings for `wss://` URIs (feature `rustls`). Default: `None`, which trusts the
    /// Mozilla root certificates ([`tls::default_client_config`](crate::tls::default_client_config)).
    #[cfg(feature = "rustls")]
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        Self {
            protocol: crate::default_protocol_config(),
            origin: None,
            headers: Vec::new(),
            io: IoConfig::default(),
            max_redirects: 10,
            proxy: None,
            http2: Http2Policy::Never,
            #[cfg(any(feature = "sync", feature = "tokio"))]
            backoff: crate::Backoff::default(),
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }
}

/// Without header values and the proxy's password: debug output ends up in logs.
impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        let mut debug = f.debug_struct("ConnectConfig");
        debug
            .field("protocol", &self.protocol)
            .field("origin", &self.origin)
            .field("headers (values hidden)", &header_names)
            .field("io", &self.io)
            .field("max_redirects", &self.max_redirects)
            .field(
                "proxy",
                &self.proxy.as_deref().map(crate::uri::without_user_info),
            )
            .field("http2", &self.http2);
        #[cfg(any(feature = "sync", feature = "tokio"))]
        debug.field("backoff", &self.backoff);
        #[cfg(feature = "rustls")]
        debug.field("tls", &self.tls);
        debug.finish()
    }
}

impl ConnectConfig {
    /// Adds `Origin` and the extra headers to a handshake request.
    pub fn apply_to(&self, request: &mut crate::proto::Request) {
        if let Some(origin) = &self.origin {
            request.headers.insert("Origin", origin.clone());
        }
        for (name, value) in &self.headers {
            request.headers.append(name.clone(), value.clone());
        }
    }
}
