//! WebSockets over HTTP/2 (RFC 8441) in the tokio server: a connection that picked `h2` by
//! ALPN, or a plain one that starts with the HTTP/2 preface, is served by the `h2` crate's
//! server with `SETTINGS_ENABLE_CONNECT_PROTOCOL`; each extended CONNECT goes through the
//! same handshake (`wsline::http`, then the handler's hook) and the same handler, close
//! policy, shutdown and send budget as an HTTP/1.1 connection. HTTP/2 flow control is the
//! stream's backpressure: a stream whose window is used up takes no more bytes, so the
//! WebSocket's send buffer fills and the high-water mark applies, as over TCP.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{prepare, run_handler, Handler, ServerShared, Settings};
use crate::http::{accept_request, to_http, to_request};
use crate::proto::{Connection, Response};
use crate::tokio::signal::Listener;
use crate::tokio::stream::MaybeTlsStream;
use crate::tokio::stream::{Http2Stream, ReadAhead, HTTP2_WRITE_CHUNK};
use crate::tokio::websocket::WebSocket;

/// What h2 buffers for one stream, outside the WebSocket's send buffer: four chunks, so
/// that a write finds room for a whole chunk while the last ones wait for the socket (with
/// room for one, the capacity freed in pieces as h2 writes made DATA frames of a few bytes,
/// each a `writev` of its own).
const HTTP2_SEND_BUFFER: usize = 4 * HTTP2_WRITE_CHUNK;

/// The receive window of each stream: what a client may send ahead of its WebSocket's
/// reads (four 16 KiB messages in flight and room to spare).
const STREAM_WINDOW: u32 = 256 << 10;

/// The most the connection's receive window grows to: with a window of its own per stream
/// allowed, a WebSocket that is not read (its handler busy, its send buffer full) holds
/// only its stream's share, and the others go on; 64 such streams fill it.
const MAX_CONNECTION_WINDOW: u32 = 16 << 20;

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
///
/// The connection is h2's, driven here: each extended CONNECT is answered in this loop,
/// and its WebSocket writes straight into its h2 stream ([`Http2Stream`]), with no task
/// or channel between them.
pub(super) async fn serve<H: Handler>(
    stream: MaybeTlsStream,
    received: Vec<u8>,
    accepted: Instant,
    peer: SocketAddr,
    handler: Arc<H>,
    settings: Arc<Settings>,
    shared: Arc<ServerShared>,
) {
    let mut builder = h2::server::Builder::new();
    builder
        .enable_connect_protocol()
        .max_concurrent_streams(settings.http2_max_streams)
        // What h2 buffers per stream beyond the WebSocket's own send buffer (with writes of
        // at most HTTP2_WRITE_CHUNK, see Http2Stream).
        .max_send_buffer_size(HTTP2_SEND_BUFFER)
        // What a client may send ahead of the WebSockets' reads: per stream (RFC 9113's
        // 64 KiB would cost a WINDOW_UPDATE round trip every few 16 KiB messages), and for
        // the connection room for every stream's window, up to a bound.
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(
            STREAM_WINDOW
                .saturating_mul(settings.http2_max_streams)
                .clamp(STREAM_WINDOW, MAX_CONNECTION_WINDOW),
        )
        // The request head's limit, as over HTTP/1.1 (HPACK-decoded size, RFC 9113 §6.5.2).
        .max_header_list_size(u32::try_from(settings.protocol.max_head_size).unwrap_or(u32::MAX));
    let open_timeout = settings.protocol.open_timeout;
    // The first bytes, read to tell the protocol, go to h2 before the rest.
    let handshake = builder.handshake::<_, Bytes>(ReadAhead::new(stream, received));
    // The preface is due within the open timeout of the TCP connection, as an HTTP/1.1
    // request head is.
    let handshake = match open_timeout {
        Some(timeout) => match tokio::time::timeout_at(accepted + timeout, handshake).await {
            Ok(handshake) => handshake,
            Err(_) => return tracing::debug!(%peer, "HTTP/2 preface not received in time"),
        },
        None => handshake.await,
    };
    let mut connection = match handshake {
        Ok(connection) => connection,
        Err(error) => return tracing::debug!(%peer, %error, "HTTP/2 handshake failed"),
    };
    // The WebSockets of this connection run in tasks this function owns: dropped (the
    // server's shutdown timeout passed), it drops them; their panics are reported.
    let mut tasks = JoinSet::new();
    let (live_tx, live) = watch::channel(0usize);
    // What the loop waits on besides the connection lives across its turns: made again at
    // each (each message, on a connection with one WebSocket), it would register with the
    // server-wide shutdown signal and the live count every time.
    let mut going_away = Listener::new(Arc::clone(&shared.shutdown));
    let idle = idle(live.clone(), open_timeout);
    // A graceful shutdown waits for the client to answer a PING: one that never does (a
    // dead or hostile peer) has the connection dropped this long after, while idle.
    let linger = sleep_until(None);
    tokio::pin!(idle, linger);
    let mut closing = false;
    let mut lingering = false;
    loop {
        tokio::select! {
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    let websocket = answer(request, respond, peer, &handler, &settings, &shared, &live_tx);
                    if let Some(websocket) = websocket {
                        tasks.spawn(websocket);
                    }
                }
                Some(Err(error)) => {
                    tracing::debug!(%peer, %error, "HTTP/2 connection ended");
                    break;
                }
                None => break,
            },
            () = &mut linger, if lingering && *live.borrow() == 0 => {
                tracing::debug!(%peer, "HTTP/2 connection did not close in time; dropping it");
                break;
            }
            Some(result) = tasks.join_next() => super::report(result),
            // Shut down, or no WebSocket for a whole open timeout (none yet, or all ended,
            // as an HTTP/1.1 connection that sends no handshake is closed): GOAWAY.
            () = raised(&mut going_away), if !closing => {
                closing = true;
                connection.graceful_shutdown();
                lingering = open_timeout.is_some();
                linger.set(sleep_until(open_timeout.map(|timeout| Instant::now() + timeout)));
            }
            () = &mut idle, if !closing => {
                closing = true;
                tracing::debug!(%peer, "HTTP/2 connection idle; closing it");
                connection.graceful_shutdown();
                lingering = open_timeout.is_some();
                linger.set(sleep_until(open_timeout.map(|timeout| Instant::now() + timeout)));
            }
        }
    }
    // The streams are gone with the connection, so the tasks end at once.
    drop(connection);
    while let Some(result) = tasks.join_next().await {
        super::report(result);
    }
}

