//! `loadgen-fanout`: a single-threaded fan-out (pub/sub broadcast) load
//! generator.
//!
//! It opens `--subscribers N` WebSocket connections and one publisher
//! connection to the same room (`ws://HOST:PORT/<room>`: the path names the
//! room) of a server that delivers every message a client sends to every
//! *other* client in that room, unchanged. The publisher sends messages whose
//! payload starts with a stamp — sequence number and send time — and every
//! subscriber checks each message it gets and records publish-to-receive
//! latency. During a `--duration` window that follows a `--warmup` it
//! measures delivered messages per second (summed over subscribers),
//! publishes per second, latency and, with `--server-pid`, the server's CPU
//! time per delivered message. It prints one JSON line.
//!
//! Design notes:
//! * one thread, `mio` (edge-triggered epoll), non-blocking sockets with
//!   `TCP_NODELAY`; connects and upgrades `--connect-concurrency` at a time
//!   (so 10,000 connects do not overflow the server's listen backlog), then
//!   waits `--settle` before the first publish;
//! * payload: 8 lowercase hex digits of sequence number, 12 of send time (ns
//!   since the generator started, monotonic), then the fixed padding of
//!   `loadgen` up to `--size` bytes — ASCII, hence valid UTF-8 for text;
//! * flow control is a window: at most `--window K` messages are in flight,
//!   a message leaving the window once *every* subscriber has received it
//!   (or has received a later one, which marks it lost for that subscriber).
//!   So no subscriber is ever more than K messages behind, and the server
//!   buffers at most K messages per connection. `--rate R` additionally paces
//!   publishes (at most R per second);
//! * server frames are parsed strictly ([`MessageParser`]); each message
//!   must have the published opcode, length, padding and the send time the
//!   publisher recorded for its sequence number; pings are answered. A
//!   close frame, EOF, a message back to the publisher, a message that was
//!   never published, or a stall is fatal (exit 1);
//! * per subscriber, messages must arrive in publish order: a sequence number
//!   ahead of the next expected one marks the skipped ones missing; a missing
//!   one arriving later counts as out of order; one received twice as a
//!   duplicate; missing ones never received, and those still not received
//!   when the drain after the window ends (nothing delivered for `--drain`
//!   seconds), as lost. All three are reported, and a
//!   non-zero one sets `"delivery_ok":false` and prints a warning.

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::process::exit;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Poll};
use wsline_bench::load::{
    connect_all, cpu_snap, message_payload, parse_count, parse_secs, poll_events,
    push_client_frame, raise_nofile, upgrade_request, CommonOptions, CpuSnap, Histogram,
    MessageParser, MessageSink, Report, Res,
};

/// Size of the single read buffer shared by all connections.
const READ_BUF_SIZE: usize = 256 * 1024;
/// Hex digits of the sequence number at the start of every payload.
const SEQ_DIGITS: usize = 8;
/// Hex digits of the send time (ns) that follow it.
const TIME_DIGITS: usize = 12;
/// Bytes of the stamp (sequence number and send time) opening every payload.
const STAMP_LEN: usize = SEQ_DIGITS + TIME_DIGITS;
/// Largest subscriber count accepted.
const MAX_SUBSCRIBERS: usize = 100_000;
/// Room joined when neither `--url` nor `--room` names one.
const DEFAULT_ROOM: &str = "bench";

/// Parsed command line.
#[derive(Debug, Clone)]
struct Config {
    /// The options shared with `loadgen` (`connections` = subscribers + 1,
    /// `in_flight` = the window).
    common: CommonOptions,
    /// Subscriber connections.
    subscribers: usize,
    /// Messages in flight at most.
    window: usize,
    /// Publishes per second at most, if paced.
    rate: Option<f64>,
    /// Wait between the last upgrade and the first publish.
    settle: Duration,
    /// After the window: how long without any delivery ends the wait for
    /// the messages still in flight (the rest count as lost).
    drain: Duration,
}

