//! WebSockets over HTTP/2 (RFC 8441) in the tokio server: a connection that picked `h2` by
//! ALPN, or a plain one that starts with the HTTP/2 preface, is served by hyper's HTTP/2
//! server with `SETTINGS_ENABLE_CONNECT_PROTOCOL`; each extended CONNECT goes through the
//! same handshake (`wsline::http`, then the handler's hook) and the same handler, close
//! policy, shutdown and send budget as an HTTP/1.1 connection. HTTP/2 flow control is the
//! stream's backpressure: a stream whose window is used up takes no more bytes, so the
//! WebSocket's send buffer fills and the high-water mark applies, as over TCP.

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{prepare, run_handler, Handler, ServerShared, Settings};
use crate::http::{accept_request, to_http, to_request};
use crate::proto::{Connection, Response};
use crate::tokio::stream::MaybeTlsStream;
use crate::tokio::stream::{Http2Stream, HTTP2_WRITE_CHUNK};
use crate::tokio::websocket::WebSocket;

/// What h2 buffers for one stream; with hyper's own hand-off (a one-slot channel and the
/// chunk its send task holds) about 4 chunks per stream sit outside the WebSocket's send
/// buffer.
const HTTP2_SEND_BUFFER: usize = HTTP2_WRITE_CHUNK;

/// How the HTTP/2 connection preface starts (RFC 9113 §3.4: `PRI * HTTP/2.0…`); no
/// HTTP/1.1 method is `PRI`.
const PREFACE_START: &[u8] = b"PRI ";

/// What a new connection speaks.
pub(super) enum Detected {
    /// HTTP/2, with the bytes read to tell (the start of the preface).
    Http2(MaybeTlsStream, Vec<u8>),
    /// HTTP/1.1, with the bytes read to tell (the start of the request).
    Http1(MaybeTlsStream, Vec<u8>),
}

/// Tells HTTP/2 from HTTP/1.1: by ALPN over TLS, by the first bytes on plain TCP (read
/// within the open timeout counted from `accepted`; the HTTP/1.1 path gets what was read).
pub(super) async fn detect(
    mut stream: MaybeTlsStream,
    settings: &Settings,
    accepted: Instant,
) -> io::Result<Detected> {
    if !settings.http2 {
        return Ok(Detected::Http1(stream, Vec::new()));
    }
    #[cfg(feature = "rustls")]
    if let MaybeTlsStream::Tls(_) = &stream {
        return Ok(if stream.negotiated_h2() {
            Detected::Http2(stream, Vec::new())
        } else {
            Detected::Http1(stream, Vec::new())
        });
    }
    // Small: the rest of an HTTP/1.1 request goes through the WebSocket's own read buffer.
    let mut received = Vec::with_capacity(64);
    let read_start = async {
        while received.len() < PREFACE_START.len() && PREFACE_START.starts_with(&received) {
            if stream.read_buf(&mut received).await? == 0 {
                break;
            }
        }
        io::Result::Ok(())
    };
    // A client that sends nothing: the HTTP/1.1 path's open timeout, already due, ends it.
    let read = match settings.protocol.open_timeout {
        Some(timeout) => tokio::time::timeout_at(accepted + timeout, read_start)
            .await
            .unwrap_or(Ok(())),
        None => read_start.await,
    };
    read?;
    Ok(if received.starts_with(PREFACE_START) {
        Detected::Http2(stream, received)
    } else {
        Detected::Http1(stream, received)
    })
}

