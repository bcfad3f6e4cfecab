//! Peer echo server: `sockudo-ws` 3 on a **current-thread** Tokio runtime (one
//! thread total, because the benchmark pins the server to one core), serving
//! both HTTP/1.1 upgrades and HTTP/2 extended CONNECT (RFC 8441, h2c with
//! prior knowledge) on the same port, like `wsline serve --tokio`.
//!
//! sockudo-ws has no listener that speaks both, so each accepted socket is
//! peeked at (without consuming anything): bytes that begin the HTTP/2
//! connection preface go to `WebSocketServer::<Http2>::serve`, anything else
//! to `WebSocketServer::<Http1>::accept` (what its `serve(listener, …)`
//! convenience method does per socket). Both get `Config::default()`: no
//! compression, 64 MiB message limit, the HTTP/2 defaults of 1 MiB stream and
//! 2 MiB connection windows and 100 concurrent streams.
//!
//! The echo loop is the one the crate's README recommends for a Tokio
//! unified stream: `feed` each text/binary message (replies are batched and
//! flushed when `next()` runs out of parsed input), return on Close; pings are
//! answered by the stream itself.

use futures_util::{SinkExt, StreamExt};
use sockudo_ws::{Config, Http1, Http2, Message, WebSocketServer, WebSocketStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The README's echo loop: queue replies with `feed`, stop at Close.
async fn echo<S>(ws: &mut WebSocketStream<S>) -> sockudo_ws::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = ws.next().await {
        match message? {
            message @ (Message::Text(_) | Message::Binary(_)) => {
                ws.feed(message).await?;
            }
            Message::Close(_) => return Ok(()),
            _ => {} // Ping/Pong are handled by the stream.
        }
    }
    Ok(())
}

/// Whether the first bytes of a connection are (the start of) the HTTP/2
/// preface; waits for at least one byte without consuming it.
async fn is_http2(stream: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; HTTP2_PREFACE.len()];
    let n = stream.peek(&mut first).await?;
    Ok(n > 0 && HTTP2_PREFACE.starts_with(&first[..n]))
}

/// Serves one accepted socket over HTTP/1.1 or HTTP/2.
async fn serve_socket(
    stream: TcpStream,
    http1: WebSocketServer<Http1>,
    http2: WebSocketServer<Http2>,
) {
    // All peer servers (and the load generators) disable Nagle.
    let _ = stream.set_nodelay(true);
    // Abrupt disconnects at the end of a run are expected: errors are not logged.
    match is_http2(&stream).await {
        Ok(true) => {
            let _ = http2
                .serve(stream, |mut ws, _request| async move {
                    let _ = echo(&mut ws).await;
                })
                .await;
        }
        Ok(false) => {
            if let Ok((mut ws, _handshake)) = http1.accept(stream).await {
                let _ = echo(&mut ws).await;
            }
        }
        Err(_) => {}
    }
}

/// Binds `127.0.0.1:PORT` and serves both protocols on a single-threaded
/// runtime.
fn main() {
    let addr = wsline_bench::listen_addr_from_args("echo-sockudo-ws");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo-sockudo-ws: runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo-sockudo-ws: bind {addr}: {e}");
                std::process::exit(1);
            }
        };
        eprintln!("echo-sockudo-ws listening on {addr} (HTTP/1.1 + h2c, current_thread runtime)");
        let http1 = WebSocketServer::<Http1>::new(Config::default());
        let http2 = WebSocketServer::<Http2>::new(Config::default());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_socket(stream, http1.clone(), http2.clone()));
                }
                Err(e) => eprintln!("echo-sockudo-ws: accept: {e}"),
            }
        }
    });
}
