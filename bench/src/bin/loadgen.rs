//! `loadgen`: a single-threaded WebSocket echo load generator.
//!
//! It opens `--connections` client connections to an echo server (doing the
//! HTTP/1.1 upgrade itself), keeps `--in-flight` messages outstanding on each,
//! and measures — during a `--duration` window that follows a `--warmup` —
//! echoed messages per second, echoed payload bytes per second, per-message
//! latency (send → complete echo received) and, with `--server-pid`, the
//! server's CPU time per echoed message. It prints one JSON line.
//!
//! Design notes:
//! * one thread, `mio` (edge-triggered epoll), non-blocking sockets with
//!   `TCP_NODELAY`;
//! * client frames are built once (fixed masking key) and written straight out
//!   of a pre-built buffer of back-to-back frames, so sending costs no
//!   per-message work beyond a `write(2)`;
//! * echoed frames are parsed minimally (header, length, opcode, FIN) and the
//!   payload is compared against what was sent; fragmented echoes are
//!   accepted, server pings are answered, anything else unexpected (close,
//!   wrong opcode or length, RSV bits, masked frames, EOF, stalls) is a fatal
//!   error that exits non-zero;
//! * latencies go into a log-linear histogram (< 0.8 % relative error), the
//!   maximum is kept exactly;
//! * every phase is bounded in time: connect/handshake timeout, stall timeout
//!   and an overall deadline.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::exit;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// `Sec-WebSocket-Key` sent on every connection (the RFC 6455 §1.3 sample).
const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` the server must answer for [`HANDSHAKE_KEY`].
const HANDSHAKE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Fixed masking key for all client frames (masking is mandatory for
/// clients; a fixed key is fine for a benchmark).
const MASK_KEY: [u8; 4] = [0x5a, 0xc3, 0x17, 0xe8];
/// Largest HTTP response head accepted during the handshake.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Size of the single read buffer shared by all connections.
const READ_BUF_SIZE: usize = 256 * 1024;
/// Upper bound on the size of the pre-built burst of back-to-back frames.
const MAX_BURST_BYTES: usize = 256 * 1024;
/// Largest `--size` accepted (the benchmark servers accept at least 16 MiB).
const MAX_SIZE: usize = 64 << 20;

/// Result type of this program: errors are human-readable messages.
type Res<T> = Result<T, String>;

/// Parsed command line.
#[derive(Debug, Clone)]
struct Config {
    /// Original `--url`, echoed into the JSON output.
    url: String,
    /// `host:port` as written in the URL (for the `Host` header).
    host_header: String,
    /// Request target (path and query) for the upgrade request.
    path: String,
    /// Resolved server address.
    addr: SocketAddr,
    /// Number of concurrent connections.
    connections: usize,
    /// Payload size of every message in bytes.
    size: usize,
    /// Text (opcode 1) rather than binary (opcode 2) messages.
    text: bool,
    /// Messages outstanding per connection.
    in_flight: usize,
    /// Warm-up before the measured window.
    warmup: Duration,
    /// Length of the measured window.
    duration: Duration,
    /// Server process whose CPU time is sampled, if any.
    server_pid: Option<u32>,
    /// Bound on establishing all connections (TCP connect + upgrade).
    connect_timeout: Duration,
    /// Fatal if no echo at all completes for this long.
    stall_timeout: Duration,
    /// Connections allowed in the connect/handshake state at once.
    connect_concurrency: usize,
}

/// Prints the usage text.
fn usage() -> &'static str {
    "usage: loadgen --url ws://HOST:PORT/PATH [options]\n\
     \n\
     options:\n\
     \x20 --connections N        concurrent connections (default 1)\n\
     \x20 --size BYTES           payload bytes per message (default 20)\n\
     \x20 --text | --binary      message type (default text)\n\
     \x20 --in-flight K          messages outstanding per connection (default 1)\n\
     \x20 --warmup SECS          warm-up before measuring (default 1)\n\
     \x20 --duration SECS        measured window (default 5)\n\
     \x20 --server-pid PID       sample this process's CPU time (/proc/PID/stat)\n\
     \x20 --connect-timeout SECS bound on connecting + upgrading all (default 15)\n\
     \x20 --stall-timeout SECS   fail if no echo completes for this long (default 10)\n\
     \x20 --connect-concurrency N  connects/handshakes in progress at once (default 128)\n\
     \n\
     Prints one JSON line; exits 1 with a message on stderr if the server misbehaves."
}

/// Parses a non-negative number of seconds.
fn parse_secs(flag: &str, v: &str) -> Res<Duration> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("{flag}: not a number: {v:?}"))?;
    if !(s.is_finite() && (0.0..1e6).contains(&s)) {
        return Err(format!("{flag}: out of range: {v:?}"));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Parses a positive integer no larger than `max`.
fn parse_count(flag: &str, v: &str, min: usize, max: usize) -> Res<usize> {
    let n: usize = v
        .parse()
        .map_err(|_| format!("{flag}: not an integer: {v:?}"))?;
    if n < min || n > max {
        return Err(format!("{flag}: must be in {min}..={max}, got {n}"));
    }
    Ok(n)
}

/// Splits a `ws://host[:port][/path]` URL into (host:port, host, port, path).
fn parse_url(url: &str) -> Res<(String, String, u16, String)> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        format!("--url must start with ws:// (got {url:?}); wss is not supported")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("--url has no host: {url:?}"));
    }
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        // [v6]:port
        let end = stripped
            .find(']')
            .ok_or_else(|| format!("--url: bad IPv6 host: {url:?}"))?;
        let host = &stripped[..end];
        let port = match stripped[end + 1..].strip_prefix(':') {
            Some(p) => p
                .parse()
                .map_err(|_| format!("--url: bad port in {url:?}"))?,
            None => 80,
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| format!("--url: bad port in {url:?}"))?,
            ),
            None => (authority.to_string(), 80),
        }
    };
    Ok((authority.to_string(), host, port, path.to_string()))
}

