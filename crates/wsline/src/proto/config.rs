//! Connection settings: limits, timeouts, handshake options.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::proto::extension::ExtensionFactory;

/// The default largest message: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// The default longest line of an HTTP head: 8 KiB.
pub const DEFAULT_MAX_LINE_LEN: usize = 8 << 10;
/// The default largest number of HTTP header fields.
pub const DEFAULT_MAX_HEADERS: usize = 128;
/// The default largest HTTP head (request or response line plus headers): 16 KiB.
pub const DEFAULT_MAX_HEAD_SIZE: usize = 16 << 10;
/// The default time a peer's close frame or protocol error waits for the application to
/// acknowledge the events before it: 100 ms.
pub const DEFAULT_ACKNOWLEDGE_TIMEOUT: Duration = Duration::from_millis(100);
/// The default largest body of a non-101 handshake response kept for the caller: 64 KiB.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 64 << 10;

/// Settings of one connection, shared by both sides. Plain data: build it with
/// `Config { field: value, ..Config::default() }` or the chainable setters.
///
/// ```
/// use std::time::Duration;
/// use wsline::Config;
/// let config = Config {
///     max_message_size: Some(16 << 20),
///     ping_interval: None,
///     ..Config::default()
/// };
/// assert_eq!(config.close_timeout, Some(Duration::from_secs(10)));
/// ```
#[derive(Clone)]
pub struct Config {
    /// Largest reassembled (and decompressed) message in bytes; a bigger one fails the
    /// connection with 1009 as soon as its size is known. Default: 1 MiB. `None` disables the
    /// limit.
    pub max_message_size: Option<usize>,
    /// Largest single frame payload in bytes; a bigger one fails with 1009 as soon as its
    /// header arrives. Default: `None` (only `max_message_size` applies).
    pub max_frame_size: Option<usize>,
    /// Deliver data frames one by one as [`Event::Fragment`](crate::proto::Event::Fragment)
    /// instead of whole messages. Text is still validated across fragments. Default: `false`.
    pub deliver_fragments: bool,
    /// How long the opening handshake may take. Default: 10 s. `None` waits forever.
    pub open_timeout: Option<Duration>,
    /// How long the closing handshake may take before the TCP connection is dropped.
    /// Default: 10 s. `None` waits forever.
    pub close_timeout: Option<Duration>,
    /// How long a close frame or protocol error from the peer waits, at most, for the
    /// application to acknowledge the events received before it
    /// ([`Connection::acknowledge_events`](crate::proto::Connection::acknowledge_events)),
    /// counted from when it took the last of them, before the connection acts on it anyway
    /// (replies queued later fail). Default: 100 ms. `None` waits for the acknowledgement.
    pub acknowledge_timeout: Option<Duration>,
    /// Send a keepalive ping after this long without one. Default: 20 s. `None` disables
    /// keepalive.
    pub ping_interval: Option<Duration>,
    /// Fail the connection with 1011 when a keepalive ping gets no pong within this time
    /// and the peer sent nothing meanwhile. A busy peer's pong can queue behind megabytes
    /// of its messages, so each time the timeout runs out with bytes received since, it
    /// runs once more. A peer silent since the ping is failed one timeout after it; one
    /// that falls silent later, within two timeouts of its last byte — in all, within about
    /// `max(ping_interval + ping_timeout, 2 × ping_timeout)` of it. A peer that keeps
    /// sending but never answers is not failed by keepalive: the send high-water mark
    /// deals with a peer that does not read. Default: 20 s. `None` never fails.
    pub ping_timeout: Option<Duration>,
    /// Longest line of the HTTP head (request line or header line). A longer request line
    /// gets 414, a longer header line 431. Default: 8 KiB.
    pub max_line_len: usize,
    /// Most header fields in the HTTP head; more get 431. Default: 128.
    pub max_headers: usize,
    /// Largest HTTP head in bytes; bigger gets 431, and nothing beyond it is buffered.
    /// Default: 16 KiB.
    pub max_head_size: usize,
    /// Largest body of a rejected client handshake (a non-101 response) kept for the caller;
    /// the rest is discarded. Default: 64 KiB.
    pub max_response_body: usize,
    /// Subprotocols, in order of preference: offered by a client; accepted by a server (the
    /// first of the server's list that the client offered). Default: none.
    pub subprotocols: Vec<String>,
    /// Extensions to negotiate, in order of preference. Default: none here; the sync and
    /// tokio layers add permessage-deflate when the `deflate` feature is on.
    pub extensions: Vec<Arc<dyn ExtensionFactory>>,
    /// Value of the `Server` header a server sends, `None` for no header.
    /// Default: `wsline/VERSION`.
    pub server_header: Option<String>,
    /// Value of the `User-Agent` header a client sends, `None` for no header.
    /// Default: `wsline/VERSION`.
    pub user_agent: Option<String>,
    /// **Deviation from RFC 6455 §5.1**: accept unmasked frames from clients. Only for
    /// peers known to be broken. Default: `false`.
    pub accept_unmasked_frames: bool,
}

