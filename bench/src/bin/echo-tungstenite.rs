//! Peer echo server: `tungstenite` (synchronous), one OS thread per connection.
//!
//! Each connection thread loops on `WebSocket::read` and echoes text as text
//! and binary as binary with `WebSocket::send` (write + flush). Ping, pong and
//! close handling is tungstenite's automatic behaviour. No compression
//! (tungstenite implements none). Max message size: tungstenite's default of
//! 64 MiB (frames up to 64 MiB too), which covers the benchmark's 1 MiB messages and
//! the required 16 MiB.

use std::net::{TcpListener, TcpStream};
use std::thread;

use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error, Message};

/// Serves one accepted TCP connection until the peer goes away.
fn serve(stream: TcpStream) {
    // Small-message echo latency matters more than coalescing here; all peer
    // servers (and the load generator) disable Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .max_message_size(Some(wsline_bench::PEER_MAX_MESSAGE_SIZE))
        .max_frame_size(Some(wsline_bench::PEER_MAX_MESSAGE_SIZE));
    let mut ws = match tungstenite::accept_with_config(stream, Some(config)) {
        Ok(ws) => ws,
        Err(_) => return,
    };
    loop {
        match ws.read() {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(msg).is_err() {
                    return;
                }
            }
            // Ping/pong/close are answered by tungstenite itself; keep reading
            // until it reports the connection closed.
            Ok(_) => {}
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => return,
            Err(_) => return,
        }
    }
}

/// Binds `127.0.0.1:PORT` and spawns a thread per accepted connection.
fn main() {
    let addr = wsline_bench::listen_addr_from_args("echo-tungstenite");
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo-tungstenite: bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("echo-tungstenite listening on {addr}");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(e) = thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || serve(stream))
                {
                    eprintln!("echo-tungstenite: spawn: {e}");
                }
            }
            Err(e) => eprintln!("echo-tungstenite: accept: {e}"),
        }
    }
}
