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
use std::io::{self, Read, Write};
use std::process::exit;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Poll};
use wsline_bench::load::{
    build_client_frame, connect_all, cpu_snap, poll_events, upgrade_request, CommonOptions,
    CpuSnap, EchoCounts, EchoParser, EchoSink, Messages, Res,
};

/// Size of the single read buffer shared by all connections.
const READ_BUF_SIZE: usize = 256 * 1024;

/// Parsed command line: `loadgen` takes only the shared options.
type Config = CommonOptions;

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

/// Parses the command line into a [`Config`].
fn parse_args(args: &[String]) -> Res<Config> {
    CommonOptions::parse(args, usage(), 1_000_000, |_, _| Ok(false))
}

/// One client connection.
struct Conn {
    /// The socket (upgraded).
    stream: TcpStream,

    /// Offset of the next byte to send within the current frame (< frame len).
    out_pos: usize,
    /// Bytes of data frames queued but not yet written.
    out_remaining: u64,
    /// Control frames (pong replies) waiting for a frame boundary.
    ctrl_out: Vec<u8>,
    /// Send time of every outstanding message, oldest first.
    sent_at: VecDeque<Instant>,

    /// Parser of the echoed frame stream.
    parser: EchoParser,
}

/// Everything the event loop shares across connections.
struct Bench {
    /// Payload of every message (what the echo must equal).
    payload: Vec<u8>,
    /// Opcode of sent messages.
    opcode: u8,
    /// Length of one encoded client frame.
    frame_len: usize,
    /// Several encoded client frames back to back.
    burst: Vec<u8>,
    /// Echo counters and phase flags.
    counts: EchoCounts,
}

/// Outcome of draining a socket.
type Step = Res<()>;

impl Conn {
    /// A connection whose upgrade completed.
    fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            out_pos: 0,
            out_remaining: 0,
            ctrl_out: Vec::new(),
            sent_at: VecDeque::new(),
            parser: EchoParser::new(),
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
    fn consume(&mut self, data: &[u8], b: &mut Bench) -> Step {
        let mut sink = ConnSink {
            sent_at: &mut self.sent_at,
            out_remaining: &mut self.out_remaining,
            ctrl_out: &mut self.ctrl_out,
            b,
        };
        self.parser.consume(data, &mut sink)
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
}

/// A connection's outstanding messages and output, as its [`EchoParser`]
/// sees them.
struct ConnSink<'a> {
    /// Send time of every outstanding message, oldest first.
    sent_at: &'a mut VecDeque<Instant>,
    /// Bytes of data frames queued but not yet written.
    out_remaining: &'a mut u64,
    /// Control frames (pong replies) waiting for a frame boundary.
    ctrl_out: &'a mut Vec<u8>,
    /// Run-wide state and counters.
    b: &'a mut Bench,
}

impl EchoSink for ConnSink<'_> {
    fn payload(&self) -> &[u8] {
        &self.b.payload
    }

    fn opcode(&self) -> u8 {
        self.b.opcode
    }

    fn is_awaiting_echo(&self) -> bool {
        !self.sent_at.is_empty()
    }

    /// Accounts one fully echoed message and issues the next one.
    fn on_echo(&mut self) -> Step {
        let now = Instant::now();
        // Checked when the echo's first frame arrived; still handled here
        // rather than unwrapped because it is driven by peer input.
        let sent = self
            .sent_at
            .pop_front()
            .ok_or("server sent a message that was not an echo (none outstanding)")?;
        let b = &mut *self.b;
        if b.counts.record_echo(sent, now) {
            self.sent_at.push_back(now);
            *self.out_remaining += b.frame_len as u64;
        }
        Ok(())
    }

    fn on_ping(&mut self, payload: &[u8]) {
        self.ctrl_out
            .extend_from_slice(&build_client_frame(0xa, payload));
    }
}

/// Runs the benchmark and returns the JSON result line.
fn run(cfg: Config) -> Res<String> {
    let program_start = Instant::now();
    let Messages {
        payload,
        opcode,
        frame_len,
        burst,
        copies: _,
    } = Messages::new(&cfg);
    let request = upgrade_request(&cfg.path, &cfg.authority);

    let mut b = Bench {
        payload,
        opcode,
        frame_len,
        burst,
        counts: EchoCounts::new(program_start),
    };

    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut rbuf = vec![0u8; READ_BUF_SIZE];
    // ---- connect + upgrade, at most `connect_concurrency` at a time ----
    let mut conns: Vec<Conn> = connect_all(
        &mut poll,
        &mut events,
        &cfg,
        &request,
        cfg.connections,
        program_start + cfg.connect_timeout,
        &mut rbuf,
    )?
    .into_iter()
    .map(Conn::new)
    .collect();

    // ---- run: warm-up, then the measured window ----
    let run_start = Instant::now();
    let window_start_at = run_start + cfg.warmup;
    let window_end_at = window_start_at + cfg.duration;
    let hard_deadline = window_end_at + Duration::from_secs(5);
    b.counts.last_progress = run_start;
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
            b.counts.measuring = true;
        }
        if now >= window_end_at {
            snap_end = cpu_snap(cfg.server_pid)?;
            b.counts.measuring = false;
            b.counts.sending = false;
            break;
        }
        if now >= hard_deadline {
            return Err("overall deadline exceeded".into());
        }
        if now.duration_since(b.counts.last_progress) > cfg.stall_timeout {
            let outstanding: usize = conns.iter().map(|c| c.sent_at.len()).sum();
            return Err(format!(
                "server stalled: no echo completed for {:?} ({outstanding} messages outstanding, {} echoed so far)",
                cfg.stall_timeout, b.counts.total_msgs
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
        poll_events(&mut poll, &mut events, timeout)?;
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
    cfg.report(None, &b.counts, snap_start, snap_end).to_json()
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