/// The usage text.
fn usage() -> &'static str {
    "usage: loadgen-fanout (--port PORT [--room NAME] | --url ws://HOST:PORT/ROOM) [options]\n\
     \n\
     options:\n\
     \x20 --subscribers N        subscriber connections (default 1000)\n\
     \x20 --size BYTES           payload bytes per message, >= 20 (default 20)\n\
     \x20 --text | --binary      message type (default text)\n\
     \x20 --window K             messages in flight at most; one leaves the window when\n\
     \x20                        every subscriber got it (default 16)\n\
     \x20 --rate MSGS_PER_S      also pace publishes to at most this rate (default: unpaced)\n\
     \x20 --settle SECS          wait after the last upgrade before publishing (default 1)\n\
     \x20 --warmup SECS          warm-up before measuring (default 1)\n\
     \x20 --duration SECS        measured window (default 5)\n\
     \x20 --drain SECS           after the window, wait for in-flight messages until\n\
     \x20                        none is delivered for this long (default 5)\n\
     \x20 --server-pid PID       sample this process's CPU time (/proc/PID/stat)\n\
     \x20 --connect-timeout SECS bound on connecting + upgrading all (default 60)\n\
     \x20 --stall-timeout SECS   fail if no message is delivered for this long (default 10)\n\
     \x20 --connect-concurrency N  connects/handshakes in progress at once (default 64)\n\
     \n\
     The room is the URL path (--room NAME means /NAME; default /bench). Prints one\n\
     JSON line; exits 1 with a message on stderr if the server misbehaves."
}

