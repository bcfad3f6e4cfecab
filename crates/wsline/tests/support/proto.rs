//! Shared test harness: a client and a server [`Connection`] wired to each other in memory,
//! driven until idle on a fake clock (the shape of quinn-proto's `Pair`), plus helpers to
//! build frames by hand and to read back what a connection wrote.
//!
//! Each test binary uses a subset of these helpers.
#![allow(dead_code, unused_macros)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use wsline::proto::{
    CloseFrame, Connection, ConnectionClosed, Event, Frame, FrameHeader, Opcode, Request, Response,
    Rsv, Side, State, Transmit,
};
use wsline::Config;

/// Two tests, `$server` and `$client`, that run `$check(Side::Server)` and
/// `$check(Side::Client)`: a rule checked on both ends, as a client/server pair.
macro_rules! on_both_sides {
    ($check:ident, $server:ident, $client:ident) => {
        #[test]
        fn $server() {
            $check(wsline::proto::Side::Server);
        }

        #[test]
        fn $client() {
            $check(wsline::proto::Side::Client);
        }
    };
}

/// The masking key of the RFC 6455 §5.7 examples.
pub const RFC_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Masking keys for tests: the RFC 6455 §5.7 key first, then a predictable sequence, so that
/// what a client writes is reproducible byte for byte.
pub struct TestKeys {
    next: u32,
}

impl TestKeys {
    /// Keys starting with [`RFC_KEY`].
    pub fn new() -> Box<Self> {
        Box::new(Self { next: 0 })
    }
}

impl wsline::proto::RandomSource for TestKeys {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(4) {
            let key = if self.next == 0 {
                RFC_KEY
            } else {
                self.next.wrapping_mul(0x9E37_79B9).to_be_bytes()
            };
            self.next = self.next.wrapping_add(1);
            chunk.copy_from_slice(&key[..chunk.len()]);
        }
    }
}

/// A config with every timer off, so that tests that do not look at time see none.
pub fn no_timers() -> Config {
    Config {
        open_timeout: None,
        close_timeout: None,
        ping_interval: None,
        ping_timeout: None,
        ..Config::default()
    }
}

/// A connection whose handshake happened elsewhere, with deterministic masking keys.
pub fn open(side: Side, config: Config) -> Connection {
    Connection::after_handshake(side, config, Instant::now()).with_random_source(TestKeys::new())
}

/// A server connection without timers.
pub fn server() -> Connection {
    open(Side::Server, no_timers())
}

/// A client connection without timers.
pub fn client() -> Connection {
    open(Side::Client, no_timers())
}

/// Everything a connection wants written, and whether it asked for a shutdown after it.
#[derive(Debug, Default)]
pub struct Written {
    pub bytes: Vec<u8>,
    pub shutdown: bool,
}

/// Drains [`Connection::poll_transmit`].
pub fn written(connection: &mut Connection) -> Written {
    let mut out = Written::default();
    while let Some(transmit) = connection.poll_transmit() {
        match transmit {
            Transmit::Bytes(bytes) => {
                assert!(!out.shutdown, "bytes queued after the shutdown");
                out.bytes.extend_from_slice(&bytes);
            }
            Transmit::Shutdown => {
                assert!(!out.shutdown, "shutdown reported twice");
                out.shutdown = true;
            }
        }
    }
    out
}

/// Drains [`Connection::poll_event`], then acknowledges the events (as an application does
/// once it has handled them), and drains what that brought.
pub fn events(connection: &mut Connection) -> Vec<Event> {
    let mut events: Vec<Event> = std::iter::from_fn(|| connection.poll_event()).collect();
    connection.acknowledge_events();
    events.extend(std::iter::from_fn(|| connection.poll_event()));
    events
}

/// A frame as it was on the wire: the frame, and the key it was masked with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireFrame {
    pub frame: Frame,
    pub mask: Option<[u8; 4]>,
}

/// Parses a byte stream that must consist of whole, valid frames.
pub fn parse_frames(bytes: &[u8]) -> Vec<WireFrame> {
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while !buf.is_empty() {
        let (header, _) = FrameHeader::parse(&buf)
            .expect("written bytes are valid frames")
            .expect("written bytes end on a frame boundary");
        let frame = Frame::decode(&mut buf, u64::MAX)
            .expect("written bytes are valid frames")
            .expect("written bytes end on a frame boundary");
        frames.push(WireFrame {
            frame,
            mask: header.mask,
        });
    }
    frames
}

