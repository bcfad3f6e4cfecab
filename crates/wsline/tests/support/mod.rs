//! The one support module of every test binary (`mod support;`). Here: for the sync layer,
//! servers on free ports of 127.0.0.1, a raw TCP client that speaks (or breaks) the protocol
//! byte by byte, the byte-level frame encoder and parser, polling with generous deadlines,
//! and the process's memory use. In submodules: [`proto`] (a client/server `Pair` on a fake
//! clock, typed frame builders, the counting global allocator), [`tokio_common`] (the tokio
//! layer), [`process`] (child processes and interop peers: [`process::peer_missing`]),
//! [`interop`], [`proxy`], [`tls`] and `brokers` (Redis and NATS servers).
//!
//! Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use wsline::sync::client::connect_with;
use wsline::sync::server::{serve_on, Connection, Handler, Server};
use wsline::{CloseCode, ConnectConfig, Message, ServerConfig};

#[cfg(all(feature = "redis", feature = "nats"))]
pub mod brokers;
pub mod interop;
pub mod process;
#[macro_use]
pub mod proto;
pub mod proxy;
#[cfg(feature = "rustls")]
pub mod tls;
#[cfg(feature = "tokio")]
pub mod tokio_common;

pub use process::DEADLINE;

/// The key of the RFC 6455 §1.3 example handshake.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// Its `Sec-WebSocket-Accept` (RFC 6455 §1.3).
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The masking key of raw client frames: that of the RFC 6455 §5.7 examples.
pub const MASK: [u8; 4] = proto::RFC_KEY;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// Taken by every test that may run beside others.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner)
}

/// Taken by a test that measures the process (memory, file descriptors): it runs alone.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(PoisonError::into_inner)
}

/// The echo handler: text stays text, binary stays binary.
pub fn echo(conn: &mut Connection, message: Message) -> wsline::Result<()> {
    conn.send(message)
}

/// A server config for tests: two event loops, no keepalive (a loaded machine may starve a
/// client's driver thread for a while), the other defaults.
pub fn server_config() -> ServerConfig {
    let mut config = ServerConfig {
        workers: 2,
        ..ServerConfig::default()
    };
    config.protocol.ping_interval = None;
    config
}

/// Starts `handler` on a free port of 127.0.0.1.
pub fn start<H: Handler>(handler: H, config: ServerConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    serve_on(handler, listener, config).expect("start the server")
}

/// The `ws://` URL of a server.
pub fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/")
}

/// A client config that bounds every wait of a test, without keepalive.
pub fn client_config() -> ConnectConfig {
    let mut config = ConnectConfig::default();
    config.protocol.ping_interval = None;
    config.protocol.open_timeout = Some(DEADLINE);
    config.protocol.close_timeout = Some(DEADLINE);
    config
}

/// A normal client gets its text and binary messages echoed and closes cleanly: the server
/// at `addr` is serving.
pub fn assert_echo(addr: SocketAddr) {
    assert_served(&url(addr), &client_config());
}

/// [`assert_echo`] for any URL and client settings (`wss://`).
pub fn assert_served(url: &str, config: &ConnectConfig) {
    let ws = connect_with(url, config.clone()).expect("a normal client connects");
    ws.send_text("still here?").expect("send text");
    let reply = ws
        .recv_timeout(DEADLINE)
        .expect("recv")
        .expect("echo in time");
    assert_eq!(reply, Message::text("still here?"));
    ws.send_binary(&[0, 1, 2, 255]).expect("send binary");
    let reply = ws
        .recv_timeout(DEADLINE)
        .expect("recv")
        .expect("echo in time");
    assert_eq!(reply, Message::binary(vec![0, 1, 2, 255]));
    ws.close(CloseCode::NORMAL, "").expect("close");
}

/// Reads an HTTP head (up to its empty line) byte by byte, so that nothing after it is
/// consumed; what came if the stream ends or stays silent for [`DEADLINE`] first.
pub fn read_http_head(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

/// Polls `condition` every few milliseconds until it holds; panics after [`DEADLINE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The resident set size of this process in KiB, from `/proc/self/status`.
pub fn rss_kib() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The soft limit on open file descriptors of this process, from `/proc/self/limits`.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A client frame: FIN, opcode and payload, masked with [`MASK`].
pub fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let first = if fin { 0x80 } else { 0 } | opcode;
    frame_with(first, payload.len() as u64, payload, Some(MASK))
}

