//! Opening a connection as a client: [`connect`], [`connect_with`], [`connect_on`].

use ::tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ::tokio::net::TcpStream;
use ::tokio::time::Instant;

use super::stream::MaybeTlsStream;
use super::websocket::{Limits, WebSocket};
use crate::layer::client::{handshake_connection, Opening};
use crate::proto::Failure;
use crate::proxy::{Proxy, Tunnel};
use crate::reconnect::Attempts;
use crate::{ConnectConfig, Error, Result, WsUri};

/// Connects to a `ws://` URI (or `wss://` with the `rustls` feature) with the default
/// [`ConnectConfig`].
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> wsline::Result<()> {
/// let mut ws = wsline::tokio::connect("ws://127.0.0.1:8001").await?;
/// ws.send("Hello!").await?;
/// if let Some(reply) = ws.recv().await {
///     println!(">>> {}", reply?);
/// }
/// ws.close(wsline::CloseCode::NORMAL, "bye").await
/// # }
/// ```
///
/// # Errors
/// As [`connect_with`].
pub async fn connect(uri: &str) -> Result<WebSocket<MaybeTlsStream>> {
    connect_with(uri, ConnectConfig::default()).await
}

/// Connects to a `ws://` or `wss://` URI: opens a TCP connection, runs the TLS handshake
/// for `wss://`, then the opening handshake, following redirects up to
/// [`ConnectConfig::max_redirects`], all within the configuration's `open_timeout`.
///
/// With [`ConnectConfig::http2`] (feature `http2`) the WebSocket may instead be the one
/// stream of a new HTTP/2 connection (RFC 8441): [`MaybeTlsStream::is_http2`] tells. To
/// open several WebSockets on one HTTP/2 connection, use
/// [`Http2Connection`](super::Http2Connection).
///
/// # Errors
/// [`Error::Uri`] for a URI that is not `ws://…` or `wss://…`, [`Error::Io`] when the TCP
/// connection fails (refused, unreachable), [`Error::Tls`] when the TLS handshake fails
/// (an untrusted certificate) or the build has no TLS (feature `rustls`),
/// [`Error::Handshake`] when the server rejects the handshake (the response is kept whole)
/// or answers wrongly, [`Error::Timeout`] past the open timeout,
/// [`Error::Unsupported`] for [`Http2Policy::Always`](crate::Http2Policy::Always) without
/// the `http2` feature.
pub async fn connect_with(uri: &str, config: ConnectConfig) -> Result<WebSocket<MaybeTlsStream>> {
    #[cfg(not(feature = "http2"))]
    crate::layer::client::refuse_http2(&config, "a build without the `http2` feature")?;
    let open_timeout = config.protocol.open_timeout;
    let mut opening = Opening::new(uri.parse()?, config);
    let attempts = async move {
        loop {
            match attempt(&opening).await {
                Ok(ws) => return Ok(ws),
                Err(error) => opening.handle_failure(error)?,
            }
        }
    };
    match open_timeout {
        Some(timeout) => ::tokio::time::timeout(timeout, attempts)
            .await
            .unwrap_or(Err(Error::Timeout(Failure::OpenTimeout))),
        None => attempts.await,
    }
}

/// One connection attempt: TCP (perhaps through the proxy), TLS for `wss://`, then the
/// opening handshake over HTTP/1.1, or an extended CONNECT on a new HTTP/2 connection when
/// [`ConnectConfig::http2`] asks for it and the server speaks it.
async fn attempt(opening: &Opening) -> Result<WebSocket<MaybeTlsStream>> {
    let uri = opening.attempt_uri()?;
    let config = opening.config();
    #[cfg(feature = "http2")]
    {
        use crate::Http2Policy;
        let alpn: Option<&[&[u8]]> = match config.http2 {
            Http2Policy::Never => None,
            Http2Policy::WhenOffered => Some(&[b"h2", b"http/1.1"]),
            Http2Policy::Always => Some(&[b"h2"]),
        };
        let started = Instant::now();
        let stream = transport(uri, config, alpn).await?;
        let http2 = match &stream {
            MaybeTlsStream::Tcp(_) => config.http2 == Http2Policy::Always,
            _ => negotiated_h2(&stream, uri, config)?,
        };
        if !http2 {
            return handshake(stream, uri.clone(), config).await;
        }
        // The server's SETTINGS follow its side of the handshake within a round trip, and
        // nothing says that they came without RFC 8441: when HTTP/1.1 is the way out, wait
        // about as long again as connecting took, not the full wait.
        let settings_wait = match config.http2 {
            Http2Policy::WhenOffered => (started.elapsed() * 2).clamp(
                std::time::Duration::from_millis(250),
                super::http2::SETTINGS_WAIT,
            ),
            _ => super::http2::SETTINGS_WAIT,
        };
        if let Some(connection) = super::http2::start(stream, uri, config, settings_wait).await? {
            return connection.open_uri(uri.clone()).await;
        }
        if config.http2 == Http2Policy::Always {
            return Err(super::http2::not_advertised());
        }
        tracing::debug!(%uri, "the server picked h2 without RFC 8441: HTTP/1.1 on a new connection");
        let stream = transport(uri, config, Some(&[b"http/1.1"])).await?;
        handshake(stream, uri.clone(), config).await
    }
    #[cfg(not(feature = "http2"))]
    {
        let stream = transport(uri, config, None).await?;
        handshake(stream, uri.clone(), config).await
    }
}

/// Whether the TLS handshake picked `h2` by ALPN; an error when HTTP/2 is required and the
/// server picked something else.
#[cfg(feature = "http2")]
fn negotiated_h2(stream: &MaybeTlsStream, uri: &WsUri, config: &ConnectConfig) -> Result<bool> {
    let picked = stream.negotiated_h2();
    if !picked && config.http2 == crate::Http2Policy::Always {
        return Err(Error::Tls(format!(
            "{}: the server did not pick HTTP/2 (ALPN h2)",
            uri.host()
        )));
    }
    Ok(picked)
}

/// The connection an attempt runs its handshake on: TCP to `uri`'s host, perhaps through
/// the proxy's tunnel, then TLS for `wss://`, offering `alpn` by ALPN (`None`: what the
/// TLS configuration says, by default nothing).
pub(crate) async fn transport(
    uri: &WsUri,
    config: &ConnectConfig,
    alpn: Option<&[&[u8]]>,
) -> Result<MaybeTlsStream> {
    let tcp = match &config.proxy {
        None => TcpStream::connect((uri.host(), uri.port())).await?,
        Some(proxy) => {
            let proxy = Proxy::parse(proxy)?;
            tunnel(&proxy, uri)
                .await
                .map_err(|error| crate::proxy::transport_error(&proxy, error))?
        }
    };
    tcp.set_nodelay(config.io.nodelay)?;
    if uri.is_secure() {
        secure(tcp, uri, config, alpn).await
    } else {
        Ok(MaybeTlsStream::Tcp(tcp))
    }
}

/// A TCP stream to `uri`'s host through the proxy's `CONNECT` tunnel.
async fn tunnel(proxy: &Proxy, uri: &WsUri) -> Result<TcpStream> {
    let mut stream = TcpStream::connect((proxy.host(), proxy.port())).await?;
    stream.write_all(&proxy.connect_request(uri)).await?;
    let mut tunnel = Tunnel::default();
    let mut buf = [0; 1024];
    loop {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            return Err(crate::proxy::closed_early());
        }
        if tunnel.handle_data(&buf[..read])? {
            return Ok(stream);
        }
    }
}