/// The frames a connection wrote; each must be masked exactly when a client wrote it
/// (RFC 6455 §5.1).
pub fn sent_frames(connection: &mut Connection) -> Vec<Frame> {
    let side = connection.side();
    let frames = parse_frames(&written(connection).bytes);
    for wire in &frames {
        assert_eq!(
            wire.mask.is_some(),
            side == Side::Client,
            "{side:?} masking of {:?}",
            wire.frame
        );
    }
    frames.into_iter().map(|wire| wire.frame).collect()
}

/// The close frame a connection wrote, if any, parsed.
pub fn sent_close(connection: &mut Connection) -> Option<CloseFrame> {
    sent_frames(connection)
        .into_iter()
        .find(|frame| frame.opcode == Opcode::Close)
        .map(|frame| CloseFrame::parse(&frame.payload).expect("a valid close payload"))
}

/// The code of the close frame a connection wrote, if any.
pub fn sent_close_code(connection: &mut Connection) -> Option<u16> {
    sent_close(connection).map(|close| close.code.as_u16())
}

/// A frame as a client sends it: masked with [`RFC_KEY`].
pub fn client_frame(opcode: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
    encode(opcode, fin, Rsv::NONE, payload, Some(RFC_KEY))
}

/// A frame as a server sends it: unmasked.
pub fn server_frame(opcode: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
    encode(opcode, fin, Rsv::NONE, payload, None)
}

/// A frame as the peer of `side` sends it.
pub fn frame_to(side: Side, opcode: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
    match side {
        Side::Server => client_frame(opcode, fin, payload),
        Side::Client => server_frame(opcode, fin, payload),
    }
}

/// Any frame, with explicit reserved bits and mask; built byte by byte by
/// [`super::frame_with`], not by the encoder under test.
pub fn encode(
    opcode: Opcode,
    fin: bool,
    rsv: Rsv,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let rsv_bits = [(Rsv::RSV1, 0x40), (Rsv::RSV2, 0x20), (Rsv::RSV3, 0x10)]
        .into_iter()
        .filter(|(bit, _)| rsv.contains(*bit))
        .fold(0, |bits, (_, byte)| bits | byte);
    let first = if fin { 0x80 } else { 0 } | rsv_bits | opcode.as_u8();
    super::frame_with(first, payload.len() as u64, payload, mask)
}

/// A close payload: the code in network byte order, then the reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// The single `Closed` event among `events`.
pub fn closed_event(events: &[Event]) -> ConnectionClosed {
    let mut closed = events.iter().filter_map(|event| match event {
        Event::Closed(closed) => Some(closed.clone()),
        _ => None,
    });
    let first = closed.next().expect("a Closed event");
    assert!(closed.next().is_none(), "a single Closed event");
    assert!(
        matches!(events.last(), Some(Event::Closed(_))),
        "Closed is the last event"
    );
    first
}

/// A client and a server connected in memory, on a fake clock.
pub struct Pair {
    pub client: Connection,
    pub server: Connection,
    /// The fake clock: what both connections are told the time is.
    pub now: Instant,
    /// Every byte the client wrote, in order.
    pub client_wire: Vec<u8>,
    /// Every byte the server wrote, in order.
    pub server_wire: Vec<u8>,
    /// Whether the client shut down its write half.
    pub client_shutdown: bool,
    /// Whether the server shut down its write half.
    pub server_shutdown: bool,
}

impl Pair {
    /// Two connections whose handshake happened elsewhere.
    pub fn after_handshake(client_config: Config, server_config: Config) -> Self {
        let now = Instant::now();
        let client = Connection::after_handshake(Side::Client, client_config, now)
            .with_random_source(TestKeys::new());
        let server = Connection::after_handshake(Side::Server, server_config, now);
        Self::new(client, server, now)
    }

    /// A client for `uri` and a server, before the client sends its request.
    pub fn connecting(uri: &str, client_config: Config, server_config: Config) -> Self {
        let now = Instant::now();
        let uri = uri.parse().expect("a valid ws URI");
        let client =
            Connection::client(uri, client_config, now).with_random_source(TestKeys::new());
        let server = Connection::server(server_config, now);
        Self::new(client, server, now)
    }