/// Serves one HTTP/2 connection until it ends; on shutdown, sends GOAWAY and lets its
/// WebSockets finish their closing handshakes (each is told 1001).
pub(super) async fn serve<H: Handler>(
    stream: MaybeTlsStream,
    received: Vec<u8>,
    peer: SocketAddr,
    handler: Arc<H>,
    settings: Arc<Settings>,
    shared: Arc<ServerShared>,
) {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .enable_connect_protocol()
        .max_concurrent_streams(settings.http2_max_streams)
        // What h2 buffers per stream beyond the WebSocket's own send buffer (with writes of
        // at most HTTP2_WRITE_CHUNK, see MaybeTlsStream).
        .max_send_buf_size(HTTP2_SEND_BUFFER)
        // The request head's limit, as over HTTP/1.1 (HPACK-decoded size, RFC 9113 §6.5.2).
        .max_header_list_size(u32::try_from(settings.protocol.max_head_size).unwrap_or(u32::MAX));
    // The WebSockets of this connection run in tasks this function owns: dropped (the
    // server's shutdown timeout passed), it drops them; their panics are reported.
    let (spawn_tx, mut spawned) = mpsc::unbounded_channel::<WebSocketTask>();
    let (live_tx, live) = watch::channel(0usize);
    let open_timeout = settings.protocol.open_timeout;
    let service = {
        let shared = Arc::clone(&shared);
        service_fn(move |request| {
            let response = answer(
                request, peer, &handler, &settings, &shared, &spawn_tx, &live_tx,
            );
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let stream = Prefixed {
        prefix: received,
        at: 0,
        stream,
    };
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let mut tasks = JoinSet::new();
    let mut closing = false;
    // hyper's graceful shutdown waits for the client to answer a PING: one that never does
    // (a dead or hostile peer) has the connection dropped this long after, while idle.
    let mut linger = None;
    let outcome = loop {
        tokio::select! {
            outcome = connection.as_mut() => break outcome,
            () = sleep_until(linger), if linger.is_some() && *live.borrow() == 0 && spawned.is_empty() => {
                tracing::debug!(%peer, "HTTP/2 connection did not close in time; dropping it");
                break Ok(());
            }
            Some(task) = spawned.recv() => {
                tasks.spawn(task);
            }
            Some(result) = tasks.join_next() => super::report(result),
            () = shared.shutdown.raised(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
                linger = open_timeout.map(|timeout| Instant::now() + timeout);
            }
            // No WebSocket for a whole open timeout (none yet, or all ended): GOAWAY, as an
            // HTTP/1.1 connection that sends no handshake is closed.
            () = idle(live.clone(), open_timeout), if !closing => {
                closing = true;
                tracing::debug!(%peer, "HTTP/2 connection idle; closing it");
                connection.as_mut().graceful_shutdown();
                linger = open_timeout.map(|timeout| Instant::now() + timeout);
            }
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(%peer, %error, "HTTP/2 connection ended");
    }
    // A WebSocket answered in the last turn: its stream is gone with the connection, so
    // its task ends at once.
    spawned.close();
    while let Ok(task) = spawned.try_recv() {
        tasks.spawn(task);
    }
    while let Some(result) = tasks.join_next().await {
        super::report(result);
    }
}

/// Sleeps until `deadline`; never without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A WebSocket of an HTTP/2 connection, to run in a task of the connection's.
type WebSocketTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolves once `live` (the connection's WebSockets) has been 0 for `timeout`; never
/// without a timeout.
async fn idle(mut live: watch::Receiver<usize>, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        if *live.borrow_and_update() == 0 {
            tokio::select! {
                () = tokio::time::sleep(timeout) => return,
                changed = live.changed() => if changed.is_err() { return std::future::pending().await },
            }
        } else if live.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Counts a WebSocket of the connection while it lives.
struct Live(watch::Sender<usize>);

impl Live {
    fn new(live: &watch::Sender<usize>) -> Self {
        live.send_modify(|count| *count += 1);
        Self(live.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
    }
}

/// Answers one request of an HTTP/2 connection: the handshake of `wsline::http`, passed
/// through the handler's hook (a panic there is this request's 500, not the connection's
/// end); a 200 to a valid extended CONNECT opens the WebSocket on the stream, in a task of
/// the connection's.
fn answer<H: Handler>(
    request: http::Request<Incoming>,
    peer: SocketAddr,
    handler: &Arc<H>,
    settings: &Arc<Settings>,
    shared: &Arc<ServerShared>,
    spawn: &mpsc::UnboundedSender<WebSocketTask>,
    live: &watch::Sender<usize>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let core_request = to_request(&parts);
    let outcome = accept_request(&core_request, parts.version, Arc::clone(&settings.protocol));
    let mut response = match &outcome {
        Ok(accepted) => accepted.core_response().clone(),
        Err(rejected) => rejected.core_response().clone(),
    };
    let hooked = panic::catch_unwind(AssertUnwindSafe(|| {
        handler.on_handshake(&core_request, &mut response);
    }));
    if hooked.is_err() {
        tracing::error!(%peer, path = %core_request.path, "on_handshake panicked; answering 500");
        response = Response::text(500, "Internal server error");
    }
    // Each WebSocket is a connection for `max_connections`, as over HTTP/1.1; none opens
    // once the server is shutting down.
    let mut permit = None;
    if outcome.is_ok() && response.status == 200 {
        if shared.shutdown.is_raised() {
            response = Response::text(503, "Server shutting down");
        } else {
            match Arc::clone(&shared.permits).try_acquire_owned() {
                Ok(acquired) => permit = Some(acquired),
                Err(_) => {
                    tracing::info!(%peer, path = %core_request.path, "at max_connections; answering 503");
                    response = Response::text(503, "Server at its connection limit");
                }
            }
        }
    }
    let status = response.status;
    match outcome {
        Ok(accepted) if status == 200 => {
            tracing::info!(%peer, path = %core_request.path, http = 2, "connection opened");
            let request = http::Request::from_parts(parts, body);
            let (handler, settings, shared) = (
                Arc::clone(handler),
                Arc::clone(settings),
                Arc::clone(shared),
            );
            let counted = Live::new(live);
            let task: WebSocketTask = Box::pin(async move {
                let _counted = counted;
                let _permit = permit;
                let _connection = super::Counted::new(&shared.connections);
                let upgraded = match hyper::upgrade::on(request).await {
                    Ok(upgraded) => upgraded,
                    Err(error) => {
                        return tracing::debug!(%peer, %error, "HTTP/2 stream not upgraded");
                    }
                };
                let stream =
                    MaybeTlsStream::Http2(Box::new(Http2Stream::new(upgraded, Some(peer))));
                let (negotiated, request) = accepted.into_parts();
                let conn = Connection::from_negotiated(
                    negotiated,
                    Arc::clone(&settings.protocol),
                    std::time::Instant::now(),
                );
                let mut ws = WebSocket::new(stream, conn, settings.limits);
                ws.set_request(request);
                prepare(&mut ws, &settings, &shared);
                run_handler(ws, peer, &handler, &shared).await;
            });
            // The receiver lives as long as the connection that called this.
            let _ = spawn.send(task);
        }
        _ => {
            tracing::info!(%peer, status, path = %core_request.path, http = 2, "handshake rejected");
            // Any other 2xx to a CONNECT would open a tunnel (RFC 9113 §8.5) with no
            // WebSocket behind it.
            if (200..300).contains(&status) && parts.method == http::Method::CONNECT {
                response = Response::text(500, "Internal server error");
            }
        }
    }
    to_http(&response, Version::HTTP_2)
}

/// A connection whose first bytes were read to tell its protocol: hands them to hyper
/// before the rest.
struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    stream: MaybeTlsStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let rest = &this.prefix[this.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
