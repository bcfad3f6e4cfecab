//! The blocking client.
//!
//! ```no_run
//! use wsline::sync::client::connect;
//! use wsline::CloseCode;
//!
//! let ws = connect("ws://127.0.0.1:8001")?;
//! ws.send_text("Hello!")?;
//! println!("<<< {}", ws.recv()?);
//! ws.close(CloseCode::NORMAL, "bye")?;
//! # Ok::<(), wsline::Error>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Instant;

use super::transport::Blocking;
use crate::layer::client::{handshake_connection, Opening};
use crate::proxy::{Proxy, Tunnel};
use crate::reconnect::Attempts;
use crate::sync::WebSocket;
use crate::{ConnectConfig, Error, Result, WsUri};

/// Opens a WebSocket connection to `uri` (`ws://host[:port]/path`, or `wss://` with the
/// `rustls` feature) with the default [`ConnectConfig`].
///
/// Redirects are followed up to [`ConnectConfig::max_redirects`], all within the open
/// timeout.
///
/// # Errors
/// [`Error::Uri`] for an invalid URI, [`Error::Io`] when the TCP connection fails (refused,
/// unreachable), [`Error::Tls`] when the TLS handshake fails (an untrusted certificate) or
/// the build has no TLS, [`Error::Handshake`] when the server rejects the handshake
/// ([`HandshakeError::Rejected`](crate::proto::HandshakeError::Rejected) keeps its status,
/// headers and body), [`Error::Timeout`] past the open timeout.
pub fn connect(uri: &str) -> Result<WebSocket> {
    connect_with(uri, ConnectConfig::default())
}

/// Opens a WebSocket connection to `uri` with `config`, over HTTP/1.1 (this client has no
/// HTTP/2: [`ConnectConfig::http2`] other than `Always` means HTTP/1.1 here).
///
/// # Errors
/// As [`connect`], and [`Error::Unsupported`] for
/// [`Http2Policy::Always`](crate::Http2Policy::Always).
pub fn connect_with(uri: &str, config: ConnectConfig) -> Result<WebSocket> {
    let deadline = config
        .protocol
        .open_timeout
        .map(|timeout| Instant::now() + timeout);
    crate::layer::client::refuse_http2(&config, "the blocking client")?;
    let mut opening = Opening::new(uri.parse()?, config);
    loop {
        match attempt(&opening, deadline) {
            Ok(ws) => return Ok(ws),
            Err(error) => opening.handle_failure(error)?,
        }
    }
}

/// One connection attempt: TCP (perhaps through the proxy), TLS for `wss://`, the opening
/// handshake.
fn attempt(opening: &Opening, deadline: Option<Instant>) -> Result<WebSocket> {
    let uri = opening.attempt_uri()?;
    let stream = connect_stream(uri, opening.config(), deadline)?;
    open(stream, uri, opening.config(), deadline)
}

/// Connections to `uri`, one after another, as long as they can be made: each
/// [`next`](Iterator::next) connects again, retrying transient failures (refused, reset,
/// timeouts, a 5xx or 429 answer) with [`ConnectConfig::backoff`] between attempts. A
/// failure that would repeat (an invalid URI, an untrusted certificate, a 4xx refusal) is
/// returned once, and the iteration ends.
///
/// ```no_run
/// use wsline::sync::client::reconnecting;
/// use wsline::ConnectConfig;
///
/// for ws in reconnecting("ws://127.0.0.1:8001", ConnectConfig::default()) {
///     let ws = ws?;
///     for message in &ws {
///         match message {
///             Ok(message) => println!("<<< {message}"),
///             Err(error) => eprintln!("connection lost ({error}); reconnecting"),
///         }
///     }
/// }
/// # Ok::<(), wsline::Error>(())
/// ```
#[must_use]
pub fn reconnecting(uri: &str, config: ConnectConfig) -> Reconnect {
    Reconnect {
        attempts: Attempts::new(uri, config),
    }
}

/// The connections of [`reconnecting`].
#[derive(Debug)]
pub struct Reconnect {
    attempts: Attempts,
}

impl Iterator for Reconnect {
    type Item = Result<WebSocket>;

