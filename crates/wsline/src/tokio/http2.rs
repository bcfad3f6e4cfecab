//! The client side of WebSockets over HTTP/2 (RFC 8441; feature `http2`): one HTTP/2
//! connection, many WebSockets on it, each an extended CONNECT stream.

use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use ::tokio::sync::{oneshot, watch};
use ::tokio::time::Instant;
use bytes::Bytes;
use http::{Method, Uri, Version};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::stream::{Http2Stream, MaybeTlsStream, ReadAhead};
use super::websocket::{Limits, WebSocket};
use crate::proto::{self, Connection, Failure, HandshakeError};
use crate::{ConnectConfig, Error, Result, WsUri};

/// How long to wait for the server's SETTINGS to enable extended CONNECT: a server sends
/// them first, within a round trip.
pub(super) const SETTINGS_WAIT: Duration = Duration::from_secs(2);
/// How often the flag is looked at meanwhile.
const SETTINGS_POLL: Duration = Duration::from_millis(2);

/// An HTTP/2 connection to a WebSocket server, over which [`open`](Self::open) starts
/// WebSockets as streams (RFC 8441 extended CONNECT): many WebSockets, one TCP (and TLS)
/// connection. Over `wss://` the connection is TLS with ALPN `h2`; over `ws://` it is h2c
/// with prior knowledge. The server must advertise `SETTINGS_ENABLE_CONNECT_PROTOCOL`.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> wsline::Result<()> {
/// use wsline::tokio::Http2Connection;
///
/// let connection = Http2Connection::connect("wss://example.com/").await?;
/// let mut chat = connection.open("/chat").await?;
/// let mut feed = connection.open("/feed").await?;
/// chat.send("hello").await?;
/// # let _ = feed.recv().await;
/// # Ok(())
/// # }
/// ```
///
/// The connection lives as long as a WebSocket on it or this handle does, and the server
/// keeps it: wsline's server closes one that has had no WebSocket for its open timeout
/// (10 s by default). Once [`is_closed`](Self::is_closed), connect again.
#[derive(Clone)]
pub struct Http2Connection {
    send: SendRequest<Empty<Bytes>>,
    uri: WsUri,
    config: Arc<ConnectConfig>,
    peer_addr: Option<std::net::SocketAddr>,
}

impl fmt::Debug for Http2Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connection")
            .field("uri", &self.uri.to_string())
            .field("closed", &self.send.is_closed())
            .finish_non_exhaustive()
    }
}

impl Http2Connection {
    /// Connects with the default [`ConnectConfig`].
    ///
    /// # Errors
    /// As [`connect_with`](Self::connect_with).
    pub async fn connect(uri: &str) -> Result<Self> {
        Self::connect_with(uri, ConnectConfig::default()).await
    }

    /// Opens the HTTP/2 connection to `uri`'s host (its path is the default for
    /// [`open`](Self::open)), through [`ConnectConfig::proxy`] if set, within the
    /// configuration's `open_timeout`. The settings apply to every WebSocket opened on it;
    /// redirects are not followed (a 3xx answer to [`open`](Self::open) is its error), and
    /// [`ConnectConfig::http2`] is not looked at: this is HTTP/2 always.
    ///
    /// # Errors
    /// [`Error::Uri`] for a URI that is not `ws://…` or `wss://…`, [`Error::Io`] when the
    /// connection fails, [`Error::Tls`] when TLS fails or the server does not pick `h2`,
    /// [`Error::Handshake`] when the server speaks no HTTP/2 or does not advertise RFC 8441,
    /// [`Error::Timeout`] past the open timeout.
    pub async fn connect_with(uri: &str, config: ConnectConfig) -> Result<Self> {
        let uri: WsUri = uri.parse()?;
        let open_timeout = config.protocol.open_timeout;
        let connecting = handshake(uri, config);
        match open_timeout {
            Some(timeout) => ::tokio::time::timeout(timeout, connecting)
                .await
                .unwrap_or(Err(Error::Timeout(Failure::OpenTimeout))),
            None => connecting.await,
        }
    }

