//! WebSockets over HTTP/2 (RFC 8441) in the tokio server: a connection that picked `h2` by
//! ALPN, or a plain one that starts with the HTTP/2 preface, is served by hyper's HTTP/2
//! server with `SETTINGS_ENABLE_CONNECT_PROTOCOL`; each extended CONNECT goes through the
//! same handshake (`wsline::http`, then the handler's hook) and the same handler, close
//! policy, shutdown and send budget as an HTTP/1.1 connection. HTTP/2 flow control is the
//! stream's backpressure: a stream whose window is used up takes no more bytes, so the
//! WebSocket's send buffer fills and the high-water mark applies, as over TCP.

use std::convert::Infallible;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Version;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::{prepare, run_handler, Handler, ServerShared, Settings};
use crate::http::{accept_request, to_http, to_request};
use crate::proto::Connection;
use crate::tokio::stream::MaybeTlsStream;
use crate::tokio::websocket::WebSocket;

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
    if let MaybeTlsStream::Tls(tls) = &stream {
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        return Ok(if h2 {
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
        // The request head's limit, as over HTTP/1.1 (HPACK-decoded size, RFC 9113 §6.5.2).
        .max_header_list_size(u32::try_from(settings.protocol.max_head_size).unwrap_or(u32::MAX));
    let service = {
        let shared = Arc::clone(&shared);
        service_fn(move |request| {
            let response = answer(request, peer, &handler, &settings, &shared);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let stream = Prefixed {
        prefix: received,
        at: 0,
        stream,
    };
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        () = shared.shutdown.raised() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(%peer, %error, "HTTP/2 connection ended");
    }
}

/// Answers one request of an HTTP/2 connection: the handshake of `wsline::http`, passed
/// through the handler's hook; a 200 to a valid extended CONNECT opens the WebSocket on the
/// stream, in a task of its own.
fn answer<H: Handler>(
    request: http::Request<Incoming>,
    peer: SocketAddr,
    handler: &Arc<H>,
    settings: &Arc<Settings>,
    shared: &Arc<ServerShared>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let core_request = to_request(&parts);
    let outcome = accept_request(&core_request, parts.version, Arc::clone(&settings.protocol));
    let mut response = match &outcome {
        Ok(accepted) => accepted.core_response().clone(),
        Err(rejected) => rejected.core_response().clone(),
    };
    handler.on_handshake(&core_request, &mut response);
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
            tokio::spawn(async move {
                let upgraded = match hyper::upgrade::on(request).await {
                    Ok(upgraded) => upgraded,
                    Err(error) => {
                        return tracing::debug!(%peer, %error, "HTTP/2 stream not upgraded");
                    }
                };
                let stream = MaybeTlsStream::Http2(Box::new(TokioIo::new(upgraded)));
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
        }
        _ => {
            tracing::info!(%peer, status, path = %core_request.path, http = 2, "handshake rejected")
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