/// Parses the command line into a [`Config`].
fn parse_args(args: &[String]) -> Res<Config> {
    let mut url = None;
    let mut connections = 1;
    let mut size = 20;
    let mut text = true;
    let mut in_flight = 1;
    let mut warmup = Duration::from_secs(1);
    let mut duration = Duration::from_secs(5);
    let mut server_pid = None;
    let mut connect_timeout = Duration::from_secs(15);
    let mut stall_timeout = Duration::from_secs(10);
    let mut connect_concurrency = 128;

    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        // Fetches the flag's value, either inline (`--x=v`) or the next arg.
        let mut value = || -> Res<String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "-h" | "--help" => {
                println!("{}", usage());
                exit(0);
            }
            "--url" => url = Some(value()?),
            "--connections" => connections = parse_count(flag, &value()?, 1, 1_000_000)?,
            "--size" => size = parse_count(flag, &value()?, 0, MAX_SIZE)?,
            "--text" => text = true,
            "--binary" => text = false,
            "--in-flight" => in_flight = parse_count(flag, &value()?, 1, 1_000_000)?,
            "--warmup" => warmup = parse_secs(flag, &value()?)?,
            "--duration" => duration = parse_secs(flag, &value()?)?,
            "--server-pid" => {
                let v = value()?;
                server_pid = Some(
                    v.parse::<u32>()
                        .map_err(|_| format!("--server-pid: not a pid: {v:?}"))?,
                );
            }
            "--connect-timeout" => connect_timeout = parse_secs(flag, &value()?)?,
            "--stall-timeout" => stall_timeout = parse_secs(flag, &value()?)?,
            "--connect-concurrency" => {
                connect_concurrency = parse_count(flag, &value()?, 1, 1_000_000)?
            }
            _ => return Err(format!("unknown argument {arg:?}\n{}", usage())),
        }
        i += 1;
    }
    let url = url.ok_or_else(|| format!("--url is required\n{}", usage()))?;
    if duration.is_zero() {
        return Err("--duration must be > 0".into());
    }
    let (host_header, host, port, path) = parse_url(&url)?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port} resolved to no address"))?;
    Ok(Config {
        url,
        host_header,
        path,
        addr,
        connections,
        size,
        text,
        in_flight,
        warmup,
        duration,
        server_pid,
        connect_timeout,
        stall_timeout,
        connect_concurrency,
    })
}

/// Builds one masked client frame (FIN set) with the given opcode and payload.
fn build_client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&MASK_KEY);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK_KEY[i & 3]));
    f
}