    /// Two connections that went through the opening handshake with `accept`'s response;
    /// returns the request the server saw and the response the client saw.
    pub fn open(client_config: Config, server_config: Config) -> (Self, Request, Response) {
        let mut pair = Self::connecting("ws://example.com/chat", client_config, server_config);
        let request = pair.handshake();
        let response = match pair.client.poll_event() {
            Some(Event::Response(response)) => response,
            other => panic!("expected a response, got {other:?}"),
        };
        // Handled every event: the connection may act on what follows.
        assert_eq!(pair.client.poll_event(), None);
        pair.client.acknowledge_events();
        assert_eq!(pair.client.state(), State::Open);
        assert_eq!(pair.server.state(), State::Open);
        (pair, request, response)
    }

    /// Two open connections without timers.
    pub fn open_default() -> Self {
        Self::open(no_timers(), no_timers()).0
    }

    fn new(client: Connection, server: Connection, now: Instant) -> Self {
        Self {
            client,
            server,
            now,
            client_wire: Vec::new(),
            server_wire: Vec::new(),
            client_shutdown: false,
            server_shutdown: false,
        }
    }

    /// Sends the client's request and answers it with the server's
    /// [`accept`](Connection::accept); returns the request the server saw. The client's
    /// `Response` event is left in place.
    pub fn handshake(&mut self) -> Request {
        let request = self.client.connect_request().unwrap();
        self.client.send_request(request).unwrap();
        self.drive();
        let request = match self.server.poll_event() {
            Some(Event::Request(request)) => request,
            other => panic!("expected a request, got {other:?}"),
        };
        assert_eq!(self.server.poll_event(), None);
        self.server.acknowledge_events();
        let response = self.server.accept(&request).unwrap();
        self.server
            .send_response(response)
            .expect("a request awaits its response");
        self.drive();
        request
    }

    /// Moves bytes both ways, and fires due timers, until nothing more happens.
    pub fn drive(&mut self) {
        for _ in 0..10_000 {
            self.fire_timers();
            let client = transfer(
                &mut self.client,
                &mut self.server,
                &mut self.client_wire,
                &mut self.client_shutdown,
            );
            let server = transfer(
                &mut self.server,
                &mut self.client,
                &mut self.server_wire,
                &mut self.server_shutdown,
            );
            if !client && !server {
                return;
            }
        }
        panic!("the pair never became idle");
    }

    fn fire_timers(&mut self) {
        for connection in [&mut self.client, &mut self.server] {
            for _ in 0..16 {
                match connection.poll_timeout() {
                    Some(deadline) if deadline <= self.now => connection.handle_timeout(self.now),
                    _ => break,
                }
            }
        }
    }

    /// Moves the fake clock forward and drives the pair.
    pub fn advance(&mut self, duration: Duration) {
        self.now += duration;
        self.drive();
    }

    /// The earliest timer of either end.
    pub fn next_timeout(&self) -> Option<Instant> {
        [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Ferries what `from` wrote to `to`, as a socket would; returns whether anything moved.
fn transfer(
    from: &mut Connection,
    to: &mut Connection,
    wire: &mut Vec<u8>,
    shut: &mut bool,
) -> bool {
    let mut moved = false;
    while let Some(transmit) = from.poll_transmit() {
        moved = true;
        match transmit {
            Transmit::Bytes(bytes) => {
                assert!(!*shut, "bytes written after the shutdown");
                wire.extend_from_slice(&bytes);
                to.handle_data(&bytes);
            }
            Transmit::Shutdown => {
                *shut = true;
                to.handle_eof();
            }
        }
    }
    moved
}

/// Counts heap bytes and allocator calls per thread, so that a test can bound what a call
/// allocates. The global allocator of every test binary that has `mod support;`.
pub struct CountingAlloc;

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn record(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

/// Counts a call that asked for memory: an allocation or a reallocation, of any size.
fn count_call() {
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// plain thread-local cells that never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_call();
        record(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(-(layout.size() as isize));
        System.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_call();
        record(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

/// The most heap memory `f` held at once on this thread beyond what was live before it.
pub fn peak_heap_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    let result = f();
    let peak = PEAK.with(Cell::get);
    (result, usize::try_from(peak - start).unwrap_or(0))
}

/// How many times `f` allocated or reallocated (grown or shrunk) on this thread.
pub fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = ALLOCATIONS.with(Cell::get);
    let result = f();
    (result, ALLOCATIONS.with(Cell::get) - start)
}