    /// Opens a WebSocket on a new stream of this connection, for `path` (such as `/chat`;
    /// `""` for the connection's URI), within the configuration's `open_timeout`.
    ///
    /// # Errors
    /// [`Error::Uri`] for a path that does not resolve against the connection's URI,
    /// [`Error::Handshake`] when the server refuses (its status and headers kept) or
    /// answers wrongly, [`Error::Io`] when the connection is gone, [`Error::Timeout`] past
    /// the open timeout.
    pub async fn open(&self, path: &str) -> Result<WebSocket<MaybeTlsStream>> {
        let uri = if path.is_empty() {
            self.uri.clone()
        } else {
            self.uri.join(path)?
        };
        self.open_uri(uri).await
    }

    /// Opens a WebSocket for `uri` (on this connection's origin) on a new stream.
    pub(super) async fn open_uri(&self, uri: WsUri) -> Result<WebSocket<MaybeTlsStream>> {
        let opening = open_stream(
            self.send.clone(),
            uri,
            Arc::clone(&self.config),
            self.peer_addr,
        );
        match self.config.protocol.open_timeout {
            Some(timeout) => ::tokio::time::timeout(timeout, opening)
                .await
                .unwrap_or(Err(Error::Timeout(Failure::OpenTimeout))),
            None => opening.await,
        }
    }

    /// Whether the HTTP/2 connection has ended (no more WebSocket can be opened on it).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }
}

/// TCP (through the proxy, if any), TLS with ALPN `h2` alone for `wss://`, then the HTTP/2
/// handshake and the server's settings.
async fn handshake(uri: WsUri, config: ConnectConfig) -> Result<Http2Connection> {
    let stream = super::client::transport(&uri, &config, Some(&[b"h2"])).await?;
    if uri.is_secure() && !stream.negotiated_h2() {
        return Err(Error::Tls(format!(
            "{}: the server did not pick HTTP/2 (ALPN h2)",
            uri.host()
        )));
    }
    start(stream, &uri, &config, SETTINGS_WAIT)
        .await?
        .ok_or_else(not_advertised)
}

/// The error for a server that speaks HTTP/2 but has not enabled extended CONNECT.
pub(super) fn not_advertised() -> Error {
    Error::Handshake(HandshakeError::InvalidHttp(
        "the server does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441)".into(),
    ))
}