/// Log-linear latency histogram over nanoseconds: exact below 256 ns, then
/// 128 sub-buckets per power of two (relative error below 0.8 %).
struct Histogram {
    /// Bucket counts.
    counts: Vec<u64>,
    /// Number of recorded values.
    total: u64,
    /// Exact maximum.
    max: u64,
    /// Sum of values, for the mean.
    sum: u128,
}

impl Histogram {
    /// Sub-bucket bits: 2^SUB_BITS values per power of two above 2^(SUB_BITS+1).
    const SUB_BITS: u32 = 7;

    /// An empty histogram covering the whole `u64` range.
    fn new() -> Self {
        Histogram {
            counts: vec![0; (64 << Self::SUB_BITS) + 256],
            total: 0,
            max: 0,
            sum: 0,
        }
    }

    /// Bucket index of a value.
    fn index(v: u64) -> usize {
        let sub = 1u64 << Self::SUB_BITS; // 128
        if v < 2 * sub {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // floor(log2 v) >= SUB_BITS + 1
        let shift = e - Self::SUB_BITS;
        (shift as usize) * sub as usize + (v >> shift) as usize
    }

    /// Lowest and highest value mapped to bucket `idx`.
    fn bounds(idx: usize) -> (u64, u64) {
        let sub = 1usize << Self::SUB_BITS;
        if idx < 2 * sub {
            return (idx as u64, idx as u64);
        }
        let shift = idx / sub - 1;
        let mant = (idx - shift * sub) as u64;
        let lo = mant << shift;
        (lo, lo + ((1u64 << shift) - 1))
    }

    /// Records one value.
    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
    }

    /// Value at quantile `q` (0..=1): midpoint of the bucket holding it,
    /// clamped to the exact maximum.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = Self::bounds(idx);
                return (lo + (hi - lo) / 2).min(self.max);
            }
        }
        self.max
    }

    /// Mean of recorded values.
    fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}

/// Connection life-cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request being sent / response being read.
    Handshake,
    /// Upgraded; exchanging frames.
    Open,
}

/// What the payload bytes of the frame being received belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    /// Part of the echoed data message.
    Data,
    /// A control frame with this opcode.
    Control(u8),
}

/// One client connection.
struct Conn {
    /// The socket.
    stream: TcpStream,
    /// Life-cycle phase.
    phase: Phase,
    /// Bytes of the upgrade request already written.
    req_written: usize,
    /// Upgrade response head read so far.
    resp: Vec<u8>,

    /// Offset of the next byte to send within the current frame (< frame len).
    out_pos: usize,
    /// Bytes of data frames queued but not yet written.
    out_remaining: u64,
    /// Control frames (pong replies) waiting for a frame boundary.
    ctrl_out: Vec<u8>,
    /// Send time of every outstanding message, oldest first.
    sent_at: VecDeque<Instant>,

    /// Partially received frame header.
    hdr: [u8; 14],
    /// Valid bytes in `hdr`.
    hdr_len: usize,
    /// Payload bytes still to come for the current frame; `None` between frames.
    frame_remaining: Option<u64>,
    /// What the current frame's payload is.
    frame_kind: FrameKind,
    /// FIN bit of the current data frame.
    frame_fin: bool,
    /// Whether a data message is being received (first frame seen, no FIN yet).
    in_message: bool,
    /// Payload bytes of the current echoed message received so far.
    msg_off: usize,
    /// Payload of the control frame being received.
    ctrl_payload: Vec<u8>,
}

/// Everything the event loop shares across connections.
struct Bench {
    /// Configuration.
    cfg: Config,
    /// The upgrade request.
    request: Vec<u8>,
    /// Payload of every message (what the echo must equal).
    payload: Vec<u8>,
    /// Opcode of sent messages.
    opcode: u8,
    /// Length of one encoded client frame.
    frame_len: usize,
    /// Several encoded client frames back to back.
    burst: Vec<u8>,
    /// Whether completions are counted (inside the measured window).
    measuring: bool,
    /// Whether new messages are issued.
    sending: bool,
    /// Latency histogram of messages completed in the window.
    hist: Histogram,
    /// Messages completed in the window.
    window_msgs: u64,
    /// Messages completed overall (warm-up included).
    total_msgs: u64,
    /// Last time any echo completed (stall detection).
    last_progress: Instant,
}

/// Outcome of draining a socket.
type Step = Res<()>;