/// Parses the command line into a [`Config`]: `--port`/`--room` become
/// `--url`, the rest goes through [`CommonOptions::parse`].
fn parse_args(args: &[String]) -> Res<Config> {
    let mut port = None;
    let mut room = None;
    // Defaults that differ from loadgen's; later flags override them.
    let mut rest: Vec<String> = ["--connect-timeout", "60", "--connect-concurrency", "64"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--port" => port = Some(parse_count(flag, &value()?, 1, 65_535)?),
            "--room" => room = Some(value()?),
            "--connections" | "--in-flight" => {
                return Err(format!(
                    "{flag} is not a loadgen-fanout option (use --subscribers / --window)\n{}",
                    usage()
                ))
            }
            _ => rest.push(arg.clone()),
        }
    }
    if let Some(port) = port {
        if rest.iter().any(|a| a == "--url" || a.starts_with("--url=")) {
            return Err("give either --port or --url, not both".into());
        }
        let room = room.unwrap_or_else(|| DEFAULT_ROOM.to_string());
        rest.push(format!("--url=ws://127.0.0.1:{port}/{room}"));
    } else if room.is_some() {
        return Err("--room needs --port (with --url, the path is the room)".into());
    }

    let mut subscribers = 1000;
    let mut window = 16;
    let mut rate = None;
    let mut settle = Duration::from_secs(1);
    let mut drain = Duration::from_secs(5);
    let mut common = CommonOptions::parse(&rest, usage(), usize::MAX, |flag, value| {
        match flag {
            "--subscribers" => subscribers = parse_count(flag, &value()?, 1, MAX_SUBSCRIBERS)?,
            "--window" => window = parse_count(flag, &value()?, 1, 1_000_000)?,
            "--rate" => {
                let v = value()?;
                let r: f64 = v
                    .parse()
                    .map_err(|_| format!("--rate: not a number: {v:?}"))?;
                if !(r.is_finite() && r > 0.0) {
                    return Err(format!("--rate must be > 0, got {v:?}"));
                }
                rate = Some(r);
            }
            "--settle" => settle = parse_secs(flag, &value()?)?,
            "--drain" => drain = parse_secs(flag, &value()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if common.size < STAMP_LEN {
        return Err(format!(
            "--size must be at least {STAMP_LEN} (the sequence number and send time)"
        ));
    }
    common.connections = subscribers + 1;
    common.in_flight = window;
    Ok(Config {
        common,
        subscribers,
        window,
        rate,
        settle,
        drain,
    })
}

/// Writes the stamp of message `seq` sent at `sent_ns` into `out`
/// (lowercase hex, [`STAMP_LEN`] bytes).
fn encode_stamp(out: &mut [u8], seq: u64, sent_ns: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out[..SEQ_DIGITS].iter_mut().enumerate() {
        *b = HEX[(seq >> (4 * (SEQ_DIGITS - 1 - i)) & 0xf) as usize];
    }
    for (i, b) in out[SEQ_DIGITS..STAMP_LEN].iter_mut().enumerate() {
        *b = HEX[(sent_ns >> (4 * (TIME_DIGITS - 1 - i)) & 0xf) as usize];
    }
}

/// Reads a stamp back: (sequence number, send time in ns), or `None` if it
/// is not [`STAMP_LEN`] lowercase hex digits.
fn decode_stamp(stamp: &[u8]) -> Option<(u64, u64)> {
    let hex = |digits: &[u8]| {
        digits.iter().try_fold(0u64, |acc, &d| {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                _ => return None,
            };
            Some(acc << 4 | u64::from(v))
        })
    };
    let stamp = stamp.get(..STAMP_LEN)?;
    Some((hex(&stamp[..SEQ_DIGITS])?, hex(&stamp[SEQ_DIGITS..])?))
}

/// A published message that has not left the window yet.
struct InFlight {
    /// When it was published (ns since the generator started).
    sent_ns: u64,
    /// Subscribers that neither received it nor skipped past it yet.
    unresolved: usize,
}

/// The publisher's window and every delivery counter.
struct Ledger {
    /// Subscriber count (each message must reach all of them).
    subscribers: usize,
    /// Oldest sequence number still in flight (== `next_seq` when none is).
    base: u64,
    /// Sequence number of the next message to publish.
    next_seq: u64,
    /// The messages `base..next_seq`, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Whether deliveries and publishes are counted (inside the window).
    measuring: bool,
    /// Publish-to-receive latency of messages delivered in the window.
    hist: Histogram,
    /// Messages published in the window.
    window_publishes: u64,
    /// Messages delivered in the window (summed over subscribers).
    window_deliveries: u64,
    /// Messages delivered overall.
    total_deliveries: u64,
    /// Messages received a second time by the same subscriber.
    duplicates: u64,
    /// Messages that arrived after a later one (per subscriber).
    out_of_order: u64,
    /// Last time (ns since start) a message was delivered, or published
    /// into an empty window.
    last_progress_ns: u64,
}

impl Ledger {
    /// An empty window for `subscribers` subscribers.
    fn new(subscribers: usize) -> Self {
        Ledger {
            subscribers,
            base: 0,
            next_seq: 0,
            in_flight: VecDeque::new(),
            measuring: false,
            hist: Histogram::new(),
            window_publishes: 0,
            window_deliveries: 0,
            total_deliveries: 0,
            duplicates: 0,
            out_of_order: 0,
            last_progress_ns: 0,
        }
    }

    /// Messages published and not yet received (or skipped) by everyone.
    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Accounts message `next_seq` as published at `sent_ns`; returns its
    /// sequence number.
    fn publish(&mut self, sent_ns: u64) -> u64 {
        if self.in_flight.is_empty() {
            self.last_progress_ns = sent_ns;
        }
        self.in_flight.push_back(InFlight {
            sent_ns,
            unresolved: self.subscribers,
        });
        if self.measuring {
            self.window_publishes += 1;
        }
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// One subscriber is done with message `seq` (received or skipped);
    /// messages everybody is done with leave the window.
    fn resolve(&mut self, seq: u64) -> Res<()> {
        let slot = seq
            .checked_sub(self.base)
            .and_then(|i| self.in_flight.get_mut(i as usize))
            .ok_or_else(|| format!("internal: message {seq} resolved outside the window"))?;
        slot.unresolved -= 1;
        while self.in_flight.front().is_some_and(|m| m.unresolved == 0) {
            self.in_flight.pop_front();
            self.base += 1;
        }
        Ok(())
    }

    /// Accounts message `seq`, stamped `sent_ns`, received at `now_ns` by a
    /// subscriber expecting `next` with `missing` skipped over.
    fn receive(
        &mut self,
        next: &mut u64,
        missing: &mut BTreeSet<u64>,
        seq: u64,
        sent_ns: u64,
        now_ns: u64,
    ) -> Res<()> {
        if seq >= self.next_seq {
            return Err(format!(
                "received message {seq}, which was never published ({} so far)",
                self.next_seq
            ));
        }
        if let Some(m) = seq
            .checked_sub(self.base)
            .and_then(|i| self.in_flight.get(i as usize))
        {
            if m.sent_ns != sent_ns {
                return Err(format!(
                    "message {seq} carries send time {sent_ns} ns, it was published at {} ns",
                    m.sent_ns
                ));
            }
        }
        if seq >= *next {
            // In order, or ahead: the ones skipped over are missing (lost
            // unless they turn up later).
            for skipped in *next..seq {
                missing.insert(skipped);
                self.resolve(skipped)?;
            }
            self.resolve(seq)?;
            *next = seq + 1;
        } else if missing.remove(&seq) {
            self.out_of_order += 1;
        } else {
            self.duplicates += 1;
            return Ok(());
        }
        self.total_deliveries += 1;
        self.last_progress_ns = now_ns;
        if self.measuring {
            self.window_deliveries += 1;
            self.hist.record(now_ns.saturating_sub(sent_ns));
        }
        Ok(())
    }
}

/// What every message must look like, and the ledger it is accounted in.
struct Run {
    /// Payload of every message apart from its stamp (the first
    /// [`STAMP_LEN`] bytes).
    template: Vec<u8>,
    /// Opcode of every message.
    opcode: u8,
    /// The window and counters.
    ledger: Ledger,
    /// When the generator started (the zero of every timestamp).
    start: Instant,
}

/// One connection: a subscriber or the publisher.
struct Conn {
    /// The socket (upgraded).
    stream: TcpStream,
    /// Parser of what the server sends on it.
    parser: MessageParser,
    /// Whole frames waiting to be written (messages, pongs).
    out: Vec<u8>,
    /// Bytes of `out` already written.
    out_pos: usize,
    /// Next sequence number expected (subscribers).
    next_seq: u64,
    /// Sequence numbers skipped over and not received since (subscribers).
    missing: BTreeSet<u64>,
}

impl Conn {
    /// A connection whose upgrade completed.
    fn new(stream: TcpStream, max_message_size: usize) -> Self {
        Conn {
            stream,
            parser: MessageParser::new(max_message_size),
            out: Vec::new(),
            out_pos: 0,
            next_seq: 0,
            missing: BTreeSet::new(),
        }
    }

    /// Writes queued frames until done or the socket would block.
    fn flush(&mut self) -> Res<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write failed: {e}")),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Reads everything available and parses it, as a subscriber or as the
    /// publisher.
    fn on_readable(&mut self, publisher: bool, run: &mut Run, rbuf: &mut [u8]) -> Res<()> {
        loop {
            match self.stream.read(rbuf) {
                Ok(0) => return Err("server closed the connection (EOF) during the run".into()),
                Ok(n) => {
                    // Every frame of one read arrived at the same time.
                    let now_ns = nanos_since(run.start);
                    let mut sink = ConnSink {
                        publisher,
                        next_seq: &mut self.next_seq,
                        missing: &mut self.missing,
                        out: &mut self.out,
                        run: &mut *run,
                        now_ns,
                    };
                    self.parser.consume(&rbuf[..n], &mut sink)?;
                    if n < rbuf.len() {
                        // Short read: drained; edge-triggered epoll reports
                        // new data with a new edge.
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

/// A connection's view of the run while its input is parsed.
struct ConnSink<'a> {
    /// Whether this is the publisher (which must receive no message).
    publisher: bool,
    /// The connection's next expected sequence number.
    next_seq: &'a mut u64,
    /// Its skipped sequence numbers.
    missing: &'a mut BTreeSet<u64>,
    /// Its output (pongs go here).
    out: &'a mut Vec<u8>,
    /// Run-wide state.
    run: &'a mut Run,
    /// When the bytes being parsed were read.
    now_ns: u64,
}

impl MessageSink for ConnSink<'_> {
    fn on_message(&mut self, opcode: u8, payload: &[u8]) -> Res<()> {
        if self.publisher {
            return Err(
                "the publisher received a message: the server sent it back to its sender".into(),
            );
        }
        let run = &mut *self.run;
        if opcode != run.opcode {
            return Err(format!(
                "message has opcode {opcode}, published with opcode {}",
                run.opcode
            ));
        }
        if payload.len() != run.template.len() {
            return Err(format!(
                "message has {} bytes, published with {}",
                payload.len(),
                run.template.len()
            ));
        }
        if payload[STAMP_LEN..] != run.template[STAMP_LEN..] {
            return Err("message payload differs from what was published".into());
        }
        let (seq, sent_ns) = decode_stamp(payload).ok_or_else(|| {
            format!(
                "message does not start with a stamp: {:?}",
                String::from_utf8_lossy(&payload[..STAMP_LEN])
            )
        })?;
        run.ledger
            .receive(self.next_seq, self.missing, seq, sent_ns, self.now_ns)
    }

    fn on_ping(&mut self, payload: &[u8]) {
        push_client_frame(self.out, 0xa, payload);
    }
}

/// Nanoseconds from `start` to now.
fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Publishes as many messages as the window (and the pace) allow.
fn top_up(
    publisher: &mut Conn,
    run: &mut Run,
    cfg: &Config,
    payload: &mut [u8],
    next_at: &mut Instant,
    now: Instant,
) -> Res<()> {
    let now_ns = nanos_since(run.start);
    while run.ledger.in_flight() < cfg.window {
        if let Some(rate) = cfg.rate {
            if now < *next_at {
                break;
            }
            let interval = Duration::from_secs_f64(1.0 / rate);
            // Paced: after falling behind (the window held publishes back),
            // one message now, then the pace again; no burst to catch up.
            *next_at = (*next_at + interval).max(now);
        }
        if run.ledger.next_seq >= 1 << (4 * SEQ_DIGITS) {
            return Err("sequence numbers exhausted".into());
        }
        let seq = run.ledger.publish(now_ns);
        encode_stamp(payload, seq, now_ns);
        push_client_frame(&mut publisher.out, run.opcode, payload);
    }
    Ok(())
}

/// Runs the benchmark and returns the JSON result line.
fn run(cfg: &Config) -> Res<String> {
    let start = Instant::now();
    let common = &cfg.common;
    let n = cfg.subscribers;
    let nofile = raise_nofile(n as u64 + 256)?;
    if nofile < n as u64 + 16 {
        return Err(format!(
            "RLIMIT_NOFILE is {nofile}, too low for {} connections (raise the hard limit)",
            n + 1
        ));
    }
    let template = message_payload(common.size, common.text);
    let mut run = Run {
        template: template.clone(),
        opcode: if common.text { 1 } else { 2 },
        ledger: Ledger::new(n),
        start,
    };
    let mut payload = template;
    let request = upgrade_request(&common.path, &common.authority);

    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(4096);
    let mut rbuf = vec![0u8; READ_BUF_SIZE];

    // Subscribers are connections 0..n, the publisher (opened last) is n.
    let mut conns: Vec<Conn> = connect_all(
        &mut poll,
        &mut events,
        common,
        &request,
        n + 1,
        start + common.connect_timeout,
        &mut rbuf,
    )?
    .into_iter()
    .map(|s| Conn::new(s, common.size))
    .collect();
    let connected_s = start.elapsed().as_secs_f64();

    let publish_at = Instant::now() + cfg.settle;
    let window_start_at = publish_at + common.warmup;
    let window_end_at = window_start_at + common.duration;
    // The drain lasts while deliveries progress, but not for ever.
    let hard_deadline = window_end_at + cfg.drain + Duration::from_secs(120);
    let mut next_at = publish_at;
    let mut snap_start: Option<CpuSnap> = None;
    let mut snap_end: Option<CpuSnap> = None;
    loop {
        let now = Instant::now();
        if snap_start.is_none() && now >= window_start_at {
            snap_start = Some(cpu_snap(common.server_pid)?);
            run.ledger.measuring = true;
        }
        if snap_end.is_none() && now >= window_end_at {
            snap_end = Some(cpu_snap(common.server_pid)?);
            run.ledger.measuring = false;
        }
        let ledger = &run.ledger;
        let idle = Duration::from_nanos(nanos_since(start).saturating_sub(ledger.last_progress_ns));
        if snap_end.is_some() && (ledger.in_flight() == 0 || idle > cfg.drain) {
            break;
        }
        if now >= hard_deadline {
            return Err("overall deadline exceeded (the drain took over 120 s)".into());
        }
        if snap_end.is_none() && ledger.in_flight() > 0 && idle > common.stall_timeout {
            let head = ledger.in_flight.front().map_or(0, |m| m.unresolved);
            return Err(format!(
                "server stalled: nothing delivered for {:?}; message {} is still missing at \
                 {head} of {n} subscribers ({} delivered so far)",
                common.stall_timeout, ledger.base, ledger.total_deliveries
            ));
        }
        let sending = now >= publish_at && snap_end.is_none();
        if sending {
            top_up(
                &mut conns[n],
                &mut run,
                cfg,
                &mut payload,
                &mut next_at,
                now,
            )?;
            conns[n].flush().map_err(|e| format!("publisher: {e}"))?;
        }
        let mut timeout = Duration::from_millis(50);
        for boundary in [publish_at, window_start_at, window_end_at] {
            if boundary > now {
                timeout = timeout.min(boundary - now);
            }
        }
        if sending && cfg.rate.is_some() && run.ledger.in_flight() < cfg.window {
            timeout = timeout.min(next_at.saturating_duration_since(now));
        }
        poll_events(&mut poll, &mut events, timeout)?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = conns.get_mut(i) else {
                continue;
            };
            let step = (|| {
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    c.on_readable(i == n, &mut run, &mut rbuf)?;
                }
                if ev.is_error() {
                    if let Ok(Some(e)) = c.stream.take_error() {
                        return Err(format!("socket error: {e}"));
                    }
                }
                if c.out_pos < c.out.len() {
                    c.flush()?;
                }
                Ok(())
            })();
            step.map_err(|e| {
                if i == n {
                    format!("publisher: {e}")
                } else {
                    format!("subscriber {i}: {e}")
                }
            })?;
        }
    }

    let (Some(snap_start), Some(snap_end)) = (snap_start, snap_end) else {
        return Err("measured window never completed".into());
    };
    let ledger = &run.ledger;
    let published = ledger.next_seq;
    let lost: u64 = conns[..n]
        .iter()
        .map(|c| (published - c.next_seq) + c.missing.len() as u64)
        .sum();
    let delivery_ok = lost == 0 && ledger.duplicates == 0 && ledger.out_of_order == 0;
    if !delivery_ok {
        eprintln!(
            "loadgen-fanout: warning: delivery errors: {lost} lost, {} duplicates, {} out of \
             order (of {published} messages × {n} subscribers)",
            ledger.duplicates, ledger.out_of_order
        );
    }
    if ledger.window_deliveries == 0 {
        return Err("no message was delivered during the measured window".into());
    }
    let window_s = snap_end.at.duration_since(snap_start.at).as_secs_f64();
    let extra = format!(
        "\"mode\":\"fanout\",\"subscribers\":{n},\"window\":{},\"rate\":{},\"settle_s\":{:.3},\
         \"connect_s\":{connected_s:.3},\"publishes\":{},\"publishes_per_sec\":{:.1},\
         \"published_total\":{published},\"delivered_total\":{},\"lost\":{lost},\
         \"duplicates\":{},\"out_of_order\":{},\"delivery_ok\":{delivery_ok}",
        cfg.window,
        cfg.rate.map_or("null".to_string(), |r| format!("{r:.1}")),
        cfg.settle.as_secs_f64(),
        ledger.window_publishes,
        ledger.window_publishes as f64 / window_s,
        ledger.total_deliveries,
        ledger.duplicates,
        ledger.out_of_order,
    );
    Report {
        url: &common.url,
        connections: common.connections,
        streams_per_connection: None,
        size: common.size,
        text: common.text,
        in_flight: cfg.window,
        warmup: common.warmup,
        window_msgs: ledger.window_deliveries,
        hist: &ledger.hist,
        server_pid: common.server_pid,
        start: snap_start,
        end: snap_end,
    }
    .to_json_with(&extra)
}

/// Entry point: parse, run, print JSON or fail with a clear message.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen-fanout: {e}");
            exit(2);
        }
    };
    match run(&cfg) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("loadgen-fanout: error: {e}");
            exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_rejects_non_hex() {
        let mut buf = [0u8; STAMP_LEN];
        encode_stamp(&mut buf, 0x1234_abcd, 0xfedc_ba98_7654);
        assert_eq!(&buf, b"1234abcdfedcba987654");
        assert_eq!(decode_stamp(&buf), Some((0x1234_abcd, 0xfedc_ba98_7654)));
        buf[3] = b'G';
        assert_eq!(decode_stamp(&buf), None);
        assert_eq!(decode_stamp(b"0123"), None);
    }

    /// A ledger for `subs` subscribers with `published` messages sent at 10 ns × seq.
    fn ledger_with(subs: usize, published: u64) -> Ledger {
        let mut l = Ledger::new(subs);
        l.measuring = true;
        for seq in 0..published {
            l.publish(seq * 10);
        }
        l
    }

    #[test]
    fn window_advances_when_every_subscriber_received() {
        let mut l = ledger_with(2, 3);
        let (mut a, mut b) = (0, 0);
        let (mut ma, mut mb) = (BTreeSet::new(), BTreeSet::new());
        l.receive(&mut a, &mut ma, 0, 0, 5).unwrap();
        assert_eq!((l.base, l.in_flight()), (0, 3));
        l.receive(&mut b, &mut mb, 0, 0, 7).unwrap();
        assert_eq!((l.base, l.in_flight()), (1, 2));
        assert_eq!(l.window_deliveries, 2);
        assert_eq!(l.hist.max(), 7);
    }

    #[test]
    fn ledger_counts_gaps_late_arrivals_and_duplicates() {
        let mut l = ledger_with(1, 3);
        let mut next = 0;
        let mut missing = BTreeSet::new();
        l.receive(&mut next, &mut missing, 1, 10, 50).unwrap(); // 0 skipped
        assert_eq!((next, missing.len(), l.base), (2, 1, 2));
        l.receive(&mut next, &mut missing, 0, 0, 60).unwrap(); // late
        assert_eq!((l.out_of_order, missing.len()), (1, 0));
        l.receive(&mut next, &mut missing, 1, 10, 70).unwrap(); // again
        assert_eq!(l.duplicates, 1);
        assert_eq!(l.total_deliveries, 2);
        // Never published, or a wrong send time: fatal.
        assert!(l.receive(&mut next, &mut missing, 3, 30, 80).is_err());
        assert!(l.receive(&mut next, &mut missing, 2, 99, 80).is_err());
    }

    #[test]
    fn options_map_port_and_room_to_the_url() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cfg = parse_args(&args(&[
            "--port",
            "9001",
            "--subscribers=10",
            "--window",
            "4",
        ]))
        .unwrap();
        assert_eq!(cfg.common.url, "ws://127.0.0.1:9001/bench");
        assert_eq!((cfg.subscribers, cfg.common.connections), (10, 11));
        assert_eq!((cfg.window, cfg.common.connect_concurrency), (4, 64));
        let cfg = parse_args(&args(&["--port=9001", "--room", "r1", "--rate", "100"])).unwrap();
        assert_eq!(cfg.common.path, "/r1");
        assert_eq!(cfg.rate, Some(100.0));
        assert!(parse_args(&args(&["--port", "1", "--connections", "5"])).is_err());
        assert!(parse_args(&args(&["--port", "1", "--size", "19"])).is_err());
    }
}
