//! Peer echo server: `tokio-tungstenite` on a **current-thread** Tokio runtime
//! (one thread total, because the benchmark pins the server to one core).
//!
//! Each connection is a task that reads with `StreamExt::next`, queues echoes
//! with `SinkExt::feed`, echoes every further message that is already
//! available without waiting, then issues a single `SinkExt::flush` — the
//! feed-then-flush batching that tokio-tungstenite's sink API is built for
//! (`SinkExt::send` would flush after every message). Text is echoed as text,
//! binary as binary; ping/pong/close are tungstenite's automatic behaviour.
//! No compression. Max message size 64 MiB (tungstenite default).

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error, Message};

/// Returns true for the message kinds the server echoes.
fn is_data(msg: &Message) -> bool {
    matches!(msg, Message::Text(_) | Message::Binary(_))
}

/// Serves one accepted TCP connection until the peer goes away.
async fn serve(stream: TcpStream) -> Result<(), Error> {
    // All peer servers (and the load generator) disable Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .max_message_size(Some(wsline_bench::PEER_MAX_MESSAGE_SIZE))
        .max_frame_size(Some(wsline_bench::PEER_MAX_MESSAGE_SIZE));
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        if is_data(&msg) {
            ws.feed(msg).await?;
        }
        // Echo whatever else is already readable before paying for a flush.
        // Polling with a no-op waker is fine: the next `.await` re-registers.
        while let Some(next) = ws.next().now_or_never() {
            match next {
                Some(Ok(msg)) => {
                    if is_data(&msg) {
                        ws.feed(msg).await?;
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
        ws.flush().await?;
    }
    Ok(())
}

/// Binds `127.0.0.1:PORT` and spawns a task per accepted connection on a
/// single-threaded runtime.
fn main() {
    let addr = wsline_bench::listen_addr_from_args("echo-tokio-tungstenite");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo-tokio-tungstenite: runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo-tokio-tungstenite: bind {addr}: {e}");
                std::process::exit(1);
            }
        };
        eprintln!("echo-tokio-tungstenite listening on {addr} (current_thread runtime)");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        // Abrupt disconnects at the end of a run are expected.
                        let _ = serve(stream).await;
                    });
                }
                Err(e) => eprintln!("echo-tokio-tungstenite: accept: {e}"),
            }
        }
    });
}