impl Default for Config {
    fn default() -> Self {
        let product = format!("wsline/{}", env!("CARGO_PKG_VERSION"));
        Self {
            max_message_size: Some(DEFAULT_MAX_MESSAGE_SIZE),
            max_frame_size: None,
            deliver_fragments: false,
            open_timeout: Some(Duration::from_secs(10)),
            close_timeout: Some(Duration::from_secs(10)),
            acknowledge_timeout: Some(DEFAULT_ACKNOWLEDGE_TIMEOUT),
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Some(Duration::from_secs(20)),
            max_line_len: DEFAULT_MAX_LINE_LEN,
            max_headers: DEFAULT_MAX_HEADERS,
            max_head_size: DEFAULT_MAX_HEAD_SIZE,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            subprotocols: Vec::new(),
            extensions: Vec::new(),
            server_header: Some(product.clone()),
            user_agent: Some(product),
            accept_unmasked_frames: false,
        }
    }
}

impl Config {
    /// Sets [`Config::max_message_size`].
    #[must_use]
    pub fn max_message_size(mut self, limit: Option<usize>) -> Self {
        self.max_message_size = limit;
        self
    }

    /// Sets [`Config::open_timeout`].
    #[must_use]
    pub fn open_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// Sets [`Config::close_timeout`].
    #[must_use]
    pub fn close_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`Config::ping_interval`] and [`Config::ping_timeout`].
    #[must_use]
    pub fn keepalive(mut self, interval: Option<Duration>, timeout: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self.ping_timeout = timeout;
        self
    }

    /// Sets [`Config::subprotocols`].
    #[must_use]
    pub fn subprotocols<I, S>(mut self, subprotocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = subprotocols.into_iter().map(Into::into).collect();
        self
    }

    /// Adds an extension to [`Config::extensions`].
    #[must_use]
    pub fn extension(mut self, extension: Arc<dyn ExtensionFactory>) -> Self {
        self.extensions.push(extension);
        self
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("max_message_size", &self.max_message_size)
            .field("max_frame_size", &self.max_frame_size)
            .field("deliver_fragments", &self.deliver_fragments)
            .field("open_timeout", &self.open_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("acknowledge_timeout", &self.acknowledge_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("max_line_len", &self.max_line_len)
            .field("max_headers", &self.max_headers)
            .field("max_head_size", &self.max_head_size)
            .field("max_response_body", &self.max_response_body)
            .field("subprotocols", &self.subprotocols)
            .field(
                "extensions",
                &self.extensions.iter().map(|e| e.name()).collect::<Vec<_>>(),
            )
            .field("server_header", &self.server_header)
            .field("user_agent", &self.user_agent)
            .field("accept_unmasked_frames", &self.accept_unmasked_frames)
            .finish()
    }
}
