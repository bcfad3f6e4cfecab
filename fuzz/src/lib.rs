//! What the fuzz targets share: a heap counter that bounds memory, a cursor over the fuzz
//! input, and checkers for what a `Connection` writes and reports.
//!
//! Invariants checked on every connection:
//! - nothing panics;
//! - everything written parses as valid frames, masked exactly when a client wrote them
//!   (RFC 6455 §5.1), control frames short and whole (§5.5), close frames with a valid code
//!   and UTF-8 reason, no data frame and no second close frame after a close frame (§5.5.1),
//!   and nothing after the shutdown;
//! - text messages are valid UTF-8 and no message is larger than `max_message_size`;
//! - `Closed` is the last event;
//! - the heap the connection holds stays within its configured limits.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wsline::proto::{
    CloseCode, CloseFrame, Connection, Event, FrameHeader, Opcode, Side, Transmit,
};
use wsline::{Config, Message};

/// The global allocator, counting live heap bytes.
pub struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; the counter is an atomic.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Heap bytes allocated and not yet freed.
pub fn live_heap() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// A cursor over the fuzz input.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte, 0 once the input is used up.
    pub fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.data.split_first() else {
            return 0;
        };
        self.data = rest;
        first
    }

    /// The next two bytes as a big-endian number.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` next bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A byte string prefixed by its one-byte length.
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte());
        self.take(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }

    /// Whether everything was used.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Cuts `data` in pieces of `size` bytes (the whole of it for 0).
pub fn pieces(data: &[u8], size: u8) -> impl Iterator<Item = &[u8]> {
    let size = if size == 0 {
        data.len().max(1)
    } else {
        usize::from(size)
    };
    data.chunks(size)
}

/// Checks the bytes a connection writes.
pub struct WireChecker {
    side: Side,
    close_sent: bool,
    shutdown: bool,
    /// Whether an HTTP head (a server's response, a client's request) comes before the
    /// frames: the handshake targets check it, this skips it, and skips the body of a
    /// response that is not a 101.
    pub in_head: bool,
    in_body: bool,
}

impl WireChecker {
    /// A checker for what a connection on `side` writes.
    pub fn new(side: Side) -> Self {
        Self {
            side,
            close_sent: false,
            shutdown: false,
            in_head: false,
            in_body: false,
        }
    }

    /// Drains `connection`'s output and checks it; returns the bytes.
    pub fn drain(&mut self, connection: &mut Connection) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(transmit) = connection.poll_transmit() {
            match transmit {
                Transmit::Bytes(bytes) => {
                    assert!(!self.shutdown, "bytes after the shutdown");
                    out.extend_from_slice(&bytes);
                }
                Transmit::Shutdown => {
                    assert!(!self.shutdown, "shutdown twice");
                    self.shutdown = true;
                }
            }
        }
        let mut frames = &out[..];
        if self.in_head {
            if frames.is_empty() {
                return out;
            }
            let end = frames
                .windows(4)
                .position(|window| window == b"\r\n\r\n")
                .expect("an HTTP head comes whole");
            self.in_body = frames.starts_with(b"HTTP/") && !frames.starts_with(b"HTTP/1.1 101 ");
            frames = &frames[end + 4..];
            self.in_head = false;
        }
        if self.in_body {
            return out;
        }
        self.check_frames(frames);
        out
    }

    fn check_frames(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (header, len) = FrameHeader::parse(bytes)
                .expect("written frames are valid")
                .expect("written frames are whole");
            assert_eq!(
                header.mask.is_some(),
                self.side == Side::Client,
                "RFC 6455 §5.1 masking"
            );
            let payload_len = usize::try_from(header.payload_len).expect("a buffer length");
            let end = len + payload_len;
            assert!(end <= bytes.len(), "written frames are whole");
            let mut payload = bytes[len..end].to_vec();
            if let Some(key) = header.mask {
                wsline::proto::apply_mask(&mut payload, key, 0);
            }
            assert!(
                !self.close_sent || header.opcode.is_control(),
                "data after close"
            );
            if header.opcode == Opcode::Close {
                assert!(!self.close_sent, "two close frames");
                self.close_sent = true;
                CloseFrame::parse(&payload).expect("a valid close payload");
            }
            bytes = &bytes[end..];
        }
    }
}

/// Checks the events a connection reports.
pub struct EventChecker {
    max_message_size: Option<usize>,
    closed: bool,
    fragmented: usize,
}

impl EventChecker {
    /// A checker for a connection with `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            max_message_size: config.max_message_size,
            closed: false,
            fragmented: 0,
        }
    }

    /// Drains `connection`'s events, acknowledges them (as an application does once it has
    /// handled them) and drains what that brought; checks them all and returns them.
    pub fn drain(&mut self, connection: &mut Connection) -> Vec<Event> {
        let mut events: Vec<Event> = std::iter::from_fn(|| connection.poll_event()).collect();
        connection.acknowledge_events();
        events.extend(std::iter::from_fn(|| connection.poll_event()));
        for event in &events {
            assert!(!self.closed, "an event after Closed");
            match event {
                Event::Message(message) => self.check_size(check_message(message)),
                Event::Fragment(fragment) => {
                    let len = check_message(&fragment.data);
                    self.fragmented = if fragment.first {
                        len
                    } else {
                        self.fragmented + len
                    };
                    self.check_size(self.fragmented);
                }
                Event::Ping(payload) | Event::Pong(payload) => assert!(payload.len() <= 125),
                Event::Closed(_) => self.closed = true,
                Event::Request(_) | Event::Response(_) => {}
            }
        }
        events
    }

    fn check_size(&self, len: usize) {
        if let Some(limit) = self.max_message_size {
            assert!(
                len <= limit,
                "message of {len} bytes past the limit {limit}"
            );
        }
    }
}

