//! What the load generators share: `loadgen` (HTTP/1.1 echo, mio),
//! `loadgen-h2` (HTTP/2 extended CONNECT echo, h2 on Tokio) and
//! `loadgen-fanout` (HTTP/1.1 fan-out, mio) build the same masked client
//! frames, record latencies in the same [`Histogram`], sample CPU time the
//! same way and print the same JSON line ([`Report`]); they take the same
//! options ([`CommonOptions`]). Echoes are checked by the strict
//! [`EchoParser`], fan-out deliveries by the [`MessageParser`]; the two mio
//! generators open their connections with [`connect_all`] (the HTTP/1.1
//! upgrade of [`Upgrade`]).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::exit;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Result type of the load generators: errors are human-readable messages.
pub type Res<T> = Result<T, String>;

/// Fixed masking key for all client frames (masking is mandatory for
/// clients; a fixed key is fine for a benchmark).
pub const MASK_KEY: [u8; 4] = [0x5a, 0xc3, 0x17, 0xe8];
/// Upper bound on the size of the pre-built burst of back-to-back frames.
pub const MAX_BURST_BYTES: usize = 256 * 1024;
/// Largest `--size` accepted (the benchmark servers accept at least 16 MiB).
pub const MAX_SIZE: usize = 64 << 20;

/// Parses a non-negative number of seconds.
pub fn parse_secs(flag: &str, v: &str) -> Res<Duration> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("{flag}: not a number: {v:?}"))?;
    if !(s.is_finite() && (0.0..1e6).contains(&s)) {
        return Err(format!("{flag}: out of range: {v:?}"));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Parses an integer in `min..=max`.
pub fn parse_count(flag: &str, v: &str, min: usize, max: usize) -> Res<usize> {
    let n: usize = v
        .parse()
        .map_err(|_| format!("{flag}: not an integer: {v:?}"))?;
    if n < min || n > max {
        return Err(format!("{flag}: must be in {min}..={max}, got {n}"));
    }
    Ok(n)
}

/// Splits a `ws://host[:port][/path]` URL into (host:port, host, port, path).
pub fn parse_url(url: &str) -> Res<(String, String, u16, String)> {
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

/// The command-line options both load generators take.
#[derive(Debug, Clone)]
pub struct CommonOptions {
    /// Original `--url`, echoed into the JSON output.
    pub url: String,
    /// `host:port` as written in the URL (the `Host` header or `:authority`).
    pub authority: String,
    /// Request target (path and query) from the URL.
    pub path: String,
    /// Resolved server address.
    pub addr: SocketAddr,
    /// Number of concurrent (TCP) connections.
    pub connections: usize,
    /// Payload size of every message in bytes.
    pub size: usize,
    /// Text (opcode 1) rather than binary (opcode 2) messages.
    pub text: bool,
    /// Messages outstanding per WebSocket.
    pub in_flight: usize,
    /// Warm-up before the measured window.
    pub warmup: Duration,
    /// Length of the measured window.
    pub duration: Duration,
    /// Server process whose CPU time is sampled, if any.
    pub server_pid: Option<u32>,
    /// Bound on establishing all connections (and their WebSockets).
    pub connect_timeout: Duration,
    /// Fatal if no echo at all completes for this long.
    pub stall_timeout: Duration,
    /// Connections being set up at once.
    pub connect_concurrency: usize,
}

impl CommonOptions {
    /// Parses the command line: the shared flags here, every other flag by
    /// `extra`, which gets the flag and a function fetching its value (inline
    /// `--x=v` or the next argument) and returns whether it knew the flag.
    /// `-h`/`--help` prints `usage` and exits 0; `--connections` is limited to
    /// `1..=max_connections`.
    ///
    /// # Errors
    ///
    /// On an unknown flag, a missing or bad value, a missing `--url`, a zero
    /// `--duration` or a URL that does not parse or resolve.
    pub fn parse(
        args: &[String],
        usage: &str,
        max_connections: usize,
        mut extra: impl FnMut(&str, &mut dyn FnMut() -> Res<String>) -> Res<bool>,
    ) -> Res<Self> {
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
                    println!("{usage}");
                    exit(0);
                }
                "--url" => url = Some(value()?),
                "--connections" => connections = parse_count(flag, &value()?, 1, max_connections)?,
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
                _ => {
                    if !extra(flag, &mut value)? {
                        return Err(format!("unknown argument {arg:?}\n{usage}"));
                    }
                }
            }
            i += 1;
        }
        let url = url.ok_or_else(|| format!("--url is required\n{usage}"))?;
        if duration.is_zero() {
            return Err("--duration must be > 0".into());
        }
        let (authority, host, port, path) = parse_url(&url)?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}:{port} resolved to no address"))?;
        Ok(CommonOptions {
            url,
            authority,
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

    /// The [`Report`] of a run with these options.
    pub fn report<'a>(
        &'a self,
        streams_per_connection: Option<usize>,
        counts: &'a EchoCounts,
        start: CpuSnap,
        end: CpuSnap,
    ) -> Report<'a> {
        Report {
            url: &self.url,
            connections: self.connections,
            streams_per_connection,
            size: self.size,
            text: self.text,
            in_flight: self.in_flight,
            warmup: self.warmup,
            window_msgs: counts.window_msgs,
            hist: &counts.hist,
            server_pid: self.server_pid,
            start,
            end,
        }
    }
}

