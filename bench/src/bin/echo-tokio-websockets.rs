//! Peer echo server: `tokio-websockets` 0.13 (HTTP/1.1) on a
//! **current-thread** Tokio runtime (one thread total, because the benchmark
//! pins the server to one core) — the shape of the crate's own
//! `echo_server` example: `ServerBuilder::accept`, then `next()` / `send()`
//! for every text or binary message, the connection task wrapped in
//! `tokio::task::unconstrained`.
//!
//! SIMD: the crate picks AVX512/AVX2/SSE2 (un)masking at run time and
//! validates UTF-8 with `simdutf8` (AVX2 detected at run time); there is no
//! feature flag to turn on for x86_64 on stable Rust. Features: `server` and
//! `sha1_smol` (the handshake's SHA-1 without TLS). No compression (the crate
//! implements none). Pings are answered and Close echoed by the stream
//! itself. Max message size: 64 MiB, like the other peers.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_websockets::{Error, Limits, ServerBuilder};

/// Upgrade, then echo until the client goes away.
async fn handle_client(stream: TcpStream) -> Result<(), Error> {
    let (_request, mut ws) = ServerBuilder::new()
        .limits(Limits::default().max_payload_len(Some(wsline_bench::PEER_MAX_MESSAGE_SIZE)))
        .accept(stream)
        .await?;
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.send(message).await?;
        }
    }
    Ok(())
}

/// Binds `127.0.0.1:PORT` and serves HTTP/1.1 upgrades on a single-threaded
/// runtime.
fn main() {
    let addr = wsline_bench::listen_addr_from_args("echo-tokio-websockets");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo-tokio-websockets: runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo-tokio-websockets: bind {addr}: {e}");
                std::process::exit(1);
            }
        };
        eprintln!("echo-tokio-websockets listening on {addr} (current_thread runtime)");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    // All peer servers (and the load generators) disable Nagle.
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(tokio::task::unconstrained(async move {
                        // Abrupt disconnects at the end of a run are expected.
                        let _ = handle_client(stream).await;
                    }));
                }
                Err(e) => eprintln!("echo-tokio-websockets: accept: {e}"),
            }
        }
    });
}