/// Checks that text is UTF-8; returns the length.
fn check_message(message: &Message) -> usize {
    if message.is_text() {
        std::str::from_utf8(message.as_bytes()).expect("text messages are UTF-8");
    }
    message.len()
}

/// Connection settings picked by one input byte: message and frame limits, fragment
/// delivery, and timers.
pub fn config_from(byte: u8) -> Config {
    let max_message_size = match byte & 0b11 {
        0 => Some(1 << 10),
        1 => Some(64 << 10),
        2 => Some(1 << 20),
        _ => None,
    };
    let max_frame_size = match (byte >> 3) & 0b11 {
        1 => Some(125),
        2 => Some(4 << 10),
        _ => None,
    };
    let second = Some(Duration::from_secs(1));
    let timers = byte & 0b10_0000 != 0;
    Config {
        max_message_size,
        max_frame_size,
        deliver_fragments: byte & 0b100 != 0,
        open_timeout: second.filter(|_| timers),
        close_timeout: second.filter(|_| timers),
        ping_interval: second.filter(|_| timers),
        ping_timeout: second.filter(|_| timers),
        ..Config::default()
    }
}

/// Settings for the handshake targets: no message limit, no timers, and with `small` head
/// limits (and rejection body) small enough for the fuzzer to go past.
pub fn handshake_config(small: bool) -> Config {
    let config = config_from(0b11);
    if !small {
        return config;
    }
    Config {
        max_line_len: 64,
        max_headers: 4,
        max_head_size: 256,
        max_response_body: 16,
        ..config
    }
}

/// How much heap a connection with `config` may hold while fed `input_len` bytes: a message
/// up to the limit (or all the input without one), the output of the commands, and room for
/// bookkeeping and the read-ahead of one frame.
pub fn heap_bound(config: &Config, input_len: usize) -> usize {
    let message = config.max_message_size.unwrap_or(input_len);
    message + 4 * input_len + (256 << 10)
}

/// Drives a connection on `side` whose handshake happened elsewhere with commands read from
/// `data`, checking every invariant after each one.
///
/// Input: one config byte ([`config_from`]), then commands, each a tag byte:
/// `0xF0` text, `0xF1` binary, `0xF2` ping, `0xF3` pong (length-prefixed payloads),
/// `0xF4` close (code, reason), `0xF5` fail (code), `0xF6` clock +100 ms × next byte,
/// `0xF7` end of stream, `0xF8` text fragment (fin byte, payload), `0xF9` continuation,
/// `0xFF` the rest of the input as data in pieces of the next byte's size,
/// anything else: that many bytes plus one as one piece of data.
pub fn run_connection(side: Side, data: &[u8]) {
    let mut input = Input::new(data);
    let config = config_from(input.byte());
    let bound = heap_bound(&config, data.len());
    let mut events = EventChecker::new(&config);
    let mut wire = WireChecker::new(side);
    let mut now = Instant::now();
    let baseline = live_heap();
    let mut connection = Connection::after_handshake(side, config, now);
    while !input.is_empty() {
        let tag = input.byte();
        let code = |input: &mut Input<'_>| CloseCode::from(input.u16());
        // Errors from commands are typed results the application handles; only a panic
        // would be a bug.
        let _ = match tag {
            0xF0 => connection.send_text(&String::from_utf8_lossy(input.bytes())),
            0xF1 => connection.send_binary(input.bytes()),
            0xF2 => connection.send_ping(input.bytes()),
            0xF3 => connection.send_pong(input.bytes()),
            0xF4 => {
                let code = code(&mut input);
                connection.send_close(code, &String::from_utf8_lossy(input.bytes()))
            }
            0xF5 => {
                connection.fail(code(&mut input), "fuzz");
                Ok(())
            }
            0xF6 => {
                now += Duration::from_millis(100) * u32::from(input.byte());
                connection.handle_timeout(now);
                Ok(())
            }
            0xF7 => {
                connection.handle_eof();
                Ok(())
            }
            0xF8 => {
                let fin = input.byte() & 1 == 1;
                connection.send_text_fragment(&String::from_utf8_lossy(input.bytes()), fin)
            }
            0xF9 => {
                let fin = input.byte() & 1 == 1;
                connection.send_continuation(input.bytes(), fin)
            }
            0xFF => {
                let size = input.byte();
                for piece in pieces(input.rest(), size) {
                    connection.handle_data(piece);
                    check(&mut connection, &mut wire, &mut events, baseline, bound);
                }
                Ok(())
            }
            len => {
                connection.handle_data(input.take(usize::from(len) + 1));
                Ok(())
            }
        };
        check(&mut connection, &mut wire, &mut events, baseline, bound);
    }
    connection.handle_eof();
    check(&mut connection, &mut wire, &mut events, baseline, bound);
    assert!(connection.is_closed());
}

fn check(
    connection: &mut Connection,
    wire: &mut WireChecker,
    events: &mut EventChecker,
    baseline: usize,
    bound: usize,
) {
    let held = live_heap().saturating_sub(baseline);
    assert!(held <= bound, "{held} heap bytes held, bound {bound}");
    wire.drain(connection);
    events.drain(connection);
}