/// What a run sends on every WebSocket: the message, encoded once.
pub struct Messages {
    /// Payload of every message (what the echo must equal).
    pub payload: Vec<u8>,
    /// Opcode of sent messages.
    pub opcode: u8,
    /// Length of one encoded client frame.
    pub frame_len: usize,
    /// `copies` encoded client frames back to back.
    pub burst: Vec<u8>,
    /// Frames in `burst`: `in_flight`, but at most what fits in
    /// [`MAX_BURST_BYTES`] (and at least one).
    pub copies: usize,
}

impl Messages {
    /// Encodes the message of `opts` (`--size`, `--text`/`--binary`) and a
    /// burst of up to `--in-flight` copies.
    pub fn new(opts: &CommonOptions) -> Self {
        let payload = message_payload(opts.size, opts.text);
        let opcode = if opts.text { 1 } else { 2 };
        let frame = build_client_frame(opcode, &payload);
        let frame_len = frame.len();
        let copies = opts.in_flight.min((MAX_BURST_BYTES / frame_len).max(1));
        Messages {
            payload,
            opcode,
            frame_len,
            burst: frame.repeat(copies),
            copies,
        }
    }
}

/// Run-wide echo counters and the flags of the run's phases.
pub struct EchoCounts {
    /// Whether completions are counted (inside the measured window).
    pub measuring: bool,
    /// Whether new messages are issued.
    pub sending: bool,
    /// Latency histogram of messages completed in the window.
    pub hist: Histogram,
    /// Messages completed in the window.
    pub window_msgs: u64,
    /// Messages completed overall (warm-up included).
    pub total_msgs: u64,
    /// Last time any echo completed (stall detection).
    pub last_progress: Instant,
}

impl EchoCounts {
    /// Counters at zero, sending but not measuring yet.
    pub fn new(start: Instant) -> Self {
        EchoCounts {
            measuring: false,
            sending: true,
            hist: Histogram::new(),
            window_msgs: 0,
            total_msgs: 0,
            last_progress: start,
        }
    }

    /// Accounts one echo, of a message sent at `sent`, completed at `now`;
    /// returns whether the next message is to be issued in its place.
    pub fn record_echo(&mut self, sent: Instant, now: Instant) -> bool {
        self.total_msgs += 1;
        self.last_progress = now;
        if self.measuring {
            self.window_msgs += 1;
            self.hist.record_since(sent, now);
        }
        self.sending
    }
}

/// The payload of every message: printable ASCII for text (hence valid
/// UTF-8), a non-repeating byte pattern for binary.
pub fn message_payload(size: usize, text: bool) -> Vec<u8> {
    if text {
        (0..size).map(|i| b'a' + (i % 26) as u8).collect()
    } else {
        (0..size)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
            .collect()
    }
}

/// Builds one masked client frame (FIN set) with the given opcode and payload.
pub fn build_client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    push_client_frame(&mut f, opcode, payload);
    f
}

/// Appends one masked client frame (FIN set, key [`MASK_KEY`]) with the
/// given opcode and payload to `out` (RFC 6455 §5.2, §5.3).
pub fn push_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK_KEY);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK_KEY[i & 3]));
}

/// Total header length implied by the second header byte (server frames are
/// unmasked; a mask bit is rejected later but sized correctly here).
pub fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// The fields of a complete server frame header that the parsers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFrameHeader {
    /// FIN bit.
    pub fin: bool,
    /// Opcode (low four bits of the first byte).
    pub opcode: u8,
    /// Payload length.
    pub len: u64,
}

impl ServerFrameHeader {
    /// Decodes a complete header (at least [`header_len`] bytes) and rejects
    /// what no server may send here: a masking key (RFC 6455 §5.1: "A server
    /// MUST NOT mask any frames that it sends to the client") and RSV bits
    /// (no extension was negotiated, §5.2). Opcodes are the caller's business.
    ///
    /// # Errors
    ///
    /// On a masked frame or RSV bits set.
    pub fn parse(h: &[u8]) -> Res<Self> {
        let rsv = h[0] & 0x70;
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
        Ok(ServerFrameHeader {
            fin: h[0] & 0x80 != 0,
            opcode: h[0] & 0x0f,
            len,
        })
    }
}

