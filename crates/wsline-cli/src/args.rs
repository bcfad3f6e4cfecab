//! The command line as typed.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};

/// A WebSocket echo server and client (RFC 6455, RFC 7692).
///
/// Exit codes: 0 success; 1 I/O, TLS or proxy error (refused, reset, address in use,
/// untrusted certificate); 2 usage error; 3 handshake rejected by the server; 4 connection
/// closed abnormally.
#[derive(Debug, Parser)]
#[command(name = "wsline", version)]
pub struct Args {
    /// More logging: -v connections, -vv messages and protocol details (to stderr).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an echo server until SIGINT (Ctrl-C) or SIGTERM: every message comes back as it
    /// was sent.
    Serve(ServeArgs),
    /// Talk to a WebSocket server: lines from stdin go out as text, messages come back
    /// printed. Ctrl-D closes.
    Connect(ConnectArgs),
}

/// `wsline serve`.
#[derive(Debug, ClapArgs)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8001)]
    pub port: u16,
    /// Largest message in bytes (0 for no limit).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_message_size: usize,
    /// Serve with the tokio layer instead of the sync event loop.
    #[arg(long)]
    pub tokio: bool,
    /// Do not negotiate permessage-deflate.
    #[arg(long)]
    pub no_compression: bool,
    /// Serve rooms instead of echoing: a connection's path names its room (`/lobby`), and
    /// every message a client sends goes to everyone else in that room. Compression is
    /// negotiated without server context takeover, so that each message is compressed once
    /// for the whole room.
    #[arg(long)]
    pub rooms: bool,
    /// With --rooms: share the rooms with every other node on this broker, Redis
    /// (`redis://HOST:PORT`, sharded pub/sub on Redis 7 and later) or NATS
    /// (`nats://HOST:PORT`). The server reconnects by itself; while the broker is away,
    /// each node's own rooms keep working.
    #[arg(long, value_name = "URL", requires = "rooms", value_parser = broker_url)]
    pub broker: Option<String>,
    /// Event-loop threads of the sync server (default: one per CPU available).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Seconds between keepalive pings (0 disables keepalive).
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub ping_interval: u64,
    /// Seconds to wait for the pong of a keepalive ping before closing with 1011 (0 waits
    /// forever): a silent peer is closed within ping-interval + ping-timeout of its last
    /// byte, or 2 × ping-timeout if it fell silent while a pong was due; a peer still
    /// sending gets another ping-timeout each time it runs out.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub ping_timeout: u64,
    /// Most bytes queued for one connection: past it the server stops reading that
    /// connection until its peer reads (default: the library's `DEFAULT_SEND_HIGH_WATER`).
    #[arg(long, value_name = "BYTES")]
    pub send_high_water: Option<usize>,
    /// Most bytes queued for all connections together (0: no budget); past it the
    /// connections holding the most are held back (default: the library's
    /// `DEFAULT_SEND_BUDGET`).
    #[arg(long, value_name = "BYTES")]
    pub send_budget: Option<usize>,
    /// Every SECONDS, give the memory the allocator holds free back to the OS once it has
    /// risen 16 MiB above its low since the last trim at two checks in a row, as after a
    /// burst of connections (0: never; glibc 2.33 or later only).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub trim_memory: u64,
    /// Serve wss:// with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `wsline connect`.
#[derive(Debug, ClapArgs)]
pub struct ConnectArgs {
    /// The server, such as ws://127.0.0.1:8001/ or wss://example.com/.
    pub url: String,
    /// Send this `Origin` header.
    #[arg(long)]
    pub origin: Option<String>,
    /// Extra request header, as `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Offer this subprotocol (repeatable).
    #[arg(long = "subprotocol")]
    pub subprotocols: Vec<String>,
    /// Largest message in bytes (0 for no limit).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_message_size: usize,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    pub no_compression: bool,
    /// For wss://, also trust the certificates in this PEM file (a private CA, a
    /// self-signed server).
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<PathBuf>,
    /// Connect through this HTTP proxy (CONNECT tunnel): http://[user:password@]host[:port].
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
}

/// A broker URL with a scheme `wsline serve --broker` knows.
fn broker_url(url: &str) -> Result<String, String> {
    const SCHEMES: [&str; 5] = ["redis://", "rediss://", "unix://", "nats://", "tls://"];
    if SCHEMES.iter().any(|scheme| url.starts_with(scheme)) {
        Ok(url.to_owned())
    } else {
        Err("expected redis://HOST:PORT or nats://HOST:PORT".into())
    }
}