/// Resolves once the server shuts down: an atomic load per poll, registered only once.
fn raised(listener: &mut Listener) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(|cx| {
        if listener.poll_raised(cx) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
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
/// end); a 200 to a valid extended CONNECT returns the WebSocket on the stream, to run in a
/// task of the connection's.
fn answer<H: Handler>(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    peer: SocketAddr,
    handler: &Arc<H>,
    settings: &Arc<Settings>,
    shared: &Arc<ServerShared>,
    live: &watch::Sender<usize>,
) -> Option<WebSocketTask> {
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
    let accepted = match outcome {
        Ok(accepted) if status == 200 => accepted,
        _ => {
            tracing::info!(%peer, status, path = %core_request.path, http = 2, "handshake rejected");
            // Any other 2xx to a CONNECT would open a tunnel (RFC 9113 §8.5) with no
            // WebSocket behind it.
            if (200..300).contains(&status) && parts.method == http::Method::CONNECT {
                response = Response::text(500, "Internal server error");
            }
            let (head, body) = to_http::<Bytes>(&response, Version::HTTP_2).into_parts();
            let head = http::Response::from_parts(head, ());
            match respond.send_response(head, body.is_empty()) {
                Ok(mut send) if !body.is_empty() => {
                    let _ = send.send_data(body, true);
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%peer, %error, "HTTP/2 answer not sent"),
            }
            return None;
        }
    };
    let head = http::Response::from_parts(
        to_http::<Bytes>(&response, Version::HTTP_2).into_parts().0,
        (),
    );
    let send = match respond.send_response(head, false) {
        Ok(send) => send,
        Err(error) => {
            tracing::debug!(%peer, %error, "HTTP/2 stream gone before its 200");
            return None;
        }
    };
    tracing::info!(%peer, path = %core_request.path, http = 2, "connection opened");
    let (handler, settings, shared) = (
        Arc::clone(handler),
        Arc::clone(settings),
        Arc::clone(shared),
    );
    let counted = Live::new(live);
    Some(Box::pin(async move {
        let _counted = counted;
        let _permit = permit;
        let _connection = super::Counted::new(&shared.connections);
        let stream = MaybeTlsStream::Http2(Box::new(Http2Stream::on_stream(send, body, peer)));
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
    }))
}
