//! Peer echo server: `fastwebsockets` with its hyper-based server upgrade, on
//! a **current-thread** Tokio runtime (one thread total, because the benchmark
//! pins the server to one core) — the same shape as the crate's own
//! `echo_server` example, including `tokio::task::unconstrained` for the
//! connection task.
//!
//! Messages are read through `FragmentCollector` (whole messages, text
//! validated as UTF-8) and written back with `write_frame`, so text is echoed
//! as text and binary as binary. Auto-pong and auto-close are left at their
//! defaults (enabled). No compression (fastwebsockets implements none). Max
//! message size: the crate default of 64 MiB.

use fastwebsockets::upgrade;
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;

/// Echo loop for one upgraded connection.
async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fut.await?;
    ws.set_max_message_size(wsline_bench::PEER_MAX_MESSAGE_SIZE);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

/// hyper service: answers the upgrade request and spawns the echo loop.
async fn server_upgrade(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::task::spawn(async move {
        // Abrupt disconnects at the end of a run are expected.
        let _ = tokio::task::unconstrained(handle_client(fut)).await;
    });
    Ok(response)
}

/// Binds `127.0.0.1:PORT` and serves HTTP/1.1 upgrades on a single-threaded
/// runtime.
fn main() {
    let addr = wsline_bench::listen_addr_from_args("echo-fastwebsockets");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo-fastwebsockets: runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo-fastwebsockets: bind {addr}: {e}");
                std::process::exit(1);
            }
        };
        eprintln!("echo-fastwebsockets listening on {addr} (current_thread runtime)");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    // All peer servers (and the load generator) disable Nagle.
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let conn = http1::Builder::new()
                            .serve_connection(io, service_fn(server_upgrade))
                            .with_upgrades();
                        let _ = conn.await;
                    });
                }
                Err(e) => eprintln!("echo-fastwebsockets: accept: {e}"),
            }
        }
    });
}