/// The TLS handshake of a `wss://` connection, offering `alpn` when given.
#[cfg(feature = "rustls")]
async fn secure(
    tcp: TcpStream,
    uri: &WsUri,
    config: &ConnectConfig,
    alpn: Option<&[&[u8]]>,
) -> Result<MaybeTlsStream> {
    let (mut tls, name) = crate::tls::client_session(uri, config)?;
    if let Some(alpn) = alpn {
        let mut offering = (*tls).clone();
        offering.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        tls = std::sync::Arc::new(offering);
    }
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(crate::tls::io_error)?;
    Ok(MaybeTlsStream::Tls(Box::new(stream.into())))
}

#[cfg(not(feature = "rustls"))]
async fn secure(
    _: TcpStream,
    uri: &WsUri,
    _: &ConnectConfig,
    _: Option<&[&[u8]]>,
) -> Result<MaybeTlsStream> {
    Err(Error::no_tls(uri))
}

/// Connections to `uri`, one after another, as long as they can be made: each
/// [`Reconnect::next`] connects again, retrying transient failures (refused, reset,
/// timeouts, a 5xx or 429 answer) with [`ConnectConfig::backoff`] between attempts. A
/// failure that would repeat (an invalid URI, an untrusted certificate, a 4xx refusal) is
/// returned once, and the connections end.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> wsline::Result<()> {
/// let mut connections = wsline::tokio::reconnecting("ws://127.0.0.1:8001", Default::default());
/// while let Some(ws) = connections.next().await {
///     let mut ws = ws?;
///     while let Some(message) = ws.recv().await {
///         match message {
///             Ok(message) => println!("<<< {message}"),
///             Err(error) => eprintln!("connection lost ({error}); reconnecting"),
///         }
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[must_use]
pub fn reconnecting(uri: &str, config: ConnectConfig) -> Reconnect {
    Reconnect {
        attempts: Attempts::new(uri, config),
        next_attempt: None,
    }
}

/// The connections of [`reconnecting`].
#[derive(Debug)]
pub struct Reconnect {
    attempts: Attempts,
    /// When the next attempt may start, after a failed one: kept across cancelled calls.
    next_attempt: Option<Instant>,
}

impl Reconnect {
    /// Waits until a connection opens (`Some(Ok)`), or a failure that would repeat
    /// (`Some(Err)`, after which the connections end: `None`).
    ///
    /// Cancel-safe: dropped while waiting, nothing is lost (a connection being opened is
    /// dropped, and the next call starts over), and the backoff holds: the next call waits
    /// until the same moment.
    pub async fn next(&mut self) -> Option<Result<WebSocket<MaybeTlsStream>>> {
        if self.attempts.is_done() {
            return None;
        }
        loop {
            if let Some(at) = self.next_attempt {
                ::tokio::time::sleep_until(at).await;
            }
            let attempt = connect_with(&self.attempts.uri, self.attempts.config.clone()).await;
            match self.attempts.outcome(attempt) {
                Ok(result) => {
                    self.next_attempt = None;
                    return Some(result);
                }
                Err(delay) => self.next_attempt = Some(Instant::now() + delay),
            }
        }
    }
}

/// Runs the opening handshake for `uri` over a stream the caller opened: a TCP stream with
/// custom options, a TLS stream (then `wss://` URIs are fine), a proxy tunnel.
///
/// # Errors
/// As [`connect_with`], except that TLS is the caller's business.
pub async fn connect_on<S>(stream: S, uri: &str, config: ConnectConfig) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let uri: WsUri = uri.parse()?;
    handshake(stream, uri, &config).await
}

/// Sends the request and reads until the response opens the connection or refuses it.
async fn handshake<S>(stream: S, uri: WsUri, config: &ConnectConfig) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = handshake_connection(uri, config, Instant::now().into_std())?;
    let mut ws = WebSocket::new(stream, conn, Limits::from(config));
    ws.handshake_until(|ws| ws.response().is_some()).await?;
    Ok(ws)
}
