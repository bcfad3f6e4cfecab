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

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Instant;

use crate::proto;
use crate::sync::WebSocket;
use crate::{ConnectConfig, Error, Result, WsUri};

/// Opens a WebSocket connection to `uri` (`ws://host[:port]/path`) with the default
/// [`ConnectConfig`].
///
/// # Errors
/// [`Error::Uri`] for an invalid URI, [`Error::Io`] when the TCP connection fails (refused,
/// unreachable), [`Error::Handshake`] when the server rejects the handshake
/// ([`HandshakeError::Rejected`](crate::proto::HandshakeError::Rejected) keeps its status,
/// headers and body), [`Error::Timeout`] past the open timeout.
pub fn connect(uri: &str) -> Result<WebSocket> {
    connect_with(uri, ConnectConfig::default())
}

/// Opens a WebSocket connection to `uri` with `config`.
///
/// # Errors
/// As [`connect`].
pub fn connect_with(uri: &str, config: ConnectConfig) -> Result<WebSocket> {
    let uri: WsUri = uri.parse()?;
    if uri.is_secure() {
        return Err(Error::Tls(
            "wss:// URIs need TLS, which this build does not include".into(),
        ));
    }
    let deadline = config
        .protocol
        .open_timeout
        .map(|timeout| Instant::now() + timeout);
    let stream = connect_tcp(&uri, deadline)?;
    handshake(stream, uri, config, deadline)
}

/// Runs the opening handshake over an already connected stream (a proxy tunnel, a socket
/// configured by the caller).
///
/// # Errors
/// As [`connect`], except for TCP connection errors.
pub fn connect_on(stream: TcpStream, uri: &str, config: ConnectConfig) -> Result<WebSocket> {
    let uri: WsUri = uri.parse()?;
    let deadline = config
        .protocol
        .open_timeout
        .map(|timeout| Instant::now() + timeout);
    handshake(stream, uri, config, deadline)
}

/// Connects to the first address of the host that answers.
fn connect_tcp(uri: &WsUri, deadline: Option<Instant>) -> Result<TcpStream> {
    let mut last_error = None;
    for addr in (uri.host(), uri.port()).to_socket_addrs()? {
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

fn handshake(
    mut stream: TcpStream,
    uri: WsUri,
    config: ConnectConfig,
    deadline: Option<Instant>,
) -> Result<WebSocket> {
    stream.set_nodelay(config.nodelay)?;
    let mut conn = proto::Connection::client(uri, config.protocol.clone(), Instant::now());
    let mut request = conn.connect_request();
    config.apply_to(&mut request);
    conn.send_request(request);
    let conn = super::open_blocking(
        &mut stream,
        conn,
        deadline,
        config.read_buffer_size,
        |_, _| {},
    )?;
    WebSocket::start(stream, conn, config.send_high_water)
}