impl Conn {
    /// A new connection in the `Connecting` phase.
    fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            phase: Phase::Connecting,
            req_written: 0,
            resp: Vec::new(),
            out_pos: 0,
            out_remaining: 0,
            ctrl_out: Vec::new(),
            sent_at: VecDeque::new(),
            hdr: [0; 14],
            hdr_len: 0,
            frame_remaining: None,
            frame_kind: FrameKind::Data,
            frame_fin: true,
            in_message: false,
            msg_off: 0,
            ctrl_payload: Vec::new(),
        }
    }

    /// Queues one new message, stamped with `now`.
    fn issue(&mut self, b: &Bench, now: Instant) {
        self.sent_at.push_back(now);
        self.out_remaining += b.frame_len as u64;
    }

    /// Writes queued bytes until done or the socket would block.
    fn flush(&mut self, b: &Bench) -> Step {
        loop {
            if !self.ctrl_out.is_empty() && self.out_pos == 0 {
                match self.stream.write(&self.ctrl_out) {
                    Ok(n) => {
                        self.ctrl_out.drain(..n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("write failed: {e}")),
                }
            }
            if self.out_remaining == 0 {
                return Ok(());
            }
            let start = self.out_pos;
            let mut len = (b.burst.len() - start)
                .min(usize::try_from(self.out_remaining).unwrap_or(usize::MAX));
            if !self.ctrl_out.is_empty() {
                // Stop at the frame boundary so the pong can go out.
                len = len.min(b.frame_len - start);
            }
            match self.stream.write(&b.burst[start..start + len]) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(n) => {
                    self.out_pos = (start + n) % b.frame_len;
                    self.out_remaining -= n as u64;
                    if n < len && self.ctrl_out.is_empty() {
                        // Short write: the send buffer is full; wait for the
                        // next writable edge.
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write failed: {e}")),
            }
        }
    }

    /// Processes received bytes of the frame stream.
    fn consume(&mut self, mut data: &[u8], b: &mut Bench) -> Step {
        while !data.is_empty() {
            match self.frame_remaining {
                None => {
                    // Accumulate the header: 2 bytes, then as many as it says.
                    let need = if self.hdr_len < 2 {
                        2
                    } else {
                        header_len(self.hdr[1])
                    };
                    let take = (need - self.hdr_len).min(data.len());
                    self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&data[..take]);
                    self.hdr_len += take;
                    data = &data[take..];
                    if self.hdr_len < 2 || self.hdr_len < header_len(self.hdr[1]) {
                        continue;
                    }
                    self.start_frame(b)?;
                }
                Some(remaining) => {
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    let chunk = &data[..take];
                    data = &data[take..];
                    match self.frame_kind {
                        FrameKind::Data => {
                            let expected = &b.payload[self.msg_off..self.msg_off + take];
                            if chunk != expected {
                                return Err(format!(
                                    "echoed payload differs from what was sent (within bytes {}..{})",
                                    self.msg_off,
                                    self.msg_off + take
                                ));
                            }
                            self.msg_off += take;
                        }
                        FrameKind::Control(_) => self.ctrl_payload.extend_from_slice(chunk),
                    }
                    let left = remaining - take as u64;
                    self.frame_remaining = Some(left);
                    if left == 0 {
                        self.end_frame(b)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Validates a complete header in `hdr` and starts its frame.
    fn start_frame(&mut self, b: &mut Bench) -> Step {
        let h = &self.hdr;
        let fin = h[0] & 0x80 != 0;
        let rsv = h[0] & 0x70;
        let opcode = h[0] & 0x0f;
        if h[1] & 0x80 != 0 {
            return Err("server sent a masked frame".into());
        }
        if rsv != 0 {
            return Err(format!(
                "server frame has RSV bits {rsv:#x} set (no extension was negotiated)"
            ));
        }
        let len = match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        };
        self.hdr_len = 0;
        match opcode {
            0x0..=0x2 => {
                if opcode == 0 {
                    if !self.in_message {
                        return Err("server sent a continuation frame outside a message".into());
                    }
                } else {
                    if self.in_message {
                        return Err("server started a new message inside a fragmented one".into());
                    }
                    if opcode != b.opcode {
                        return Err(format!(
                            "echo has opcode {opcode}, sent opcode {}",
                            b.opcode
                        ));
                    }
                    if self.sent_at.is_empty() {
                        return Err(
                            "server sent a message that was not an echo (none outstanding)".into(),
                        );
                    }
                    self.in_message = true;
                    self.msg_off = 0;
                }
                if len > (b.payload.len() - self.msg_off) as u64 {
                    return Err(format!(
                        "echoed message is longer than the {} bytes sent",
                        b.payload.len()
                    ));
                }
                self.frame_kind = FrameKind::Data;
                self.frame_fin = fin;
            }
            0x8..=0xa => {
                if !fin || len > 125 {
                    return Err(format!(
                        "server sent an invalid control frame (opcode {opcode})"
                    ));
                }
                self.frame_kind = FrameKind::Control(opcode);
                self.ctrl_payload.clear();
            }
            _ => return Err(format!("server sent reserved opcode {opcode:#x}")),
        }
        self.frame_remaining = Some(len);
        if len == 0 {
            self.end_frame(b)?;
        }
        Ok(())
    }

    /// Completes the current frame (all payload received).
    fn end_frame(&mut self, b: &mut Bench) -> Step {
        self.frame_remaining = None;
        match self.frame_kind {
            FrameKind::Control(0x8) => {
                let code = if self.ctrl_payload.len() >= 2 {
                    u16::from_be_bytes([self.ctrl_payload[0], self.ctrl_payload[1]]).to_string()
                } else {
                    "none".into()
                };
                let reason = String::from_utf8_lossy(self.ctrl_payload.get(2..).unwrap_or(&[]));
                Err(format!(
                    "server sent a close frame during the run (code {code}, reason {reason:?})"
                ))
            }
            FrameKind::Control(0x9) => {
                let pong = build_client_frame(0xa, &self.ctrl_payload);
                self.ctrl_out.extend_from_slice(&pong);
                Ok(())
            }
            FrameKind::Control(_) => Ok(()), // unsolicited pong: ignore
            FrameKind::Data => {
                if !self.frame_fin {
                    return Ok(());
                }
                if self.msg_off != b.payload.len() {
                    return Err(format!(
                        "echoed message has {} bytes, sent {}",
                        self.msg_off,
                        b.payload.len()
                    ));
                }
                self.in_message = false;
                self.complete_message(b)
            }
        }
    }

    /// Accounts one fully echoed message and issues the next one.
    fn complete_message(&mut self, b: &mut Bench) -> Step {
        let now = Instant::now();
        // Checked when the echo's first frame arrived; still handled here
        // rather than unwrapped because it is driven by peer input.
        let sent = self
            .sent_at
            .pop_front()
            .ok_or("server sent a message that was not an echo (none outstanding)")?;
        b.total_msgs += 1;
        b.last_progress = now;
        if b.measuring {
            b.window_msgs += 1;
            let ns = u64::try_from(now.duration_since(sent).as_nanos()).unwrap_or(u64::MAX);
            b.hist.record(ns);
        }
        if b.sending {
            self.issue(b, now);
        }
        Ok(())
    }

    /// Reads everything available and processes it (open phase).
    fn on_readable(&mut self, b: &mut Bench, rbuf: &mut [u8]) -> Step {
        loop {
            match self.stream.read(rbuf) {
                Ok(0) => return Err("server closed the connection (EOF) during the run".into()),
                Ok(n) => {
                    self.consume(&rbuf[..n], b)?;
                    if n < rbuf.len() {
                        // Short read: the receive queue is drained; edge-triggered
                        // epoll reports new data with a new edge.
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// Drives connect and handshake; returns true once the connection is open.
    fn drive_handshake(&mut self, b: &Bench, rbuf: &mut [u8]) -> Res<bool> {
        if self.phase == Phase::Connecting {
            if let Some(e) = self
                .stream
                .take_error()
                .map_err(|e| format!("connect: {e}"))?
            {
                return Err(format!("connect to {} failed: {e}", b.cfg.addr));
            }
            match self.stream.peer_addr() {
                Ok(_) => {
                    let _ = self.stream.set_nodelay(true);
                    self.phase = Phase::Handshake;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::NotConnected
                        || e.raw_os_error() == Some(libc::EINPROGRESS) =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(format!("connect to {} failed: {e}", b.cfg.addr)),
            }
        }
        while self.req_written < b.request.len() {
            match self.stream.write(&b.request[self.req_written..]) {
                Ok(n) => self.req_written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("sending upgrade request failed: {e}")),
            }
        }
        loop {
            match self.stream.read(rbuf) {
                Ok(0) => {
                    return Err(format!(
                        "server closed the connection during the upgrade (got {:?})",
                        String::from_utf8_lossy(&self.resp)
                    ))
                }
                Ok(n) => {
                    self.resp.extend_from_slice(&rbuf[..n]);
                    if let Some(end) = find_head_end(&self.resp) {
                        check_upgrade_response(&self.resp[..end])?;
                        if self.resp.len() > end {
                            return Err(
                                "server sent data after the upgrade response before any message"
                                    .into(),
                            );
                        }
                        self.resp = Vec::new();
                        self.phase = Phase::Open;
                        return Ok(true);
                    }
                    if self.resp.len() > MAX_RESPONSE_HEAD {
                        return Err("upgrade response head too large".into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading upgrade response failed: {e}")),
            }
        }
    }
}

/// Total header length implied by the second header byte (server frames are
/// unmasked; a mask bit is rejected later but sized correctly here).
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// Index just past the `\r\n\r\n` ending an HTTP head, if present.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Checks the server's upgrade response: status 101, `Upgrade: websocket`,
/// the right `Sec-WebSocket-Accept`, and no extension (none was offered).
fn check_upgrade_response(head: &[u8]) -> Step {
    let text =
        std::str::from_utf8(head).map_err(|_| "upgrade response is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") || code != "101" {
        return Err(format!("upgrade refused: status line {status:?}"));
    }
    let mut accept_ok = false;
    let mut upgrade_ok = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed header line {line:?}"))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "sec-websocket-accept" => {
                if value != HANDSHAKE_ACCEPT {
                    return Err(format!("wrong Sec-WebSocket-Accept {value:?}"));
                }
                accept_ok = true;
            }
            "upgrade" => upgrade_ok = value.eq_ignore_ascii_case("websocket"),
            "sec-websocket-extensions" => {
                return Err(format!(
                    "server negotiated an extension that was not offered: {value:?}"
                ))
            }
            _ => {}
        }
    }
    if !accept_ok {
        return Err("upgrade response lacks Sec-WebSocket-Accept".into());
    }
    if !upgrade_ok {
        return Err("upgrade response lacks `Upgrade: websocket`".into());
    }
    Ok(())
}

/// utime+stime of a process (all threads), in clock ticks, from /proc/PID/stat.
fn proc_cpu_ticks(pid: &str) -> Res<u64> {
    let path = format!("/proc/{pid}/stat");
    let s = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    // The command name (field 2) may contain spaces; fields resume after ')'.
    let rest = s
        .rfind(')')
        .map(|i| &s[i + 1..])
        .ok_or_else(|| format!("unexpected format of {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let get = |i: usize| -> Res<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("unexpected format of {path}"))
    };
    Ok(get(11)? + get(12)?)
}

/// Clock ticks per second for /proc times.
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions and only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU-time snapshot of the server (if sampled) and of this process.
#[derive(Debug, Clone, Copy)]
struct CpuSnap {
    /// When the snapshot was taken.
    at: Instant,
    /// Server utime+stime in ticks.
    server: Option<u64>,
    /// Own utime+stime in ticks.
    client: u64,
}

/// Takes a [`CpuSnap`].
fn cpu_snap(server_pid: Option<u32>) -> Res<CpuSnap> {
    let server = match server_pid {
        Some(pid) => Some(
            proc_cpu_ticks(&pid.to_string())
                .map_err(|e| format!("server process {pid}: {e} (did it exit?)"))?,
        ),
        None => None,
    };
    let client = proc_cpu_ticks("self")?;
    Ok(CpuSnap {
        at: Instant::now(),
        server,
        client,
    })
}

/// Formats an optional float as JSON.
fn json_opt(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "null".into(),
    }
}

/// Escapes a string for JSON.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs the benchmark and returns the JSON result line.
fn run(cfg: Config) -> Res<String> {
    let program_start = Instant::now();
    let payload: Vec<u8> = if cfg.text {
        // Printable ASCII, hence valid UTF-8.
        (0..cfg.size).map(|i| b'a' + (i % 26) as u8).collect()
    } else {
        (0..cfg.size)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
            .collect()
    };
    let opcode = if cfg.text { 1 } else { 2 };
    let frame = build_client_frame(opcode, &payload);
    let frame_len = frame.len();
    let copies = cfg.in_flight.min((MAX_BURST_BYTES / frame_len).max(1));
    let burst = frame.repeat(copies);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        cfg.path, cfg.host_header
    )
    .into_bytes();

    let mut b = Bench {
        cfg: cfg.clone(),
        request,
        payload,
        opcode,
        frame_len,
        burst,
        measuring: false,
        sending: true,
        hist: Histogram::new(),
        window_msgs: 0,
        total_msgs: 0,
        last_progress: program_start,
    };

    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut rbuf = vec![0u8; READ_BUF_SIZE];
    let mut conns: Vec<Conn> = Vec::with_capacity(cfg.connections);

    // ---- connect + upgrade, at most `connect_concurrency` at a time ----
    let connect_deadline = program_start + cfg.connect_timeout;
    let mut open = 0usize;
    while open < cfg.connections {
        while conns.len() < cfg.connections && conns.len() - open < cfg.connect_concurrency {
            let mut stream = TcpStream::connect(cfg.addr)
                .map_err(|e| format!("connect to {} failed: {e}", cfg.addr))?;
            let token = Token(conns.len());
            poll.registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| format!("epoll register: {e}"))?;
            conns.push(Conn::new(stream));
        }
        let now = Instant::now();
        if now >= connect_deadline {
            return Err(format!(
                "connect timeout: only {open} of {} connections upgraded within {:?}",
                cfg.connections, cfg.connect_timeout
            ));
        }
        poll.poll(
            &mut events,
            Some((connect_deadline - now).min(Duration::from_millis(100))),
        )
        .or_else(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(|e| format!("epoll wait: {e}"))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if c.phase != Phase::Open
                && c.drive_handshake(&b, &mut rbuf)
                    .map_err(|e| format!("connection {i}: {e}"))?
            {
                open += 1;
            }
        }
    }

    // ---- run: warm-up, then the measured window ----
    let run_start = Instant::now();
    let window_start_at = run_start + cfg.warmup;
    let window_end_at = window_start_at + cfg.duration;
    let hard_deadline = window_end_at + Duration::from_secs(5);
    b.last_progress = run_start;
    for c in conns.iter_mut() {
        for _ in 0..cfg.in_flight {
            c.issue(&b, run_start);
        }
    }
    for (i, c) in conns.iter_mut().enumerate() {
        c.flush(&b).map_err(|e| format!("connection {i}: {e}"))?;
    }
    let mut snap_start: Option<CpuSnap> = None;
    let snap_end: CpuSnap;
    loop {
        let now = Instant::now();
        if snap_start.is_none() && now >= window_start_at {
            snap_start = Some(cpu_snap(cfg.server_pid)?);
            b.measuring = true;
        }
        if now >= window_end_at {
            snap_end = cpu_snap(cfg.server_pid)?;
            b.measuring = false;
            b.sending = false;
            break;
        }
        if now >= hard_deadline {
            return Err("overall deadline exceeded".into());
        }
        if now.duration_since(b.last_progress) > cfg.stall_timeout {
            let outstanding: usize = conns.iter().map(|c| c.sent_at.len()).sum();
            return Err(format!(
                "server stalled: no echo completed for {:?} ({outstanding} messages outstanding, {} echoed so far)",
                cfg.stall_timeout, b.total_msgs
            ));
        }
        let next_boundary = if snap_start.is_none() {
            window_start_at
        } else {
            window_end_at
        };
        let timeout = next_boundary
            .saturating_duration_since(now)
            .min(Duration::from_millis(50));
        poll.poll(&mut events, Some(timeout))
            .or_else(|e| {
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| format!("epoll wait: {e}"))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            let step = (|| {
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    c.on_readable(&mut b, &mut rbuf)?;
                }
                if ev.is_error() {
                    if let Ok(Some(e)) = c.stream.take_error() {
                        return Err(format!("socket error: {e}"));
                    }
                }
                if c.out_remaining > 0 || !c.ctrl_out.is_empty() {
                    c.flush(&b)?;
                }
                Ok(())
            })();
            step.map_err(|e| format!("connection {i}: {e}"))?;
        }
    }

    let snap_start = snap_start.ok_or("measured window never started")?;
    let window = snap_end.at.duration_since(snap_start.at).as_secs_f64();
    if b.window_msgs == 0 {
        return Err("no message was echoed during the measured window".into());
    }
    let tck = clock_ticks_per_sec();
    let msgs = b.window_msgs as f64;
    let server_cpu_s = match (snap_start.server, snap_end.server) {
        (Some(a), Some(z)) => Some(z.saturating_sub(a) as f64 / tck),
        _ => None,
    };
    let client_cpu_s = snap_end.client.saturating_sub(snap_start.client) as f64 / tck;
    let us = |ns: u64| ns as f64 / 1000.0;
    let h = &b.hist;
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"url\":{},\"connections\":{},\"size\":{},\"type\":\"{}\",\"in_flight\":{},\
         \"warmup_s\":{:.3},\"window_s\":{:.3},\"messages\":{},\"msgs_per_sec\":{:.1},\
         \"bytes_per_sec\":{:.1},\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\
         \"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}},\"server_pid\":{},\"server_cpu_s\":{},\
         \"server_cpu_util\":{},\"server_cpu_us_per_msg\":{},\"client_cpu_s\":{:.3},\
         \"client_cpu_util\":{:.3},\"client_cpu_us_per_msg\":{:.3},\"clk_tck\":{}}}",
        json_str(&cfg.url),
        cfg.connections,
        cfg.size,
        if cfg.text { "text" } else { "binary" },
        cfg.in_flight,
        cfg.warmup.as_secs_f64(),
        window,
        b.window_msgs,
        msgs / window,
        msgs * cfg.size as f64 / window,
        us(h.quantile(0.50)),
        us(h.quantile(0.90)),
        us(h.quantile(0.99)),
        us(h.quantile(0.999)),
        us(h.max),
        h.mean() / 1000.0,
        cfg.server_pid.map_or("null".to_string(), |p| p.to_string()),
        json_opt(server_cpu_s),
        json_opt(server_cpu_s.map(|s| s / window)),
        json_opt(server_cpu_s.map(|s| s * 1e6 / msgs)),
        client_cpu_s,
        client_cpu_s / window,
        client_cpu_s * 1e6 / msgs,
        tck,
    );
    Ok(out)
}

/// Entry point: parse, run, print JSON or fail with a clear message.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen: {e}");
            exit(2);
        }
    };
    match run(cfg) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        let mut prev_hi = None;
        for idx in 0..Histogram::new().counts.len() {
            let (lo, hi) = Histogram::bounds(idx);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "gap before bucket {idx}");
            }
            assert_eq!(Histogram::index(lo), idx);
            assert_eq!(Histogram::index(hi), idx);
            assert!((hi - lo) as f64 <= lo as f64 / 127.0 + 1.0);
            prev_hi = Some(hi);
            if hi == u64::MAX {
                break;
            }
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01, "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.max, 1_000_000);
    }

    #[test]
    fn client_frame_encoding() {
        let f = build_client_frame(1, b"hi");
        assert_eq!(&f[..2], &[0x81, 0x82]);
        assert_eq!(&f[2..6], &MASK_KEY);
        assert_eq!(f[6] ^ MASK_KEY[0], b'h');
        let big = build_client_frame(2, &vec![0; 70_000]);
        assert_eq!(big[1], 0x80 | 127);
        assert_eq!(big.len(), 70_000 + 14);
        let mid = build_client_frame(2, &[0; 200]);
        assert_eq!(mid[1], 0x80 | 126);
        assert_eq!(header_len(mid[1]), 8);
    }

    #[test]
    fn url_parsing() {
        let (hh, h, p, path) = parse_url("ws://127.0.0.1:9001/x?y").unwrap();
        assert_eq!(
            (hh.as_str(), h.as_str(), p, path.as_str()),
            ("127.0.0.1:9001", "127.0.0.1", 9001, "/x?y")
        );
        let (_, h, p, path) = parse_url("ws://localhost").unwrap();
        assert_eq!((h.as_str(), p, path.as_str()), ("localhost", 80, "/"));
        assert!(parse_url("wss://x/").is_err());
    }

    #[test]
    fn upgrade_response_checks() {
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {HANDSHAKE_ACCEPT}\r\n\r\n"
        );
        assert!(check_upgrade_response(ok.as_bytes()).is_ok());
        assert!(check_upgrade_response(b"HTTP/1.1 400 Bad\r\n\r\n").is_err());
        let ext = ok.replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        );
        assert!(check_upgrade_response(ext.as_bytes()).is_err());
    }

    #[test]
    fn proc_stat_parses_self() {
        assert!(proc_cpu_ticks("self").is_ok());
    }
}