    /// Blocks until a connection opens, or a failure that would repeat.
    fn next(&mut self) -> Option<Result<WebSocket>> {
        if self.attempts.is_done() {
            return None;
        }
        loop {
            let attempt = connect_with(&self.attempts.uri, self.attempts.config.clone());
            match self.attempts.outcome(attempt) {
                Ok(result) => return Some(result),
                Err(delay) => std::thread::sleep(delay),
            }
        }
    }
}

/// Runs the opening handshake over an already connected TCP stream (a proxy tunnel, a
/// socket configured by the caller); for a `wss://` URI, the TLS handshake first.
///
/// # Errors
/// As [`connect`], except for TCP connection errors.
pub fn connect_on(stream: TcpStream, uri: &str, config: ConnectConfig) -> Result<WebSocket> {
    let uri: WsUri = uri.parse()?;
    let deadline = config
        .protocol
        .open_timeout
        .map(|timeout| Instant::now() + timeout);
    open(stream, &uri, &config, deadline)
}

/// The TLS handshake if the URI asks for it, then the opening handshake.
fn open(
    stream: TcpStream,
    uri: &WsUri,
    config: &ConnectConfig,
    deadline: Option<Instant>,
) -> Result<WebSocket> {
    if !uri.is_secure() {
        return handshake(stream, uri, config, deadline);
    }
    #[cfg(feature = "rustls")]
    {
        let (tls, name) = crate::tls::client_session(uri, config)?;
        let session = rustls::ClientConnection::new(tls, name)
            .map_err(|error| Error::Tls(error.to_string()))?;
        let mut stream = super::transport::tls::Session::new(session, stream);
        stream.handshake(deadline)?;
        handshake(stream, uri, config, deadline)
    }
    #[cfg(not(feature = "rustls"))]
    {
        drop((stream, config, deadline));
        Err(Error::no_tls(uri))
    }
}

/// A TCP stream to `uri`'s host: directly, or through the configured proxy's tunnel.
fn connect_stream(
    uri: &WsUri,
    config: &ConnectConfig,
    deadline: Option<Instant>,
) -> Result<TcpStream> {
    let Some(proxy) = &config.proxy else {
        return connect_tcp(uri.host(), uri.port(), deadline);
    };
    let proxy = Proxy::parse(proxy)?;
    tunnel(&proxy, uri, deadline).map_err(|error| crate::proxy::transport_error(&proxy, error))
}

/// A TCP stream to `uri`'s host through the proxy's `CONNECT` tunnel.
fn tunnel(proxy: &Proxy, uri: &WsUri, deadline: Option<Instant>) -> Result<TcpStream> {
    let mut stream = connect_tcp(proxy.host(), proxy.port(), deadline)?;
    stream.set_write_timeout(super::remaining(deadline)?)?;
    stream
        .write_all(&proxy.connect_request(uri))
        .map_err(super::timeout_or)?;
    let mut tunnel = Tunnel::default();
    let mut buf = [0; 1024];
    loop {
        stream.set_read_timeout(super::remaining(deadline)?)?;
        let read = match stream.read(&mut buf) {
            Ok(0) => return Err(crate::proxy::closed_early()),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(super::timeout_or(error)),
        };
        if tunnel.handle_data(&buf[..read])? {
            stream.set_read_timeout(None)?;
            stream.set_write_timeout(None)?;
            return Ok(stream);
        }
    }
}

/// Connects to the first address of the host that answers.
fn connect_tcp(host: &str, port: u16, deadline: Option<Instant>) -> Result<TcpStream> {
    let mut last_error = None;
    for addr in (host, port).to_socket_addrs()? {
        let attempt = match super::remaining(deadline)? {
            Some(left) => TcpStream::connect_timeout(&addr, left),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = Some(error),
        }
    }
    Err(Error::Io(last_error.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "host has no address")
    })))
}

/// Sends the request and reads until the response opens the connection or refuses it.
fn handshake(
    mut stream: impl Blocking,
    uri: &WsUri,
    config: &ConnectConfig,
    deadline: Option<Instant>,
) -> Result<WebSocket> {
    stream.socket().set_nodelay(config.io.nodelay)?;
    let conn = handshake_connection(uri.clone(), config, Instant::now())?;
    let conn = super::open_blocking(
        &mut stream,
        conn,
        deadline,
        config.io.read_buffer_size,
        |_, _| {},
    )?;
    WebSocket::start(stream, conn, config.io.send_high_water)
}