/// A frame built by hand: the first byte (FIN, RSV, opcode) as given, `length` as the
/// claimed payload length (which may differ from `payload`), masked with `mask` if any.
pub fn frame_with(first: u8, length: u64, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match length {
        0..=125 => out.push(mask_bit | length as u8),
        126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&length.to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame from a client with `code` and `reason`.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    frame(CLOSE, true, &proto::close_payload(code, reason.as_bytes()))
}

/// A valid handshake request for `/`, without extensions, with `extra` header lines
/// (each ending in `\r\n`).
pub fn request_with(extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A frame as a server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The code of a close frame, `None` for a close frame without one.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The reason of a close frame.
    pub fn close_reason(&self) -> String {
        String::from_utf8(self.payload.get(2..).unwrap_or_default().to_vec())
            .expect("close reason is UTF-8")
    }
}

/// An HTTP response head as a server sent it.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A raw TCP client: writes whatever a test wants, reads what the server answers. Every read
/// is bounded by [`DEADLINE`].
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects without a handshake.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).expect("TCP connect"))
    }

    /// Wraps a connected stream (such as a clone of another client's, to read on another
    /// thread).
    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        stream.set_write_timeout(Some(DEADLINE)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes a handshake without extensions.
    pub fn open(addr: SocketAddr) -> Self {
        let mut client = Self::connect(addr);
        client.send(request_with("").as_bytes());
        let head = client.read_head();
        assert_eq!(head.status, 101, "handshake accepted");
        assert_eq!(head.header("Sec-WebSocket-Accept"), Some(ACCEPT));
        client
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Writes all of `bytes`; the error if the server is gone.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads more bytes into the buffer; `false` at the end of the stream (or a reset).
    fn fill(&mut self) -> bool {
        let mut chunk = [0; 64 << 10];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) if is_timeout(&error) => {
                    panic!("the server sent nothing for {DEADLINE:?}")
                }
                Err(error) if error.kind() == ErrorKind::ConnectionReset => return false,
                Err(error) => panic!("read failed: {error}"),
            }
        }
    }

    /// Reads an HTTP response head (and leaves what follows it buffered).
    pub fn read_head(&mut self) -> Head {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return parse_head(&head);
            }
            assert!(self.buf.len() < 1 << 20, "response head too large");
            assert!(
                self.fill(),
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads an HTTP response head and its `Content-Length` body.
    pub fn read_response(&mut self) -> (Head, Vec<u8>) {
        let head = self.read_head();
        let length: usize = head
            .header("Content-Length")
            .map_or(0, |value| value.parse().expect("numeric Content-Length"));
        while self.buf.len() < length {
            assert!(self.fill(), "connection closed inside the response body");
        }
        let body = self.buf.drain(..length).collect();
        (head, body)
    }

    /// The next frame; `None` if the stream ends first.
    pub fn read_frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill() {
                assert!(self.buf.is_empty(), "stream ended inside a frame");
                return None;
            }
        }
    }

    /// Skips data and control frames until a close frame; `None` if the stream ends first.
    pub fn read_close(&mut self) -> Option<RawFrame> {
        while let Some(frame) = self.read_frame() {
            if frame.opcode == CLOSE {
                return Some(frame);
            }
        }
        None
    }

    /// The code of the next close frame, panicking if none comes.
    pub fn close_code(&mut self) -> Option<u16> {
        self.read_close()
            .expect("the server sent a close frame")
            .close_code()
    }

    /// Reads until the server closes the TCP connection, discarding what comes.
    pub fn expect_eof(&mut self) {
        while self.fill() {
            self.buf.clear();
        }
    }

    /// Closes the write half.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
    }

    /// Aborts the connection with a TCP reset (`SO_LINGER` 0, then close).
    pub fn reset(self) {
        let socket = socket2::Socket::from(self.stream);
        socket.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
    }
}

/// Raises this process's soft limit on open files to at least `wanted` (up to the hard
/// limit) with `prlimit`; `false` if the limit stays below `wanted`.
pub fn ensure_open_files(wanted: u64) -> bool {
    if open_files_limit().is_some_and(|limit| limit >= wanted) {
        return true;
    }
    let pid = std::process::id().to_string();
    // A failure shows in the limit read back.
    let _ = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={wanted}:")])
        .status();
    open_files_limit().is_some_and(|limit| limit >= wanted)
}

/// Whether a read error is a socket timeout.
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn parse_head(head: &[u8]) -> Head {
    let text = std::str::from_utf8(head).expect("response head is ASCII");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(
        parts.next(),
        Some("HTTP/1.1"),
        "status line {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|status| status.parse().ok())
        .expect("numeric status");
    let headers = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').expect("header line");
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    Head { status, headers }
}

/// Every whole frame at the start of `bytes`, in order; a truncated tail is ignored.
pub fn split_frames(mut bytes: &[u8]) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    while let Some((frame, used)) = parse_frame(bytes) {
        frames.push(frame);
        bytes = &bytes[used..];
    }
    frames
}

/// Parses one server frame from the start of `buf`: the frame and the bytes it used.
pub fn parse_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let [first, second, ..] = *buf else {
        return None;
    };
    let masked = second & 0x80 != 0;
    let (length, mut at) = match second & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => {
            let length = u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?);
            (usize::try_from(length).expect("length fits"), 10)
        }
        short => (short as usize, 2),
    };
    let key: Option<[u8; 4]> = if masked {
        let key = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    let mut payload = buf.get(at..at + length)?.to_vec();
    if let Some(key) = key {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= key[i % 4];
        }
    }
    let frame = RawFrame {
        fin: first & 0x80 != 0,
        rsv: (first >> 4) & 0x7,
        opcode: first & 0x0F,
        masked,
        payload,
    };
    Some((frame, at + length))
}
