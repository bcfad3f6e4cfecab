//! The command line resolved into library settings, and the failures the CLI reports.

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use wsline::proto::HandshakeError;
use wsline::topics::{BrokerConfigError, NatsBroker, RedisBroker, Topics};
use wsline::{ConnectConfig, Error, ServerConfig};

use crate::args::{ConnectArgs, ServeArgs};

/// What `wsline serve` runs.
#[derive(Debug)]
pub struct ServeSettings {
    pub host: String,
    pub port: u16,
    pub tokio: bool,
    /// Serve rooms instead of echoing.
    pub rooms: bool,
    /// How often to check for memory to give back to the OS (`None`: never).
    pub trim_memory: Option<Duration>,
    pub config: ServerConfig,
}

impl TryFrom<ServeArgs> for ServeSettings {
    type Error = Failure;

    fn try_from(args: ServeArgs) -> Result<Self, Failure> {
        let mut config = ServerConfig::default();
        config.protocol.max_message_size = limit(args.max_message_size);
        if args.no_compression {
            config.protocol.extensions.clear();
        }
        if let Some(workers) = args.workers {
            config.workers = workers.max(1);
        }
        config.protocol.ping_interval =
            (args.ping_interval > 0).then(|| Duration::from_secs(args.ping_interval));
        config.protocol.ping_timeout =
            (args.ping_timeout > 0).then(|| Duration::from_secs(args.ping_timeout));
        if let Some(bytes) = args.send_high_water {
            config.io.send_high_water = bytes;
        }
        if let Some(bytes) = args.send_budget {
            config.send_budget = limit(bytes);
        }
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            config.tls = Some(wsline::tls::server_config_from_pem(cert, key)?);
        }
        if args.rooms {
            config = config.with_shared_compression();
        }
        if let Some(url) = &args.broker {
            config.topics = topics_on(url)?;
        }
        Ok(Self {
            host: args.host,
            port: args.port,
            tokio: args.tokio,
            rooms: args.rooms,
            trim_memory: (args.trim_memory > 0).then(|| Duration::from_secs(args.trim_memory)),
            config,
        })
    }
}

impl ServeSettings {
    /// `wss` when serving TLS, else `ws`.
    pub fn scheme(&self) -> &'static str {
        if self.config.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }
}

/// What `wsline connect` runs.
#[derive(Debug)]
pub struct ConnectSettings {
    pub url: String,
    pub config: ConnectConfig,
}

impl TryFrom<ConnectArgs> for ConnectSettings {
    type Error = Failure;

    fn try_from(args: ConnectArgs) -> Result<Self, Failure> {
        let mut config = ConnectConfig::default();
        config.protocol.max_message_size = limit(args.max_message_size);
        if args.no_compression {
            config.protocol.extensions.clear();
        }
        config.protocol.subprotocols = args.subprotocols;
        config.origin = args.origin;
        config.headers = args
            .headers
            .iter()
            .filter_map(|header| header.split_once(':'))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect();
        config.proxy = args.proxy;
        if let Some(cacert) = &args.cacert {
            config.tls = Some(wsline::tls::client_config_trusting_pem(cacert)?);
        }
        Ok(Self {
            url: args.url,
            config,
        })
    }
}

/// Topics shared with other nodes through the broker at `url`.
fn topics_on(url: &str) -> Result<Topics, Failure> {
    let invalid = |error: BrokerConfigError| Failure(Error::Unsupported(error.to_string()));
    let topics = if url.starts_with("nats://") || url.starts_with("tls://") {
        Topics::with_broker(NatsBroker::new(url).map_err(invalid)?)
    } else {
        Topics::with_broker(RedisBroker::new(url).map_err(invalid)?)
    };
    Ok(topics)
}

/// `0` means no limit on the command line.
fn limit(bytes: usize) -> Option<usize> {
    (bytes > 0).then_some(bytes)
}

/// A failure of the command, with the exit code a shell script can act on.
#[derive(Debug)]
pub struct Failure(pub Error);

impl Failure {
    /// 1: I/O or TLS (refused, reset, address in use, untrusted certificate), 3: handshake
    /// rejected, 4: abnormal closure.
    pub fn exit_code(&self) -> ExitCode {
        match &self.0 {
            Error::Handshake(_) => ExitCode::from(3),
            Error::ConnectionClosed(_) | Error::Protocol(_) | Error::Timeout(_) => {
                ExitCode::from(4)
            }
            _ => ExitCode::from(1),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Error::Io(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                write!(f, "connection refused: is a server listening there?")
            }
            Error::Io(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                write!(f, "address already in use: pick another --port")
            }
            Error::Handshake(HandshakeError::Rejected(response)) => {
                write!(
                    f,
                    "server rejected the WebSocket handshake: HTTP {} {}",
                    response.status, response.reason
                )?;
                let body = String::from_utf8_lossy(&response.body);
                if !body.trim().is_empty() {
                    write!(f, "\n{}", body.trim())?;
                }
                Ok(())
            }
            other => write!(f, "{other}"),
        }
    }
}
