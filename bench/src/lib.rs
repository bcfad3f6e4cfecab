//! Shared helpers for the wsline echo benchmark binaries.
//!
//! The benchmark crate holds three load generators (`loadgen` for HTTP/1.1
//! echo, `loadgen-h2` for HTTP/2 extended CONNECT echo, `loadgen-fanout` for
//! one publisher and N subscribers in a room, sharing [`load`]), several peer
//! echo servers (`echo-tungstenite`, `echo-tokio-tungstenite`,
//! `echo-fastwebsockets`, `echo-tokio-websockets`, `echo-sockudo-ws`) and a
//! peer fan-out server (`fanout-sockudo-ws`; the Node and Python ones are in
//! `peers/`). Every Rust server takes `--port P` and binds to `127.0.0.1:P`;
//! this module parses that flag so all servers behave alike.

pub mod load;

use std::net::SocketAddr;
use std::process::exit;

/// Max message (and frame) size configured on every peer server: 64 MiB, the
/// libraries' own default message limit, comfortably above the 16 MiB the
/// wsline server is run with (`--max-message-size 16777216`).
pub const PEER_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Parses `--port P` (or `--port=P`) from the process arguments and returns
/// the loopback address to bind. Exits with status 2 and a usage line on any
/// other argument.
pub fn listen_addr_from_args(server_name: &str) -> SocketAddr {
    let usage = || -> ! {
        eprintln!("usage: {server_name} --port PORT   (binds 127.0.0.1:PORT)");
        exit(2)
    };
    let mut port: Option<u16> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = if arg == "--port" {
            args.next()
        } else if let Some(v) = arg.strip_prefix("--port=") {
            Some(v.to_string())
        } else {
            usage()
        };
        match value.and_then(|v| v.parse::<u16>().ok()) {
            Some(p) => port = Some(p),
            None => usage(),
        }
    }
    match port {
        Some(p) => SocketAddr::from(([127, 0, 0, 1], p)),
        None => usage(),
    }
}
