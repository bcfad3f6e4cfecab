//! What the CLI's test binaries share: the `wsline` binary, a server started on a free port,
//! and child processes (from the library's test support).
#![allow(dead_code)]

#[path = "../../../wsline/tests/support/process.rs"]
pub mod process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use process::{Process, DEADLINE};

/// The `wsline` binary under test.
pub fn wsline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wsline"))
}

/// Starts `wsline serve` with `args` on a free port; returns it with the address it printed.
pub fn serve(args: &[&str]) -> (Process, SocketAddr) {
    let (process, banner) = Process::start(wsline().args(["serve", "--port", "0"]).args(args));
    let addr = banner
        .strip_prefix("Listening on ws://")
        .or_else(|| banner.strip_prefix("Listening on wss://"))
        .unwrap_or_else(|| panic!("unexpected first line {banner:?}"))
        .parse()
        .expect("an address");
    (process, addr)
}

/// The resident memory of process `pid` in KiB, from `/proc`.
pub fn rss_kib(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The number of open file descriptors of process `pid`, from `/proc`.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A raw client that completed the handshake (its 101 read to the end, byte by byte, so
/// that nothing after it is consumed).
pub fn open_raw(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the response head");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    stream
}