/// Log-linear latency histogram over nanoseconds: exact below 256 ns, then
/// 128 sub-buckets per power of two (relative error below 0.8 %).
pub struct Histogram {
    /// Bucket counts.
    counts: Vec<u64>,
    /// Number of recorded values.
    total: u64,
    /// Exact maximum.
    max: u64,
    /// Sum of values, for the mean.
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// Sub-bucket bits: 2^SUB_BITS values per power of two above 2^(SUB_BITS+1).
    const SUB_BITS: u32 = 7;

    /// An empty histogram covering the whole `u64` range.
    pub fn new() -> Self {
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
    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
    }

    /// Records the time from `sent` to `now`.
    pub fn record_since(&mut self, sent: Instant, now: Instant) {
        self.record(u64::try_from(now.duration_since(sent).as_nanos()).unwrap_or(u64::MAX));
    }

    /// Value at quantile `q` (0..=1): midpoint of the bucket holding it,
    /// clamped to the exact maximum.
    pub fn quantile(&self, q: f64) -> u64 {
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

    /// Exact maximum of recorded values.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean of recorded values.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}

/// What the payload bytes of the frame being received belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    /// Part of the echoed data message.
    Data,
    /// A control frame with this opcode.
    Control(u8),
}

/// The owner of an [`EchoParser`]: knows which messages are outstanding and
/// reacts to what the parser found.
pub trait EchoSink {
    /// The payload every message was sent with (what each echo must equal).
    fn payload(&self) -> &[u8];
    /// The opcode every message was sent with (1 text, 2 binary).
    fn opcode(&self) -> u8;
    /// Whether at least one sent message still awaits its echo.
    fn is_awaiting_echo(&self) -> bool;
    /// One complete, correct echo arrived (the oldest outstanding message).
    fn on_echo(&mut self) -> Res<()>;
    /// A ping with this payload arrived; the sink queues the pong.
    fn on_ping(&mut self, payload: &[u8]);
}

/// Minimal but strict parser of the server's frame stream: RSV bits,
/// masking, opcode, length and FIN are checked and every echoed payload is
/// compared byte for byte with what was sent. Fragmented echoes are accepted;
/// a close frame, a reserved opcode, a wrong opcode, length or payload, or a
/// message nobody waits for is an error.
pub struct EchoParser {
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

impl Default for EchoParser {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoParser {
    /// A parser at a frame boundary, outside any message.
    pub fn new() -> Self {
        EchoParser {
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

    /// Processes received bytes of the frame stream.
    ///
    /// # Errors
    ///
    /// On anything but echoes of what the sink sent, pings and pongs.
    pub fn consume(&mut self, mut data: &[u8], sink: &mut impl EchoSink) -> Res<()> {
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
                    self.start_frame(sink)?;
                }
                Some(remaining) => {
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    let chunk = &data[..take];
                    data = &data[take..];
                    match self.frame_kind {
                        FrameKind::Data => {
                            let expected = &sink.payload()[self.msg_off..self.msg_off + take];
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
                        self.end_frame(sink)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Validates a complete header in `hdr` and starts its frame.
    fn start_frame(&mut self, sink: &mut impl EchoSink) -> Res<()> {
        let sent_opcode = sink.opcode();
        let sent_len = sink.payload().len();
        let ServerFrameHeader { fin, opcode, len } = ServerFrameHeader::parse(&self.hdr)?;
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
                    if opcode != sent_opcode {
                        return Err(format!(
                            "echo has opcode {opcode}, sent opcode {sent_opcode}"
                        ));
                    }
                    if !sink.is_awaiting_echo() {
                        return Err(
                            "server sent a message that was not an echo (none outstanding)".into(),
                        );
                    }
                    self.in_message = true;
                    self.msg_off = 0;
                }
                if len > (sent_len - self.msg_off) as u64 {
                    return Err(format!(
                        "echoed message is longer than the {sent_len} bytes sent"
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
            self.end_frame(sink)?;
        }
        Ok(())
    }

    /// Completes the current frame (all payload received).
    fn end_frame(&mut self, sink: &mut impl EchoSink) -> Res<()> {
        self.frame_remaining = None;
        match self.frame_kind {
            FrameKind::Control(0x8) => Err(close_error(&self.ctrl_payload)),
            FrameKind::Control(0x9) => {
                sink.on_ping(&self.ctrl_payload);
                Ok(())
            }
            FrameKind::Control(_) => Ok(()), // unsolicited pong: ignore
            FrameKind::Data => {
                if !self.frame_fin {
                    return Ok(());
                }
                let sent_len = sink.payload().len();
                if self.msg_off != sent_len {
                    return Err(format!(
                        "echoed message has {} bytes, sent {sent_len}",
                        self.msg_off
                    ));
                }
                self.in_message = false;
                sink.on_echo()
            }
        }
    }
}

/// The owner of a [`MessageParser`]: gets every complete data message.
pub trait MessageSink {
    /// A complete data message arrived (opcode 1 text or 2 binary; the
    /// payload of all its fragments).
    ///
    /// # Errors
    ///
    /// If the message is not what the sink expects; the error ends the run.
    fn on_message(&mut self, opcode: u8, payload: &[u8]) -> Res<()>;
    /// A ping with this payload arrived; the sink queues the pong.
    fn on_ping(&mut self, payload: &[u8]);
}

/// Strict parser of a server's frame stream that hands over whole messages,
/// for clients that receive messages they did not send (`loadgen-fanout`'s
/// subscribers). Header checks are [`ServerFrameHeader::parse`]'s; fragmented
/// messages are reassembled (RFC 6455 §5.4), pings handed to the sink,
/// unsolicited pongs ignored. A close frame, a reserved opcode, a
/// continuation outside a message, a data frame inside one, an invalid
/// control frame or a message over the size limit is an error.
///
/// A complete unfragmented frame inside one `consume` call is handed over
/// straight from the input (no copy); anything else is reassembled.
pub struct MessageParser {
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
    /// Opcode of the data message being reassembled, if one is.
    msg_opcode: Option<u8>,
    /// Payload of that message so far.
    msg: Vec<u8>,
    /// Payload of the control frame being received.
    ctrl_payload: Vec<u8>,
    /// Largest message accepted, in bytes.
    max_message_size: usize,
}

impl MessageParser {
    /// A parser at a frame boundary that accepts messages of up to
    /// `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        MessageParser {
            hdr: [0; 14],
            hdr_len: 0,
            frame_remaining: None,
            frame_kind: FrameKind::Data,
            frame_fin: true,
            msg_opcode: None,
            msg: Vec::new(),
            ctrl_payload: Vec::new(),
            max_message_size,
        }
    }

    /// Processes received bytes of the frame stream.
    ///
    /// # Errors
    ///
    /// On a protocol violation (see the type) or an error of the sink.
    pub fn consume(&mut self, mut data: &[u8], sink: &mut impl MessageSink) -> Res<()> {
        while !data.is_empty() {
            let Some(remaining) = self.frame_remaining else {
                if self.hdr_len == 0 && self.msg_opcode.is_none() {
                    if let Some(rest) = self.whole_frame(data, sink)? {
                        data = rest;
                        continue;
                    }
                }
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
                self.start_frame(sink)?;
                continue;
            };
            let take = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let chunk = &data[..take];
            data = &data[take..];
            match self.frame_kind {
                FrameKind::Data => self.msg.extend_from_slice(chunk),
                FrameKind::Control(_) => self.ctrl_payload.extend_from_slice(chunk),
            }
            let left = remaining - take as u64;
            self.frame_remaining = Some(left);
            if left == 0 {
                self.end_frame(sink)?;
            }
        }
        Ok(())
    }

    /// The fast path: if `data` starts with a complete unfragmented text or
    /// binary frame, hands its payload over and returns the bytes after it.
    fn whole_frame<'d>(
        &mut self,
        data: &'d [u8],
        sink: &mut impl MessageSink,
    ) -> Res<Option<&'d [u8]>> {
        if data.len() < 2 || data.len() < header_len(data[1]) {
            return Ok(None);
        }
        let hl = header_len(data[1]);
        let h = ServerFrameHeader::parse(&data[..hl])?;
        let body = &data[hl..];
        if !h.fin || !(h.opcode == 1 || h.opcode == 2) || h.len > body.len() as u64 {
            return Ok(None);
        }
        let len = h.len as usize; // <= body.len(), so it fits
        if len > self.max_message_size {
            return Err(format!(
                "server sent a {len}-byte message, over the {}-byte limit",
                self.max_message_size
            ));
        }
        sink.on_message(h.opcode, &body[..len])?;
        Ok(Some(&body[len..]))
    }

    /// Validates a complete header in `hdr` and starts its frame.
    fn start_frame(&mut self, sink: &mut impl MessageSink) -> Res<()> {
        let ServerFrameHeader { fin, opcode, len } = ServerFrameHeader::parse(&self.hdr)?;
        self.hdr_len = 0;
        match opcode {
            0x0..=0x2 => {
                // RFC 6455 §5.4: a fragmented message is one frame with its
                // opcode and FIN clear, continuations (opcode 0), the last with FIN.
                match (opcode, self.msg_opcode) {
                    (0, None) => {
                        return Err("server sent a continuation frame outside a message".into())
                    }
                    (1 | 2, Some(_)) => {
                        return Err("server started a new message inside a fragmented one".into())
                    }
                    (1 | 2, None) => {
                        self.msg_opcode = Some(opcode);
                        self.msg.clear();
                    }
                    _ => {}
                }
                if len > (self.max_message_size - self.msg.len()) as u64 {
                    return Err(format!(
                        "server sent a message over the {}-byte limit",
                        self.max_message_size
                    ));
                }
                self.frame_kind = FrameKind::Data;
                self.frame_fin = fin;
            }
            0x8..=0xa => {
                // RFC 6455 §5.5: "All control frames MUST have a payload length
                // of 125 bytes or less and MUST NOT be fragmented."
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
            self.end_frame(sink)?;
        }
        Ok(())
    }

    /// Completes the current frame (all payload received).
    fn end_frame(&mut self, sink: &mut impl MessageSink) -> Res<()> {
        self.frame_remaining = None;
        match self.frame_kind {
            FrameKind::Control(0x8) => Err(close_error(&self.ctrl_payload)),
            FrameKind::Control(0x9) => {
                sink.on_ping(&self.ctrl_payload);
                Ok(())
            }
            FrameKind::Control(_) => Ok(()), // unsolicited pong: ignore
            FrameKind::Data => {
                if !self.frame_fin {
                    return Ok(());
                }
                let Some(opcode) = self.msg_opcode.take() else {
                    return Ok(()); // unreachable: start_frame opened the message
                };
                sink.on_message(opcode, &self.msg)
            }
        }
    }
}

/// The error for a close frame received during a run, with its code and reason.
fn close_error(payload: &[u8]) -> String {
    let code = if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]]).to_string()
    } else {
        "none".into()
    };
    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
    format!("server sent a close frame during the run (code {code}, reason {reason:?})")
}

/// `Sec-WebSocket-Key` sent on every HTTP/1.1 connection (the RFC 6455 §1.3 sample).
pub const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` the server must answer for [`HANDSHAKE_KEY`].
pub const HANDSHAKE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Largest HTTP response head accepted during the handshake.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The HTTP/1.1 upgrade request for `path` on `authority` (RFC 6455 §4.1),
/// offering no extension and no subprotocol.
pub fn upgrade_request(path: &str, authority: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Index just past the `\r\n\r\n` ending an HTTP head, if present.
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Checks the server's upgrade response: status 101, `Upgrade: websocket`,
/// the right `Sec-WebSocket-Accept`, and no extension (none was offered).
///
/// # Errors
///
/// Naming the first thing that is wrong.
pub fn check_upgrade_response(head: &[u8]) -> Res<()> {
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

/// Where a client connection is in its opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpgradePhase {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request being sent / response being read.
    Requesting,
    /// Upgraded: frames from here on.
    Open,
}

/// The opening of one client connection on a non-blocking `mio` socket: TCP
/// connect, then the HTTP/1.1 upgrade, driven by readiness events.
pub struct Upgrade {
    /// Where it is.
    phase: UpgradePhase,
    /// Bytes of the upgrade request already written.
    req_written: usize,
    /// Upgrade response head read so far.
    resp: Vec<u8>,
}

impl Default for Upgrade {
    fn default() -> Self {
        Self::new()
    }
}

impl Upgrade {
    /// An opening whose TCP connect was just started.
    pub fn new() -> Self {
        Upgrade {
            phase: UpgradePhase::Connecting,
            req_written: 0,
            resp: Vec::new(),
        }
    }

    /// Whether the upgrade completed.
    pub fn is_open(&self) -> bool {
        self.phase == UpgradePhase::Open
    }

    /// Advances connect and upgrade as far as the socket allows (after a
    /// readiness event); returns whether the connection is now open.
    /// `TCP_NODELAY` is set once connected.
    ///
    /// # Errors
    ///
    /// On a failed connect, a refused or wrong upgrade, data sent before any
    /// message, or a closed connection.
    pub fn drive(
        &mut self,
        stream: &mut TcpStream,
        addr: SocketAddr,
        request: &[u8],
        rbuf: &mut [u8],
    ) -> Res<bool> {
        if self.phase == UpgradePhase::Open {
            return Ok(true);
        }
        if self.phase == UpgradePhase::Connecting {
            if let Some(e) = stream.take_error().map_err(|e| format!("connect: {e}"))? {
                return Err(format!("connect to {addr} failed: {e}"));
            }
            match stream.peer_addr() {
                Ok(_) => {
                    let _ = stream.set_nodelay(true);
                    self.phase = UpgradePhase::Requesting;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::NotConnected
                        || e.raw_os_error() == Some(libc::EINPROGRESS) =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(format!("connect to {addr} failed: {e}")),
            }
        }
        while self.req_written < request.len() {
            match stream.write(&request[self.req_written..]) {
                Ok(n) => self.req_written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("sending upgrade request failed: {e}")),
            }
        }
        loop {
            match stream.read(rbuf) {
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
                        self.phase = UpgradePhase::Open;
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

/// `Poll::poll` that treats `EINTR` as an empty wake-up.
///
/// # Errors
///
/// On any other epoll failure.
pub fn poll_events(poll: &mut Poll, events: &mut Events, timeout: Duration) -> Res<()> {
    match poll.poll(events, Some(timeout)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        Err(e) => Err(format!("epoll wait: {e}")),
    }
}

/// Opens `count` WebSocket connections to `opts.addr` with `request`, at most
/// `opts.connect_concurrency` connects + upgrades in progress at once (which also keeps
/// the server's listen backlog from overflowing), all within `deadline`.
/// Connection `i` is registered with `Token(i)` for reading and writing and
/// is element `i` of the result.
///
/// # Errors
///
/// On the first connection that fails (naming it) or at the deadline.
pub fn connect_all(
    poll: &mut Poll,
    events: &mut Events,
    opts: &CommonOptions,
    request: &[u8],
    count: usize,
    deadline: Instant,
    rbuf: &mut [u8],
) -> Res<Vec<TcpStream>> {
    let (addr, concurrency) = (opts.addr, opts.connect_concurrency);
    let mut streams: Vec<TcpStream> = Vec::with_capacity(count);
    let mut upgrades: Vec<Upgrade> = Vec::with_capacity(count);
    let mut open = 0usize;
    while open < count {
        while streams.len() < count && streams.len() - open < concurrency {
            let mut stream =
                TcpStream::connect(addr).map_err(|e| format!("connect to {addr} failed: {e}"))?;
            poll.registry()
                .register(
                    &mut stream,
                    Token(streams.len()),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| format!("epoll register: {e}"))?;
            streams.push(stream);
            upgrades.push(Upgrade::new());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "connect timeout: only {open} of {count} connections upgraded in time"
            ));
        }
        poll_events(
            poll,
            events,
            (deadline - now).min(Duration::from_millis(100)),
        )?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(up) = upgrades.get_mut(i) else {
                continue;
            };
            if up.is_open() {
                continue;
            }
            if up
                .drive(&mut streams[i], addr, request, rbuf)
                .map_err(|e| format!("connection {i}: {e}"))?
            {
                open += 1;
            }
        }
    }
    Ok(streams)
}

/// Raises the soft `RLIMIT_NOFILE` to at least `need` (at most the hard
/// limit) and returns the soft limit in force.
///
/// # Errors
///
/// If the limit cannot be read or set.
pub fn raise_nofile(need: libc::rlim_t) -> Res<libc::rlim_t> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!("getrlimit: {}", io::Error::last_os_error()));
    }
    if lim.rlim_cur >= need {
        return Ok(lim.rlim_cur);
    }
    lim.rlim_cur = need.min(lim.rlim_max);
    // SAFETY: `lim` is a valid rlimit with rlim_cur <= rlim_max.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!("setrlimit: {}", io::Error::last_os_error()));
    }
    Ok(lim.rlim_cur)
}

/// utime+stime of a process (all threads), in clock ticks, from /proc/PID/stat.
pub fn proc_cpu_ticks(pid: &str) -> Res<u64> {
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
pub fn clock_ticks_per_sec() -> f64 {
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
pub struct CpuSnap {
    /// When the snapshot was taken.
    pub at: Instant,
    /// Server utime+stime in ticks.
    pub server: Option<u64>,
    /// Own utime+stime in ticks.
    pub client: u64,
}

/// Takes a [`CpuSnap`].
pub fn cpu_snap(server_pid: Option<u32>) -> Res<CpuSnap> {
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
pub fn json_str(s: &str) -> String {
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

/// Everything the JSON result line is made of.
pub struct Report<'a> {
    /// `--url` as given.
    pub url: &'a str,
    /// TCP connections.
    pub connections: usize,
    /// WebSockets per HTTP/2 connection (`None` for HTTP/1.1, where it is 1
    /// and the field is left out).
    pub streams_per_connection: Option<usize>,
    /// Payload bytes per message.
    pub size: usize,
    /// Text rather than binary messages.
    pub text: bool,
    /// Messages outstanding per WebSocket.
    pub in_flight: usize,
    /// Warm-up before the window.
    pub warmup: Duration,
    /// Messages completed in the window.
    pub window_msgs: u64,
    /// Latencies of those messages.
    pub hist: &'a Histogram,
    /// Server process sampled, if any.
    pub server_pid: Option<u32>,
    /// CPU snapshot at window start.
    pub start: CpuSnap,
    /// CPU snapshot at window end.
    pub end: CpuSnap,
}

impl Report<'_> {
    /// The JSON line: throughput, latency quantiles and CPU per message.
    ///
    /// # Errors
    ///
    /// If no message completed in the window.
    pub fn to_json(&self) -> Res<String> {
        self.to_json_with("")
    }

    /// [`Report::to_json`] with `extra` (`"name":value` pairs joined by
    /// commas, or empty) appended to the object.
    ///
    /// # Errors
    ///
    /// If no message completed in the window.
    pub fn to_json_with(&self, extra: &str) -> Res<String> {
        let window = self.end.at.duration_since(self.start.at).as_secs_f64();
        if self.window_msgs == 0 {
            return Err("no message was echoed during the measured window".into());
        }
        let tck = clock_ticks_per_sec();
        let msgs = self.window_msgs as f64;
        let server_cpu_s = match (self.start.server, self.end.server) {
            (Some(a), Some(z)) => Some(z.saturating_sub(a) as f64 / tck),
            _ => None,
        };
        let client_cpu_s = self.end.client.saturating_sub(self.start.client) as f64 / tck;
        let us = |ns: u64| ns as f64 / 1000.0;
        let h = self.hist;
        let streams = match self.streams_per_connection {
            Some(m) => format!(
                "\"transport\":\"h2\",\"streams_per_connection\":{m},\"streams\":{},",
                m * self.connections
            ),
            None => String::new(),
        };
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"url\":{},\"connections\":{},{streams}\"size\":{},\"type\":\"{}\",\"in_flight\":{},\
             \"warmup_s\":{:.3},\"window_s\":{:.3},\"messages\":{},\"msgs_per_sec\":{:.1},\
             \"bytes_per_sec\":{:.1},\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\
             \"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}},\"server_pid\":{},\"server_cpu_s\":{},\
             \"server_cpu_util\":{},\"server_cpu_us_per_msg\":{},\"client_cpu_s\":{:.3},\
             \"client_cpu_util\":{:.3},\"client_cpu_us_per_msg\":{:.3},\"clk_tck\":{}{}{}}}",
            json_str(self.url),
            self.connections,
            self.size,
            if self.text { "text" } else { "binary" },
            self.in_flight,
            self.warmup.as_secs_f64(),
            window,
            self.window_msgs,
            msgs / window,
            msgs * self.size as f64 / window,
            us(h.quantile(0.50)),
            us(h.quantile(0.90)),
            us(h.quantile(0.99)),
            us(h.quantile(0.999)),
            us(h.max),
            h.mean() / 1000.0,
            self.server_pid
                .map_or("null".to_string(), |p| p.to_string()),
            json_opt(server_cpu_s),
            json_opt(server_cpu_s.map(|s| s / window)),
            json_opt(server_cpu_s.map(|s| s * 1e6 / msgs)),
            client_cpu_s,
            client_cpu_s / window,
            client_cpu_s * 1e6 / msgs,
            tck,
            if extra.is_empty() { "" } else { "," },
            extra,
        );
        Ok(out)
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
        assert_eq!(h.max(), 1_000_000);
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

    /// `CommonOptions::parse` with an extra `--extra N` flag.
    fn parse_with_extra(args: &[&str]) -> Res<(CommonOptions, Option<String>)> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut extra = None;
        let opts = CommonOptions::parse(&args, "USAGE", 10, |flag, value| {
            if flag != "--extra" {
                return Ok(false);
            }
            extra = Some(value()?);
            Ok(true)
        })?;
        Ok((opts, extra))
    }

    #[test]
    fn common_options_parse() {
        let (o, extra) = parse_with_extra(&[
            "--url=ws://127.0.0.1:9001/e",
            "--extra",
            "7",
            "--binary",
            "--connections=10",
            "--duration",
            "0.5",
        ])
        .unwrap();
        assert_eq!(extra.as_deref(), Some("7"));
        assert_eq!(
            (o.authority.as_str(), o.path.as_str()),
            ("127.0.0.1:9001", "/e")
        );
        assert_eq!(
            (o.connections, o.text, o.size, o.in_flight),
            (10, false, 20, 1)
        );
        assert_eq!(o.duration, Duration::from_millis(500));
        assert_eq!(o.connect_concurrency, 128);
        let err = |args: &[&str]| parse_with_extra(args).unwrap_err();
        assert_eq!(
            err(&["--url", "ws://x/", "--bogus"]),
            "unknown argument \"--bogus\"\nUSAGE"
        );
        assert_eq!(err(&["--duration", "1"]), "--url is required\nUSAGE");
        assert_eq!(
            err(&["--url", "ws://x/", "--duration", "0"]),
            "--duration must be > 0"
        );
        assert_eq!(
            err(&["--url", "ws://x/", "--extra"]),
            "--extra needs a value"
        );
        assert_eq!(
            err(&["--url", "ws://x/", "--connections", "11"]),
            "--connections: must be in 1..=10, got 11"
        );
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

    /// Counts what an [`EchoParser`] reports.
    struct Counter {
        /// Messages still awaiting an echo.
        outstanding: usize,
        /// Echoes seen.
        echoes: usize,
        /// Ping payloads seen.
        pings: Vec<Vec<u8>>,
    }

    impl EchoSink for Counter {
        fn payload(&self) -> &[u8] {
            b"hello"
        }
        fn opcode(&self) -> u8 {
            1
        }
        fn is_awaiting_echo(&self) -> bool {
            self.outstanding > 0
        }
        fn on_echo(&mut self) -> Res<()> {
            self.outstanding -= 1;
            self.echoes += 1;
            Ok(())
        }
        fn on_ping(&mut self, payload: &[u8]) {
            self.pings.push(payload.to_vec());
        }
    }

    #[test]
    fn parser_accepts_fragmented_echo_split_anywhere_and_pings() {
        // "hello" as "hel" + "lo" (RFC 6455 §5.7), a ping between, fed byte by byte.
        let stream = b"\x01\x03hel\x89\x01p\x80\x02lo\x81\x05hello";
        let mut sink = Counter {
            outstanding: 2,
            echoes: 0,
            pings: Vec::new(),
        };
        let mut parser = EchoParser::new();
        for b in stream.chunks(1) {
            parser.consume(b, &mut sink).unwrap();
        }
        assert_eq!(sink.echoes, 2);
        assert_eq!(sink.pings, vec![b"p".to_vec()]);
    }

    #[test]
    fn parser_rejects_wrong_payload_close_and_unrequested_echo() {
        let mut sink = Counter {
            outstanding: 1,
            echoes: 0,
            pings: Vec::new(),
        };
        assert!(EchoParser::new()
            .consume(b"\x81\x05hellp", &mut sink)
            .is_err());
        assert!(EchoParser::new()
            .consume(b"\x88\x02\x03\xe8", &mut sink)
            .is_err());
        sink.outstanding = 0;
        assert!(EchoParser::new()
            .consume(b"\x81\x05hello", &mut sink)
            .is_err());
    }

    /// Collects what a [`MessageParser`] hands over.
    #[derive(Default)]
    struct Collector {
        /// (opcode, payload) of every message.
        messages: Vec<(u8, Vec<u8>)>,
        /// Ping payloads.
        pings: Vec<Vec<u8>>,
    }

    impl MessageSink for Collector {
        fn on_message(&mut self, opcode: u8, payload: &[u8]) -> Res<()> {
            self.messages.push((opcode, payload.to_vec()));
            Ok(())
        }
        fn on_ping(&mut self, payload: &[u8]) {
            self.pings.push(payload.to_vec());
        }
    }

    #[test]
    fn message_parser_reassembles_fragments_split_anywhere() {
        // "hello" as "hel" + "lo" (RFC 6455 §5.7) with a ping between, then a
        // 200-byte binary message (16-bit length) and a whole text frame.
        let mut stream = b"\x01\x03hel\x89\x01p\x80\x02lo\x82\x7e\x00\xc8".to_vec();
        stream.extend_from_slice(&[7; 200]);
        stream.extend_from_slice(b"\x81\x02ok");
        for chunk in [1, 3, stream.len()] {
            let mut sink = Collector::default();
            let mut parser = MessageParser::new(1000);
            for piece in stream.chunks(chunk) {
                parser.consume(piece, &mut sink).unwrap();
            }
            assert_eq!(
                sink.messages,
                vec![
                    (1, b"hello".to_vec()),
                    (2, vec![7; 200]),
                    (1, b"ok".to_vec())
                ]
            );
            assert_eq!(sink.pings, vec![b"p".to_vec()]);
        }
    }

    #[test]
    fn message_parser_rejects_close_masked_oversized_and_stray_continuation() {
        let fails = |bytes: &[u8]| {
            MessageParser::new(4)
                .consume(bytes, &mut Collector::default())
                .is_err()
        };
        assert!(fails(b"\x88\x02\x03\xe8")); // close 1000
        assert!(fails(b"\x81\x81abcd\x00")); // masked
        assert!(fails(b"\x81\x05hello")); // over the 4-byte limit
        assert!(fails(b"\x80\x01a")); // continuation outside a message
        assert!(fails(b"\x01\x01a\x81\x01b")); // new message inside one
        assert!(fails(b"\xc1\x01a")); // RSV1
        assert!(!fails(b"\x8a\x00\x81\x04abcd")); // pong ignored, 4 bytes fit
    }
}