/// The HTTP/2 handshake over `stream` (h2c, or TLS that picked `h2`), run in a task of its
/// own, and the server's settings: `None` when they have not enabled extended CONNECT
/// within `settings_wait`.
pub(super) async fn start(
    stream: MaybeTlsStream,
    uri: &WsUri,
    config: &ConnectConfig,
    settings_wait: Duration,
) -> Result<Option<Http2Connection>> {
    let peer_addr = stream.peer_addr();
    let (mut send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .max_header_list_size(u32::try_from(config.protocol.max_head_size).unwrap_or(u32::MAX))
        .max_send_buf_size(4 * super::stream::HTTP2_WRITE_CHUNK)
        .handshake(TokioIo::new(ReadAhead::new(stream, Vec::new())))
        .await
        .map_err(http2_error)?;
    // The connection runs in a task of its own, and says when the server's SETTINGS (its
    // first frame) enabled extended CONNECT. hyper processes them in a task of its own and
    // wakes nobody for them, so the flag is looked at every few milliseconds until it is
    // set or the wait has passed (the task looks on until SETTINGS_WAIT, so that a
    // connection kept by its caller still learns the flag).
    let (enabled_tx, mut enabled) = watch::channel(false);
    let (ended_tx, ended) = oneshot::channel();
    ::tokio::spawn(async move {
        let mut connection = pin!(connection);
        let deadline = Instant::now() + SETTINGS_WAIT;
        let outcome = loop {
            if connection.is_extended_connect_protocol_enabled() {
                enabled_tx.send_replace(true);
                break connection.await;
            }
            if Instant::now() >= deadline {
                break connection.await;
            }
            ::tokio::select! {
                outcome = connection.as_mut() => break outcome,
                () = ::tokio::time::sleep(SETTINGS_POLL) => {}
            }
        };
        if let Err(error) = &outcome {
            tracing::debug!(%error, "HTTP/2 connection ended");
        }
        // Before `enabled_tx` goes: a caller that sees it gone finds the outcome here.
        let _ = ended_tx.send(outcome);
        drop(enabled_tx);
    });
    let ready = send.ready().await;
    let advertised = match ready {
        Ok(()) => ::tokio::time::timeout(settings_wait, enabled.wait_for(|enabled| *enabled))
            .await
            .map(|enabled| enabled.is_ok()),
        Err(_) => Ok(false),
    };
    match advertised {
        Ok(true) => {}
        // The connection ended before its SETTINGS said anything: say how.
        Ok(false) => return Err(ended_early(ended.await.unwrap_or(Ok(())))),
        Err(_) => return Ok(None),
    }
    Ok(Some(Http2Connection {
        send,
        uri: uri.clone(),
        config: Arc::new(config.clone()),
        peer_addr,
    }))
}

/// One extended CONNECT: the request, the server's answer checked as the core checks a
/// 101, then the WebSocket on the stream.
async fn open_stream(
    mut send: SendRequest<Empty<Bytes>>,
    uri: WsUri,
    config: Arc<ConnectConfig>,
    peer_addr: Option<std::net::SocketAddr>,
) -> Result<WebSocket<MaybeTlsStream>> {
    let mut request = proto::build_extended_connect(&uri, &config.protocol);
    config.apply_to(&mut request);
    send.ready().await.map_err(http2_error)?;
    let response = send
        .send_request(to_http(&request, &uri)?)
        .await
        .map_err(http2_error)?;
    let core_response = from_http(&response);
    let negotiated = proto::check_response(&core_response, None, &config.protocol)?;
    let upgraded = hyper::upgrade::on(response).await.map_err(http2_error)?;
    let conn = Connection::from_negotiated_client(
        negotiated,
        config.protocol.clone(),
        Instant::now().into_std(),
    );
    let stream = MaybeTlsStream::Http2(Box::new(Http2Stream::new(upgraded, peer_addr)));
    let mut ws = WebSocket::new(stream, conn, Limits::from(&*config));
    ws.set_response(core_response);
    Ok(ws)
}

/// The core's extended CONNECT as an `http` request on an HTTP/2 stream.
fn to_http(request: &proto::Request, uri: &WsUri) -> Result<http::Request<Empty<Bytes>>> {
    let scheme = if uri.is_secure() { "https" } else { "http" };
    let target: Uri = format!("{scheme}://{}{}", uri.host_header(), request.path)
        .parse()
        .map_err(|error: http::uri::InvalidUri| {
            Error::Uri(crate::proto::UriError::Invalid(error.to_string()))
        })?;
    let mut out = http::Request::new(Empty::new());
    *out.method_mut() = Method::CONNECT;
    *out.uri_mut() = target;
    *out.version_mut() = Version::HTTP_2;
    out.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    for (name, value) in request.headers.iter() {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) else {
            return Err(Error::Handshake(HandshakeError::InvalidHeader {
                name: "request header",
                value: format!("{name}: {value}"),
            }));
        };
        out.headers_mut().append(name, value);
    }
    Ok(out)
}

/// The server's answer as the core's response (status and headers).
fn from_http<B>(response: &http::Response<B>) -> proto::Response {
    let mut out = proto::Response::new(response.status().as_u16());
    out.headers = crate::http::core_headers(response.headers());
    out
}

/// How an HTTP/2 connection that ended during its handshake failed: closed (transient, as
/// over HTTP/1.1), an I/O error (transient), or a peer that speaks no HTTP/2 (an HTTP/1.1
/// server answering the preface: every attempt would fail so).
fn ended_early(outcome: std::result::Result<(), hyper::Error>) -> Error {
    let Err(error) = outcome else {
        return Error::Handshake(HandshakeError::ClosedEarly);
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Error::Io(std::io::Error::new(io.kind(), error.to_string()));
        }
        source = cause.source();
    }
    Error::Handshake(HandshakeError::InvalidHttp(format!(
        "the server does not speak HTTP/2: {error}"
    )))
}

/// An HTTP/2 failure (the connection, a stream, an upgrade) as an I/O error.
fn http2_error(error: hyper::Error) -> Error {
    Error::Io(std::io::Error::other(error))
}
