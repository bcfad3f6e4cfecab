//! The per-connection protocol state machine.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::{RngCore, SeedableRng};

use super::error::{ProtocolError, SendError};
use super::event::{ConnectionClosed, Event, Failure, Fragment, Initiator, Side, State};
use super::frame::{
    apply_mask, truncate_utf8, CloseCode, CloseFrame, FrameHeader, Opcode, Rsv,
    MAX_CONTROL_PAYLOAD_LEN,
};
use super::handshake::{
    self, HandshakeError, HeadLimits, HeadScanner, NegotiatedServer, Request, Response,
};
use super::message::{Message, Utf8Bytes};
use super::send_buffer::{SendBuffer, SHARE_THRESHOLD};
use super::utf8::validate_utf8;
use super::Config;
use crate::extension::{Extension, FramePosition};
use crate::WsUri;

/// A message payload buffer larger than this is released after its message instead of kept
/// for the next one, so that an idle connection holds little memory.
const MAX_RETAINED_BUFFER: usize = 64 << 10;

/// The most payload capacity reserved ahead of the bytes actually received, so that a length
/// claim alone cannot make a connection allocate.
const MAX_RESERVE_AHEAD: usize = 64 << 10;

/// The smallest step the message buffer grows by: small messages then share one allocation
/// (each message is a slice of it) instead of taking one allocation each.
const MIN_BUFFER_GROWTH: usize = 4 << 10;

/// Random bytes for masking keys and handshake nonces (RFC 6455 §10.3: "The masking key needs
/// to be unpredictable").
///
/// The default is a ChaCha-based generator seeded from the operating system; tests inject a
/// deterministic one with [`Connection::set_random_source`].
pub trait RandomSource: Send {
    /// Fills `dest` with random bytes.
    fn fill_bytes(&mut self, dest: &mut [u8]);
}

impl<R: RngCore + Send> RandomSource for R {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        RngCore::fill_bytes(self, dest);
    }
}

/// What the I/O layer should do next with the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Write these bytes.
    Bytes(Bytes),
    /// Everything has been written: shut down the write half of the TCP connection (for a
    /// server this closes TCP first, RFC 6455 §7.1.1).
    Shutdown,
}

/// Options for [`Connection::send_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Whether to compress this message with a negotiated extension: `Some(false)` sends it
    /// as is, `Some(true)` compresses even below the size threshold, `None` lets the
    /// extension decide.
    pub compress: Option<bool>,
}

/// A message encoded once as an unmasked frame, to send to many server connections without
/// encoding it for each (a broadcast).
///
/// ```
/// use wsline::proto::PreparedMessage;
/// use wsline::Message;
/// let prepared = PreparedMessage::new(Message::text("Hello"));
/// assert_eq!(prepared.frame(), &b"\x81\x05Hello"[..]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedMessage {
    message: Message,
    frame: Bytes,
}

impl PreparedMessage {
    /// Encodes `message` as a single unmasked frame.
    #[must_use]
    pub fn new(message: Message) -> Self {
        let opcode = if message.is_text() {
            Opcode::Text
        } else {
            Opcode::Binary
        };
        let header = FrameHeader {
            fin: true,
            rsv: Rsv::NONE,
            opcode,
            mask: None,
            payload_len: message.len() as u64,
        };
        let mut frame = BytesMut::with_capacity(header.encoded_len() + message.len());
        header.encode(&mut frame);
        frame.extend_from_slice(message.as_bytes());
        Self {
            message,
            frame: frame.freeze(),
        }
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The encoded frame: header and payload.
    #[must_use]
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }
}

/// A timer that is off, waiting to be armed at the next known time, or armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Off,
    Pending(Duration),
    At(Instant),
}

impl Timer {
    fn new(duration: Option<Duration>) -> Self {
        duration.map_or(Self::Off, Self::Pending)
    }

    fn deadline(self, now: Instant) -> Option<Instant> {
        match self {
            Self::Off => None,
            Self::Pending(_) => Some(now),
            Self::At(deadline) => Some(deadline),
        }
    }

    /// Arms a pending timer; returns whether an armed one has expired.
    fn tick(&mut self, now: Instant) -> bool {
        match *self {
            Self::Off => false,
            Self::Pending(duration) => {
                *self = Self::At(now + duration);
                false
            }
            Self::At(deadline) => deadline <= now,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Timers {
    open: Option<Timer>,
    close: Option<Timer>,
    ping: Option<Timer>,
    pong: Option<Timer>,
    acknowledge: Option<Timer>,
}

impl Timers {
    fn all(&self) -> [Option<Timer>; 5] {
        [
            self.open,
            self.close,
            self.ping,
            self.pong,
            self.acknowledge,
        ]
    }
}

/// An action on the peer's input that waits for the events before it to be handled.
#[derive(Debug)]
enum Deferred {
    /// Answer this close frame (with its raw payload).
    Close(CloseFrame, Vec<u8>),
    /// Fail the connection for this error.
    Failure(ProtocolError),
}

/// Where the opening handshake stands.
#[derive(Debug)]
enum Handshake {
    /// Server: reading the request head.
    ReadRequest { buf: BytesMut, scanner: HeadScanner },
    /// Server: the request was delivered; waiting for `send_response`. `buf` holds bytes that
    /// came after the head.
    AwaitResponse {
        buf: BytesMut,
        negotiated: Option<NegotiatedServer>,
        error: Option<HandshakeError>,
    },
    /// Client: waiting for `send_request`.
    AwaitRequest { key: String },
    /// Client: reading the response head.
    ReadResponse {
        key: String,
        buf: BytesMut,
        scanner: HeadScanner,
    },
    /// Client: reading the body of a rejection; `remaining` is `None` until end of stream.
    ReadRejection {
        response: Box<Response>,
        body: BytesMut,
        remaining: Option<usize>,
    },
    /// Done, one way or the other.
    Done,
}

/// The kind of data message being received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// The frame being received.
#[derive(Clone, Copy, Debug)]
struct InFrame {
    opcode: Opcode,
    fin: bool,
    mask: Option<[u8; 4]>,
    /// Payload bytes received so far (the masking key phase).
    received: usize,
    /// Payload bytes still to come.
    remaining: u64,
}

/// The data message being received.
#[derive(Clone, Copy, Debug)]
struct InMessage {
    kind: Kind,
    /// Index of the extension that decodes this message.
    decoder: Option<usize>,
    /// Bytes of `Reader::data` known to be valid UTF-8.
    utf8_valid: usize,
    /// Decoded bytes already delivered as fragments (no longer in `Reader::data`).
    delivered_size: usize,
    /// Whether a fragment of it has been delivered already.
    delivered: bool,
}

/// The incremental frame reader: payload bytes stream into the message being assembled.
#[derive(Debug, Default)]
struct Reader {
    header: [u8; FrameHeader::MAX_LEN],
    header_len: usize,
    frame: Option<InFrame>,
    message: Option<InMessage>,
    /// Decoded payload of the current data message.
    data: BytesMut,
    /// Spare room of `data` when it was last allocated or reclaimed.
    data_room: usize,
    /// Unmasked payload of the current frame when an extension decodes it.
    raw: BytesMut,
    control: Vec<u8>,
}

impl Reader {
    /// Starts the message buffer over at the front of its allocation, once messages have
    /// used half of it and every message taken from it has been dropped, so that the
    /// messages of the next read share it instead of taking new allocations.
    fn reclaim(&mut self) {
        let spare = self.data.capacity();
        if self.data.is_empty() && spare * 2 < self.data_room {
            // Fails, harmlessly, while a message taken from the buffer is still alive.
            if self.data.try_reclaim(spare + 1) {
                self.data_room = self.data.capacity();
            }
        }
    }
}

/// The outgoing fragmented message in progress.
#[derive(Clone, Copy, Debug)]
struct OutMessage {
    transformed: bool,
}

/// One WebSocket connection, without I/O: bytes in, events and bytes out.
///
/// The calling order, the same in every I/O layer:
///
/// 1. feed what the socket reads to [`handle_data`](Self::handle_data), and end of stream
///    to [`handle_eof`](Self::handle_eof);
/// 2. write what [`poll_transmit`](Self::poll_transmit) returns (or write the
///    [`send_buffer`](Self::send_buffer) with vectored writes), and shut down the write half
///    on [`Transmit::Shutdown`];
/// 3. handle what [`poll_event`](Self::poll_event) returns until it returns `None`; send
///    with `send_*`; then call [`acknowledge_events`](Self::acknowledge_events). A close
///    frame or protocol error from the peer is acted on only once the events before it are
///    acknowledged (or [`Config::acknowledge_timeout`] has passed), so that replies to those
///    messages go out before the connection closes;
/// 4. call [`handle_timeout`](Self::handle_timeout) once the instant given by
///    [`poll_timeout`](Self::poll_timeout) has passed;
/// 5. drop the socket once [`state`](Self::state) is [`State::Closed`] and everything is
///    written.
///
/// ```
/// use std::time::Instant;
/// use wsline::proto::{Connection, Event, Transmit};
/// use wsline::{Config, Message};
///
/// let now = Instant::now();
/// let mut client = Connection::client("ws://example.com/chat".parse()?, Config::default(), now);
/// let mut server = Connection::server(Config::default(), now);
///
/// // Ferries bytes from one end to the other, as a socket would.
/// fn ferry(from: &mut Connection, to: &mut Connection) {
///     while let Some(Transmit::Bytes(bytes)) = from.poll_transmit() {
///         to.handle_data(&bytes);
///     }
/// }
///
/// let request = client.connect_request();
/// client.send_request(request);
/// ferry(&mut client, &mut server);
/// let Some(Event::Request(request)) = server.poll_event() else { unreachable!() };
/// let response = server.accept(&request);
/// server.send_response(response)?;
/// ferry(&mut server, &mut client);
/// assert!(matches!(client.poll_event(), Some(Event::Response(_))));
///
/// client.send_text("Hello")?;
/// ferry(&mut client, &mut server);
/// assert_eq!(server.poll_event(), Some(Event::Message(Message::text("Hello"))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Connection {
    side: Side,
    config: Arc<Config>,
    state: State,
    handshake: Handshake,
    reader: Reader,
    out: SendBuffer,
    out_message: Option<OutMessage>,
    events: VecDeque<Event>,
    extensions: Vec<Box<dyn Extension>>,
    subprotocol: Option<String>,
    random: Option<Box<dyn RandomSource>>,
    client_uri: Option<WsUri>,
    /// The most recent time the I/O layer told us.
    now: Instant,
    timers: Timers,
    keepalive_ping: Option<[u8; 4]>,
    keepalive_count: u32,
    closed: ConnectionClosed,
    /// No more input is processed (RFC 6455 §7.1.7, and data after a close frame).
    discard_input: bool,
    /// What the peer's input calls for once the events before it have been handled.
    deferred: Option<Deferred>,
    /// Whether events were taken that the application has not acknowledged
    /// ([`acknowledge_events`](Self::acknowledge_events)) yet.
    unacknowledged: bool,
    shutdown: ShutdownState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShutdownState {
    NotYet,
    Queued,
    Reported,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.side)
            .field("state", &self.state)
            .field("subprotocol", &self.subprotocol)
            .field("extensions", &self.extensions)
            .field("pending_send", &self.out.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn new(side: Side, config: Arc<Config>, handshake: Handshake, now: Instant) -> Self {
        // The open timeout runs from `now`, when the connection was created.
        let open = config
            .open_timeout
            .map_or(Timer::Off, |timeout| Timer::At(now + timeout));
        let timers = Timers {
            open: Some(open),
            ..Timers::default()
        };
        Self {
            side,
            config,
            state: State::Connecting,
            handshake,
            reader: Reader::default(),
            out: SendBuffer::default(),
            out_message: None,
            events: VecDeque::new(),
            extensions: Vec::new(),
            subprotocol: None,
            random: None,
            client_uri: None,
            now,
            timers,
            keepalive_ping: None,
            keepalive_count: 0,
            closed: ConnectionClosed::default(),
            discard_input: false,
            deferred: None,
            unacknowledged: false,
            shutdown: ShutdownState::NotYet,
        }
    }

    /// A server connection, waiting for the client's handshake request. `now` starts the
    /// open timeout.
    pub fn server(config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let handshake = Handshake::ReadRequest {
            buf: BytesMut::new(),
            scanner: HeadScanner::default(),
        };
        Self::new(Side::Server, config.into(), handshake, now)
    }

    /// A client connection to `uri`; build the request with
    /// [`connect_request`](Self::connect_request) and send it with
    /// [`send_request`](Self::send_request). `now` starts the open timeout.
    pub fn client(uri: WsUri, config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let mut random: Box<dyn RandomSource> = Box::new(rand::rngs::StdRng::from_os_rng());
        let mut nonce = [0; 16];
        random.fill_bytes(&mut nonce);
        let key = handshake::generate_key(nonce);
        let mut connection = Self::new(
            Side::Client,
            config.into(),
            Handshake::AwaitRequest { key },
            now,
        );
        connection.random = Some(random);
        connection.client_uri = Some(uri);
        connection
    }

    /// A connection whose opening handshake happened elsewhere (an HTTP server that did the
    /// upgrade itself, or a test), with the extensions that handshake negotiated.
    pub fn after_handshake(side: Side, config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let mut connection = Self::new(side, config.into(), Handshake::Done, now);
        if side == Side::Client {
            connection.random = Some(Box::new(rand::rngs::StdRng::from_os_rng()));
        }
        connection.open();
        connection
    }

    /// Replaces the source of masking keys and nonces (for deterministic tests).
    pub fn set_random_source(&mut self, random: Box<dyn RandomSource>) {
        self.random = Some(random);
    }

    /// Installs extensions negotiated by a handshake done elsewhere
    /// (see [`after_handshake`](Self::after_handshake)).
    pub fn set_extensions(&mut self, extensions: Vec<Box<dyn Extension>>) {
        self.extensions = extensions;
    }

    /// Which end this is.
    #[must_use]
    pub fn side(&self) -> Side {
        self.side
    }

    /// Where the connection stands.
    #[must_use]
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the connection is over.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The subprotocol the handshake selected.
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The extensions the handshake negotiated, in order.
    #[must_use]
    pub fn extensions(&self) -> &[Box<dyn Extension>] {
        &self.extensions
    }

    /// How the connection ended so far: close frames sent and received, and any failure.
    #[must_use]
    pub fn close_status(&self) -> &ConnectionClosed {
        &self.closed
    }

    /// Bytes queued for the network and not yet taken: what backpressure watches.
    #[must_use]
    pub fn pending_send(&self) -> usize {
        self.out.len()
    }

    // ----- Input -----

    /// Feeds bytes read from the network.
    ///
    /// Never fails: protocol errors fail the connection (a close frame is queued and the
    /// state moves on), and the outcome shows in the events and the state.
    pub fn handle_data(&mut self, data: &[u8]) {
        if self.discard_input || self.state == State::Closed {
            return;
        }
        if self.state == State::Connecting {
            self.handle_handshake_data(data);
        } else {
            self.handle_frames(data);
        }
    }

    /// Reports that the peer closed its end of the TCP connection.
    pub fn handle_eof(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.run_deferred();
        if let Handshake::ReadRejection { .. } = self.handshake {
            self.finish_rejection();
            return;
        }
        if self.state == State::Connecting && self.side == Side::Client {
            self.closed
                .failure
                .get_or_insert(Failure::Handshake(HandshakeError::ClosedEarly));
        }
        self.queue_shutdown();
        self.set_closed();
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must be called, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers
            .all()
            .into_iter()
            .flatten()
            .filter_map(|timer| timer.deadline(self.now))
            .min()
    }

    /// Tells the connection the time: arms new timers and fires expired ones (open timeout,
    /// keepalive ping and pong, close timeout). Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if let Some(timer) = &mut self.timers.open {
            if timer.tick(now) {
                self.timers.open = None;
                self.closed.failure.get_or_insert(Failure::OpenTimeout);
                self.handshake = Handshake::Done;
                self.queue_shutdown();
                self.set_closed();
                return;
            }
        }
        if let Some(timer) = &mut self.timers.close {
            if timer.tick(now) {
                self.timers.close = None;
                if !self.closed.clean {
                    self.closed.failure.get_or_insert(Failure::CloseTimeout);
                }
                self.queue_shutdown();
                self.set_closed();
                return;
            }
        }
        if let Some(timer) = &mut self.timers.acknowledge {
            if timer.tick(now) {
                // The application did not come back in time: act on the peer's input anyway
                // (replies it queues later fail).
                self.run_deferred();
            }
        }
        if let Some(timer) = &mut self.timers.pong {
            if timer.tick(now) {
                self.timers.pong = None;
                self.closed.failure.get_or_insert(Failure::KeepaliveTimeout);
                self.fail(CloseCode::INTERNAL_ERROR, "keepalive ping timeout");
                return;
            }
        }
        if let Some(timer) = &mut self.timers.ping {
            if timer.tick(now) {
                self.send_keepalive_ping();
            }
        }
    }

    // ----- Output -----

    /// The next thing to do with the transport: bytes to write, then possibly a shutdown.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(bytes) = self.out.pop() {
            return Some(Transmit::Bytes(bytes));
        }
        self.poll_shutdown().then_some(Transmit::Shutdown)
    }

    /// The queued bytes, for vectored writes: write [`Buf::chunks_vectored`](bytes::Buf::chunks_vectored) and
    /// [`advance`](bytes::Buf::advance) by what was written. Once it is empty, check
    /// [`poll_shutdown`](Self::poll_shutdown).
    pub fn send_buffer(&mut self) -> &mut SendBuffer {
        &mut self.out
    }

    /// Whether the write half should now be shut down (reported once, after every queued
    /// byte has been taken).
    #[must_use]
    pub fn poll_shutdown(&mut self) -> bool {
        if self.out.is_empty() && self.shutdown == ShutdownState::Queued {
            self.shutdown = ShutdownState::Reported;
            return true;
        }
        false
    }

    /// The next event. Taking events changes nothing else: a close frame or protocol error
    /// from the peer that came after them waits for
    /// [`acknowledge_events`](Self::acknowledge_events).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        self.unacknowledged |= event.is_some();
        event
    }

    /// Whether an event is waiting.
    #[must_use]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Tells the connection that the application has handled every event it has taken
    /// (replies to those messages are queued). A close frame from the peer is answered,
    /// and a protocol error fails the connection, only once the events that came before it
    /// are taken and acknowledged — or once [`Config::acknowledge_timeout`] has passed — so
    /// that replies to those messages go out before the close frame.
    ///
    /// Call it after each batch of events: an event loop after running its handlers, a
    /// blocking or async receiver when the application comes back for the next message.
    pub fn acknowledge_events(&mut self) {
        self.unacknowledged = false;
        if self.events.is_empty() {
            self.run_deferred();
        }
    }

    /// Every pending event, in order (Python websockets' `events_received`).
    pub fn events_received(&mut self) -> impl Iterator<Item = Event> + '_ {
        std::iter::from_fn(move || self.poll_event())
    }

    // ----- Opening handshake -----

    /// Client: the handshake request to send, with the key, offers, and `User-Agent`. Add
    /// headers (`Origin`, cookies, authorization) before passing it to
    /// [`send_request`](Self::send_request).
    ///
    /// # Panics
    /// On a server connection.
    #[must_use]
    pub fn connect_request(&self) -> Request {
        let (Some(uri), Handshake::AwaitRequest { key }) = (&self.client_uri, &self.handshake)
        else {
            panic!("connect_request is for client connections before send_request");
        };
        handshake::build_request(uri, key, &self.config)
    }

    /// Client: queues the handshake request.
    pub fn send_request(&mut self, request: Request) {
        let Handshake::AwaitRequest { key } =
            std::mem::replace(&mut self.handshake, Handshake::Done)
        else {
            return;
        };
        self.queue_bytes(&request.to_bytes());
        self.handshake = Handshake::ReadResponse {
            key,
            buf: BytesMut::new(),
            scanner: HeadScanner::default(),
        };
    }

    /// Server: checks the request (RFC 6455 §4.2.1) and negotiates subprotocol and
    /// extensions. Returns the 101 response, or the error response (400, 405, 426, …) that
    /// describes what is wrong. Alter it if needed, then pass it to
    /// [`send_response`](Self::send_response).
    pub fn accept(&mut self, request: &Request) -> Response {
        let Handshake::AwaitResponse {
            negotiated, error, ..
        } = &mut self.handshake
        else {
            return handshake::reject_response(500, "unexpected handshake state", &self.config);
        };
        match handshake::check_request(request, &self.config) {
            Ok(accepted) => {
                let response = handshake::accept_response(&accepted, &self.config);
                *negotiated = Some(accepted);
                response
            }
            Err(rejection) => {
                let status = rejection.status().unwrap_or(400);
                let text = format!("Failed to open a WebSocket connection: {rejection}.");
                *error = Some(rejection);
                handshake::reject_response(status, &text, &self.config)
            }
        }
    }

    /// Server: an error response with a plain-text body, for requests the application
    /// refuses (authentication, origin, rate limits).
    #[must_use]
    pub fn reject(&self, status: u16, text: &str) -> Response {
        handshake::reject_response(status, text, &self.config)
    }

    /// Server: queues the response. A 101 opens the connection; anything else closes it
    /// after the response is written.
    ///
    /// With 101, the extensions installed are those that [`accept`](Self::accept)
    /// negotiated and that the response still names; the subprotocol is the one it names.
    ///
    /// # Errors
    /// [`SendError::NotOpen`] when no request is waiting for a response.
    pub fn send_response(&mut self, response: Response) -> Result<(), SendError> {
        let Handshake::AwaitResponse {
            buf,
            negotiated,
            error,
        } = std::mem::replace(&mut self.handshake, Handshake::Done)
        else {
            return Err(SendError::NotOpen);
        };
        self.queue_bytes(&response.to_bytes());
        if response.status != 101 {
            let error = error.unwrap_or_else(|| HandshakeError::RejectedByServer {
                status: response.status,
                reason: response.reason.clone(),
            });
            self.closed.failure = Some(Failure::Handshake(error));
            self.queue_shutdown();
            self.set_closed();
            return Ok(());
        }
        if let Some(negotiated) = negotiated {
            let named =
                handshake::parse_extensions(response.headers.get_all("Sec-WebSocket-Extensions"))
                    .unwrap_or_default();
            self.extensions = negotiated
                .extensions
                .into_iter()
                .filter(|(_, extension)| named.iter().any(|n| n.name == extension.name()))
                .map(|(_, extension)| extension)
                .collect();
        }
        self.subprotocol = response
            .headers
            .get("Sec-WebSocket-Protocol")
            .map(str::to_owned);
        self.open();
        if !buf.is_empty() {
            self.handle_frames(&buf);
        }
        Ok(())
    }

    fn handle_handshake_data(&mut self, data: &[u8]) {
        let limits = HeadLimits {
            max_line_len: self.config.max_line_len,
            max_headers: self.config.max_headers,
            max_head_size: self.config.max_head_size,
        };
        match &mut self.handshake {
            Handshake::ReadRequest { buf, scanner } => {
                let (head, rest) = match read_head(buf, scanner, data, limits) {
                    Ok(Some(parts)) => parts,
                    Ok(None) => return,
                    Err(error) => return self.fail_handshake(error),
                };
                match handshake::parse_request(&head, limits.max_headers) {
                    Ok(request) => {
                        self.handshake = Handshake::AwaitResponse {
                            buf: rest,
                            negotiated: None,
                            error: None,
                        };
                        self.events.push_back(Event::Request(request));
                    }
                    Err(error) => self.fail_handshake(error),
                }
            }
            Handshake::AwaitResponse { buf, .. } => {
                if buf.len() + data.len() > limits.max_head_size {
                    let error = HandshakeError::HeadTooLarge {
                        limit: limits.max_head_size,
                    };
                    return self.fail_handshake(error);
                }
                buf.extend_from_slice(data);
            }
            Handshake::ReadResponse { key, buf, scanner } => {
                let (head, rest) = match read_head(buf, scanner, data, limits) {
                    Ok(Some(parts)) => parts,
                    Ok(None) => return,
                    Err(error) => return self.fail_handshake(error),
                };
                let key = std::mem::take(key);
                self.handle_response(&head, &key, rest);
            }
            Handshake::ReadRejection {
                body, remaining, ..
            } => {
                let take = remaining.map_or(data.len(), |left| left.min(data.len()));
                let room = self.config.max_response_body.saturating_sub(body.len());
                body.extend_from_slice(&data[..take.min(room)]);
                if let Some(left) = remaining {
                    *left -= take;
                    if *left == 0 {
                        self.finish_rejection();
                    }
                }
            }
            Handshake::AwaitRequest { .. } | Handshake::Done => {}
        }
    }

    fn handle_response(&mut self, head: &[u8], key: &str, rest: BytesMut) {
        let response = match handshake::parse_response(head, self.config.max_headers) {
            Ok(response) => response,
            Err(error) => return self.fail_handshake(error),
        };
        match handshake::check_response(&response, key, &self.config) {
            Ok(negotiated) => {
                self.handshake = Handshake::Done;
                self.extensions = negotiated.extensions;
                self.subprotocol = negotiated.subprotocol;
                self.events.push_back(Event::Response(response));
                self.open();
                if !rest.is_empty() {
                    self.handle_frames(&rest);
                }
            }
            Err(HandshakeError::Rejected(response)) => {
                let remaining = response
                    .headers
                    .get("Content-Length")
                    .and_then(|len| len.trim().parse::<usize>().ok());
                self.handshake = Handshake::ReadRejection {
                    response,
                    body: BytesMut::new(),
                    remaining,
                };
                if remaining == Some(0) {
                    self.finish_rejection();
                } else if !rest.is_empty() {
                    self.handle_handshake_data(&rest);
                }
            }
            Err(error) => self.fail_handshake(error),
        }
    }

    fn finish_rejection(&mut self) {
        let Handshake::ReadRejection {
            mut response, body, ..
        } = std::mem::replace(&mut self.handshake, Handshake::Done)
        else {
            return;
        };
        response.body = body.freeze();
        self.closed.failure = Some(Failure::Handshake(HandshakeError::Rejected(response)));
        self.queue_shutdown();
        self.set_closed();
    }

    /// Fails the opening handshake: a server answers with the error's status.
    fn fail_handshake(&mut self, error: HandshakeError) {
        tracing::debug!(side = ?self.side, %error, "opening handshake failed");
        if self.side == Side::Server {
            if let Some(status) = error.status() {
                let text = format!("Failed to open a WebSocket connection: {error}.");
                let response = handshake::reject_response(status, &text, &self.config);
                self.queue_bytes(&response.to_bytes());
            }
        }
        self.handshake = Handshake::Done;
        self.closed.failure = Some(Failure::Handshake(error));
        self.queue_shutdown();
        self.set_closed();
    }

    fn open(&mut self) {
        self.state = State::Open;
        self.timers.open = None;
        self.timers.ping = Some(Timer::new(self.config.ping_interval));
    }

    // ----- Frames in -----

    fn handle_frames(&mut self, mut input: &[u8]) {
        self.reader.reclaim();
        while !self.discard_input {
            let Some(frame) = self.reader.frame else {
                match self.read_header(input) {
                    Ok(Some((header, used))) => {
                        input = &input[used..];
                        if let Err(error) = self.start_frame(header) {
                            return self.fail_protocol(error);
                        }
                    }
                    Ok(None) => return,
                    Err(error) => return self.fail_protocol(error),
                }
                continue;
            };
            if frame.remaining > 0 {
                if input.is_empty() {
                    return;
                }
                let take = input
                    .len()
                    .min(usize::try_from(frame.remaining).unwrap_or(usize::MAX));
                let (chunk, rest) = input.split_at(take);
                input = rest;
                if let Err(error) = self.receive_payload(chunk) {
                    return self.fail_protocol(error);
                }
                if self.reader.frame.is_some_and(|frame| frame.remaining > 0) {
                    continue;
                }
            }
            if let Err(error) = self.finish_frame() {
                return self.fail_protocol(error);
            }
        }
    }

    /// Parses a header from `input`, buffering a partial one across calls. Returns the header
    /// and how many bytes of `input` it used.
    fn read_header(&mut self, input: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let reader = &mut self.reader;
        if reader.header_len == 0 {
            if let Some(parsed) = FrameHeader::parse(input)? {
                return Ok(Some(parsed));
            }
            reader.header[..input.len()].copy_from_slice(input);
            reader.header_len = input.len();
            return Ok(None);
        }
        let had = reader.header_len;
        let take = input.len().min(FrameHeader::MAX_LEN - had);
        reader.header[had..had + take].copy_from_slice(&input[..take]);
        match FrameHeader::parse(&reader.header[..had + take])? {
            Some((header, len)) => {
                reader.header_len = 0;
                Ok(Some((header, len - had)))
            }
            None => {
                reader.header_len = had + take;
                Ok(None)
            }
        }
    }

    fn start_frame(&mut self, header: FrameHeader) -> Result<(), ProtocolError> {
        // RFC 6455 §5.1: "The server MUST close the connection upon receiving a frame that is
        // not masked. [...] A client MUST close a connection if it detects a masked frame."
        match (self.side, header.mask) {
            (Side::Server, None) if !self.config.accept_unmasked_frames => {
                return Err(ProtocolError::UnmaskedFrame)
            }
            (Side::Client, Some(_)) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if let Some(limit) = self.config.max_frame_size {
            if header.payload_len > limit as u64 {
                return Err(ProtocolError::FrameTooBig {
                    size: header.payload_len,
                    limit: limit as u64,
                });
            }
        }
        let reader = &mut self.reader;
        // RFC 6455 §5.2: "If a nonzero value is received and none of the negotiated
        // extensions defines the meaning of such a nonzero value, the receiving endpoint MUST
        // _Fail the WebSocket Connection_." Extensions here mark only a message's first frame.
        let first_data_frame = matches!(header.opcode, Opcode::Text | Opcode::Binary);
        if !first_data_frame && !header.rsv.is_empty() {
            return Err(ProtocolError::ReservedBits);
        }
        match header.opcode {
            Opcode::Close | Opcode::Ping | Opcode::Pong => reader.control.clear(),
            // RFC 6455 §5.4: continuation frames continue a fragmented message.
            Opcode::Continuation => {
                let Some(message) = reader.message else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                if message.decoder.is_none() {
                    let size = message.delivered_size + reader.data.len();
                    check_message_size(&self.config, size, header.payload_len)?;
                }
            }
            Opcode::Text | Opcode::Binary => {
                // RFC 6455 §5.4: "the fragments of one message MUST NOT be interleaved
                // between the fragments of another message".
                if reader.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                let decoder = if header.rsv.is_empty() {
                    None
                } else {
                    let index = self
                        .extensions
                        .iter()
                        .position(|extension| extension.rsv() == header.rsv)
                        .ok_or(ProtocolError::ReservedBits)?;
                    Some(index)
                };
                if decoder.is_none() {
                    check_message_size(&self.config, 0, header.payload_len)?;
                }
                let kind = if header.opcode == Opcode::Text {
                    Kind::Text
                } else {
                    Kind::Binary
                };
                reader.message = Some(InMessage {
                    kind,
                    decoder,
                    utf8_valid: 0,
                    delivered_size: 0,
                    delivered: false,
                });
            }
        }
        let reserve = usize::try_from(header.payload_len)
            .unwrap_or(usize::MAX)
            .min(MAX_RESERVE_AHEAD);
        if !header.opcode.is_control() {
            let decoded = reader
                .message
                .is_some_and(|message| message.decoder.is_some());
            if !decoded && reader.data.capacity() - reader.data.len() < reserve {
                // Room for a few such messages: those of one read then share an allocation.
                let growth = reserve.saturating_mul(4);
                reader
                    .data
                    .reserve(growth.clamp(MIN_BUFFER_GROWTH, MAX_RESERVE_AHEAD.max(reserve)));
                reader.data_room = reader.data.capacity() - reader.data.len();
            }
        }
        reader.frame = Some(InFrame {
            opcode: header.opcode,
            fin: header.fin,
            mask: header.mask,
            received: 0,
            remaining: header.payload_len,
        });
        Ok(())
    }

    fn receive_payload(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        let reader = &mut self.reader;
        let Some(frame) = &mut reader.frame else {
            return Ok(());
        };
        let mask = frame.mask;
        let offset = frame.received;
        frame.received += chunk.len();
        frame.remaining -= chunk.len() as u64;
        if frame.opcode.is_control() {
            let start = reader.control.len();
            reader.control.extend_from_slice(chunk);
            if let Some(key) = mask {
                apply_mask(&mut reader.control[start..], key, offset);
            }
            return Ok(());
        }
        let Some(message) = &mut reader.message else {
            return Ok(());
        };
        let limit = self.config.max_message_size.unwrap_or(usize::MAX);
        match message.decoder {
            None => {
                let start = reader.data.len();
                reader.data.extend_from_slice(chunk);
                if let Some(key) = mask {
                    apply_mask(&mut reader.data[start..], key, offset);
                }
            }
            Some(index) => {
                reader.raw.clear();
                reader.raw.extend_from_slice(chunk);
                if let Some(key) = mask {
                    apply_mask(&mut reader.raw, key, offset);
                }
                let room = limit.saturating_sub(message.delivered_size);
                self.extensions[index].decode(&reader.raw, &mut reader.data, room)?;
            }
        }
        if message.kind == Kind::Text {
            message.utf8_valid = validate_utf8(&reader.data, message.utf8_valid, false)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    fn finish_frame(&mut self) -> Result<(), ProtocolError> {
        let Some(frame) = self.reader.frame.take() else {
            return Ok(());
        };
        match frame.opcode {
            Opcode::Close => self.receive_close(),
            Opcode::Ping => {
                let payload = Bytes::copy_from_slice(&self.reader.control);
                // RFC 6455 §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong
                // frame in response, unless it already received a Close frame."
                if self.closed.received.is_none() && self.shutdown == ShutdownState::NotYet {
                    self.write_frame(true, Rsv::NONE, Opcode::Pong, &payload);
                }
                self.events.push_back(Event::Ping(payload));
                Ok(())
            }
            Opcode::Pong => {
                let payload = Bytes::copy_from_slice(&self.reader.control);
                if self
                    .keepalive_ping
                    .is_some_and(|ping| payload[..] == ping[..])
                {
                    self.keepalive_ping = None;
                    self.timers.pong = None;
                }
                self.events.push_back(Event::Pong(payload));
                Ok(())
            }
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                self.finish_data_frame(frame.fin)
            }
        }
    }

    fn finish_data_frame(&mut self, fin: bool) -> Result<(), ProtocolError> {
        let limit = self.config.max_message_size.unwrap_or(usize::MAX);
        let reader = &mut self.reader;
        let Some(message) = &mut reader.message else {
            return Ok(());
        };
        if fin {
            if let Some(index) = message.decoder {
                let room = limit.saturating_sub(message.delivered_size);
                self.extensions[index].finish_decode(&mut reader.data, room)?;
            }
        }
        if message.kind == Kind::Text {
            message.utf8_valid = validate_utf8(&reader.data, message.utf8_valid, fin)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if !fin && !self.config.deliver_fragments {
            return Ok(());
        }
        let message = *message;
        if fin {
            reader.message = None;
        }
        let ready = if message.kind == Kind::Text {
            message.utf8_valid
        } else {
            reader.data.len()
        };
        let payload = reader.data.split_to(ready).freeze();
        if let Some(current) = &mut reader.message {
            // Every validated text byte was just delivered (binary has none to count).
            current.utf8_valid = 0;
            current.delivered_size += ready;
            current.delivered = true;
        }
        if reader.data.capacity() > MAX_RETAINED_BUFFER && reader.data.is_empty() {
            reader.data = BytesMut::new();
        }
        let data = match message.kind {
            Kind::Text => Message::Text(Utf8Bytes::from_validated(payload)),
            Kind::Binary => Message::Binary(payload),
        };
        let event = if self.config.deliver_fragments {
            Event::Fragment(Fragment {
                data,
                first: !message.delivered,
                fin,
            })
        } else {
            Event::Message(data)
        };
        self.events.push_back(event);
        Ok(())
    }

    fn receive_close(&mut self) -> Result<(), ProtocolError> {
        let close = CloseFrame::parse(&self.reader.control)?;
        tracing::debug!(side = ?self.side, code = %close.code, "close frame received");
        // RFC 6455 §1.4: after a close frame, no more data is processed.
        self.discard_input = true;
        let payload = std::mem::take(&mut self.reader.control);
        self.defer(Deferred::Close(close, payload));
        Ok(())
    }

    /// Acts on `deferred` now if no event is waiting, else once the application has taken
    /// the events before it: replies to the messages that came before a close frame or a
    /// protocol error go out before the close frame that ends the connection.
    fn defer(&mut self, deferred: Deferred) {
        self.discard_input = true;
        self.deferred = Some(deferred);
        if self.events.is_empty() && !self.unacknowledged {
            self.run_deferred();
        } else {
            self.timers.acknowledge = Some(Timer::new(self.config.acknowledge_timeout));
        }
    }

    fn run_deferred(&mut self) {
        self.timers.acknowledge = None;
        match self.deferred.take() {
            Some(Deferred::Close(close, payload)) => self.answer_close(close, &payload),
            Some(Deferred::Failure(error)) => self.fail_now(error),
            None => {}
        }
    }

    /// Answers a received close frame.
    fn answer_close(&mut self, close: CloseFrame, payload: &[u8]) {
        if self.closed.sent.is_none() {
            // RFC 6455 §5.5.1: "If an endpoint receives a Close frame and did not previously
            // send a Close frame, the endpoint MUST send a Close frame in response. (When
            // sending a Close frame in response, the endpoint typically echos the status code
            // it received.)"
            self.closed.initiator = Some(Initiator::Remote);
            self.write_frame(true, Rsv::NONE, Opcode::Close, payload);
            self.closed.sent = Some(close.clone());
        }
        self.closed.received = Some(close);
        self.closed.clean = true;
        self.enter_closing();
        // RFC 6455 §7.1.1: "the server [...] SHOULD close the underlying TCP connection
        // first"; the client waits for it (within the close timeout).
        if self.side == Side::Server {
            self.queue_shutdown();
        }
    }

    fn enter_closing(&mut self) {
        if self.state == State::Open {
            self.state = State::Closing;
            self.timers.ping = None;
            self.timers.pong = None;
            self.timers.close = Some(Timer::new(self.config.close_timeout));
        }
    }

    fn fail_protocol(&mut self, error: ProtocolError) {
        self.defer(Deferred::Failure(error));
    }

    fn fail_now(&mut self, error: ProtocolError) {
        tracing::debug!(side = ?self.side, %error, code = %error.close_code(), "failing the connection");
        let code = error.close_code();
        let reason = error.to_string();
        self.closed.failure.get_or_insert(Failure::Protocol(error));
        self.fail(code, &reason);
    }

    // ----- Commands -----

    /// Sends a text message.
    ///
    /// # Errors
    /// [`SendError::NotOpen`] before the handshake, [`SendError::Closed`] once closing,
    /// [`SendError::MessageInProgress`] while a fragmented message is being sent.
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_data(Opcode::Text, text.as_bytes(), None, SendOptions::default())
    }

    /// Sends a binary message.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_data(Opcode::Binary, data, None, SendOptions::default())
    }

    /// Sends a message; large payloads are queued without a copy when no masking or
    /// extension needs to rewrite them.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send(&mut self, message: impl Into<Message>) -> Result<(), SendError> {
        self.send_with(message.into(), SendOptions::default())
    }

    /// Sends a message with per-message options (such as whether to compress it).
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_with(&mut self, message: Message, options: SendOptions) -> Result<(), SendError> {
        let (opcode, payload) = match message {
            Message::Text(text) => (Opcode::Text, text.into_bytes()),
            Message::Binary(data) => (Opcode::Binary, data),
        };
        self.send_data(opcode, &payload, Some(&payload), options)
    }

    /// Sends a message encoded beforehand with [`PreparedMessage::new`]: a server without
    /// a transforming extension queues the shared frame as is; other connections encode the
    /// message as [`send`](Self::send) would.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<(), SendError> {
        if self.side == Side::Client || !self.extensions.is_empty() {
            return self.send_with(prepared.message.clone(), SendOptions::default());
        }
        self.check_can_send()?;
        if self.out_message.is_some() {
            return Err(SendError::MessageInProgress);
        }
        if prepared.frame.len() < SHARE_THRESHOLD {
            self.queue_bytes(&prepared.frame);
        } else {
            self.out.push_shared(prepared.frame.clone());
        }
        Ok(())
    }

    /// Sends the first or a middle piece (`fin == false`) or the last piece (`fin == true`)
    /// of a fragmented text message. Continue it with [`send_continuation`](Self::send_continuation).
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_text_fragment(&mut self, text: &str, fin: bool) -> Result<(), SendError> {
        self.send_fragment(Opcode::Text, text.as_bytes(), fin)
    }

    /// Sends the first piece of a fragmented binary message (the whole message if `fin`).
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_binary_fragment(&mut self, data: &[u8], fin: bool) -> Result<(), SendError> {
        self.send_fragment(Opcode::Binary, data, fin)
    }

    /// Sends the next piece of the fragmented message in progress; `fin` ends it.
    ///
    /// # Errors
    /// [`SendError::NoMessageInProgress`] without a fragmented message in progress, and as
    /// [`send_text`](Self::send_text).
    pub fn send_continuation(&mut self, data: &[u8], fin: bool) -> Result<(), SendError> {
        self.send_fragment(Opcode::Continuation, data, fin)
    }

    /// Sends the bytes of `message` in `range` as one fragment (ranges from
    /// `Message::fragment_ranges`): the first fragment of the message's type, the next ones
    /// continuations.
    #[cfg(any(feature = "sync", feature = "tokio"))]
    pub(crate) fn send_message_fragment(
        &mut self,
        message: &Message,
        range: std::ops::Range<usize>,
        fin: bool,
    ) -> Result<(), SendError> {
        let opcode = match (range.start, message) {
            (0, Message::Text(_)) => Opcode::Text,
            (0, Message::Binary(_)) => Opcode::Binary,
            _ => Opcode::Continuation,
        };
        self.send_fragment(opcode, &message.as_bytes()[range], fin)
    }

    fn send_fragment(&mut self, opcode: Opcode, data: &[u8], fin: bool) -> Result<(), SendError> {
        self.check_can_send()?;
        let first = opcode != Opcode::Continuation;
        let transformed = match (first, self.out_message) {
            (true, Some(_)) => return Err(SendError::MessageInProgress),
            (false, None) => return Err(SendError::NoMessageInProgress),
            (true, None) => None,
            (false, Some(message)) => Some(message.transformed),
        };
        let position = FramePosition { first, fin };
        let transformed = self.write_data_frame(opcode, data, None, position, transformed, None)?;
        self.out_message = (!fin).then_some(OutMessage { transformed });
        Ok(())
    }

    fn send_data(
        &mut self,
        opcode: Opcode,
        data: &[u8],
        shared: Option<&Bytes>,
        options: SendOptions,
    ) -> Result<(), SendError> {
        self.check_can_send()?;
        if self.out_message.is_some() {
            return Err(SendError::MessageInProgress);
        }
        let position = FramePosition {
            first: true,
            fin: true,
        };
        self.write_data_frame(opcode, data, shared, position, None, options.compress)?;
        Ok(())
    }

    /// Writes one data frame, through the extension that transforms the message if any.
    /// Returns whether the message is transformed.
    fn write_data_frame(
        &mut self,
        opcode: Opcode,
        data: &[u8],
        shared: Option<&Bytes>,
        position: FramePosition,
        transformed: Option<bool>,
        compress: Option<bool>,
    ) -> Result<bool, SendError> {
        let mut encoded = BytesMut::new();
        let mut rsv = Rsv::NONE;
        let mut used = false;
        if transformed != Some(false) {
            for extension in &mut self.extensions {
                if extension.encode(data, position, compress, &mut encoded)? {
                    rsv = extension.rsv();
                    used = true;
                    break;
                }
            }
        }
        let rsv = if position.first { rsv } else { Rsv::NONE };
        if used {
            self.write_frame(position.fin, rsv, opcode, &encoded);
        } else if let (Some(bytes), Side::Server) = (shared, self.side) {
            self.write_shared_frame(position.fin, opcode, bytes.clone());
        } else {
            self.write_frame(position.fin, rsv, opcode, data);
        }
        Ok(used)
    }

    /// Sends a ping (RFC 6455 §5.5.2); the peer answers with a pong carrying `payload`.
    ///
    /// # Errors
    /// [`SendError::ControlPayloadTooLong`] past 125 bytes, and as
    /// [`send_text`](Self::send_text).
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(Opcode::Ping, payload)
    }

    /// Sends an unsolicited pong (RFC 6455 §5.5.3: a unidirectional heartbeat).
    ///
    /// # Errors
    /// As [`send_ping`](Self::send_ping).
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(Opcode::Pong, payload)
    }

    fn send_control(&mut self, opcode: Opcode, payload: &[u8]) -> Result<(), SendError> {
        self.check_can_send()?;
        if payload.len() > MAX_CONTROL_PAYLOAD_LEN {
            return Err(SendError::ControlPayloadTooLong(payload.len()));
        }
        self.write_frame(true, Rsv::NONE, opcode, payload);
        Ok(())
    }

    /// Starts the closing handshake (RFC 6455 §7.1.2). Pass
    /// [`CloseCode::NO_STATUS_RECEIVED`] to send a close frame without a code. The reason is
    /// cut at 123 bytes.
    ///
    /// # Errors
    /// [`SendError::InvalidCloseCode`] for a code that may not be sent, and
    /// [`SendError::NotOpen`] / [`SendError::Closed`] as for
    /// [`send_text`](Self::send_text).
    pub fn send_close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if !code.is_valid() && code != CloseCode::NO_STATUS_RECEIVED {
            return Err(SendError::InvalidCloseCode(code.as_u16()));
        }
        self.check_can_send()?;
        self.write_close(code, reason);
        Ok(())
    }

    fn write_close(&mut self, code: CloseCode, reason: &str) {
        let close = CloseFrame::new(code, truncate_utf8(reason, 123));
        self.write_frame(true, Rsv::NONE, Opcode::Close, &close.payload());
        self.closed.initiator.get_or_insert(Initiator::Local);
        self.closed.sent = Some(close);
        self.enter_closing();
    }

    /// Fails the connection (RFC 6455 §7.1.7): sends a close frame with `code` if the
    /// connection is open, stops processing input, and — on a server — shuts the TCP
    /// connection down without waiting for the peer's close frame. Use
    /// [`CloseCode::ABNORMAL`] to send no close frame.
    pub fn fail(&mut self, code: CloseCode, reason: &str) {
        match self.state {
            State::Closed => return,
            State::Open if code != CloseCode::ABNORMAL && self.closed.sent.is_none() => {
                // RFC 6455 §7.1.7: "the endpoint SHOULD send a Close frame with an
                // appropriate status code".
                let code = if code.is_valid() {
                    code
                } else {
                    CloseCode::INTERNAL_ERROR
                };
                self.write_close(code, reason);
            }
            State::Connecting => {
                self.discard_input = true;
                self.handshake = Handshake::Done;
                self.queue_shutdown();
                self.set_closed();
                return;
            }
            _ => self.enter_closing(),
        }
        // "An endpoint MUST NOT continue to attempt to process data (including a responding
        // Close frame) from the remote endpoint after being instructed to _Fail the WebSocket
        // Connection_."
        self.discard_input = true;
        if self.side == Side::Server {
            self.queue_shutdown();
        }
    }

    fn check_can_send(&self) -> Result<(), SendError> {
        match self.state {
            State::Open => Ok(()),
            State::Connecting => Err(SendError::NotOpen),
            State::Closing | State::Closed => Err(SendError::Closed),
        }
    }

    fn send_keepalive_ping(&mut self) {
        self.timers.ping = Some(Timer::new(self.config.ping_interval));
        if self.state != State::Open || self.keepalive_ping.is_some() {
            return;
        }
        self.keepalive_count = self.keepalive_count.wrapping_add(1);
        let payload = self.keepalive_count.to_be_bytes();
        self.write_frame(true, Rsv::NONE, Opcode::Ping, &payload);
        self.keepalive_ping = Some(payload);
        self.timers.pong = Some(Timer::new(self.config.ping_timeout));
    }

    // ----- Frames out -----

    fn next_mask(&mut self) -> Option<[u8; 4]> {
        if self.side == Side::Server {
            return None;
        }
        let mut key = [0; 4];
        if let Some(random) = &mut self.random {
            random.fill_bytes(&mut key);
        }
        Some(key)
    }

    fn write_frame(&mut self, fin: bool, rsv: Rsv, opcode: Opcode, payload: &[u8]) {
        let mask = self.next_mask();
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let tail = self.out.tail();
        let before = tail.len();
        tail.reserve(header.encoded_len() + payload.len());
        header.encode(tail);
        let start = tail.len();
        tail.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut tail[start..], key, 0);
        }
        let written = tail.len() - before;
        self.out.grew(written);
    }

    /// Server side: queues a large payload after its header without copying it.
    fn write_shared_frame(&mut self, fin: bool, opcode: Opcode, payload: Bytes) {
        if payload.len() < SHARE_THRESHOLD {
            return self.write_frame(fin, Rsv::NONE, opcode, &payload);
        }
        let header = FrameHeader {
            fin,
            rsv: Rsv::NONE,
            opcode,
            mask: None,
            payload_len: payload.len() as u64,
        };
        self.out.push_frame_shared(&header, payload);
    }

    fn queue_bytes(&mut self, bytes: &[u8]) {
        self.out.tail().extend_from_slice(bytes);
        self.out.grew(bytes.len());
    }

    fn queue_shutdown(&mut self) {
        if self.shutdown == ShutdownState::NotYet {
            self.shutdown = ShutdownState::Queued;
        }
    }

    fn set_closed(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.discard_input = true;
        self.timers = Timers::default();
        self.reader = Reader::default();
        tracing::debug!(side = ?self.side, closed = %self.closed, "connection closed");
        self.events.push_back(Event::Closed(self.closed.clone()));
    }
}

/// Buffers `data` until the HTTP head in `buf` is complete, never holding more than the head
/// size limit. Returns the head and the bytes that came after it, once it is complete.
fn read_head(
    buf: &mut BytesMut,
    scanner: &mut HeadScanner,
    data: &[u8],
    limits: HeadLimits,
) -> Result<Option<(BytesMut, BytesMut)>, HandshakeError> {
    let room = limits.max_head_size.saturating_sub(buf.len()).max(1);
    let (buffered, beyond) = data.split_at(data.len().min(room));
    buf.extend_from_slice(buffered);
    let Some(end) = scanner.scan(buf, limits)? else {
        return Ok(None);
    };
    let head = buf.split_to(end);
    let mut rest = std::mem::take(buf);
    rest.extend_from_slice(beyond);
    Ok(Some((head, rest)))
}

/// Fails early when a frame would take a message past `Config::max_message_size`.
fn check_message_size(config: &Config, size: usize, frame_len: u64) -> Result<(), ProtocolError> {
    let Some(limit) = config.max_message_size else {
        return Ok(());
    };
    let total = (size as u64).saturating_add(frame_len);
    if total > limit as u64 {
        return Err(ProtocolError::MessageTooBig {
            size: total,
            limit: limit as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Masked client frames (RFC 6455 §5.7 key) for `opcode` carrying `payload`.
    fn client_frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        super::super::Frame::new(opcode, payload.to_vec())
            .encode(Some([0x37, 0xfa, 0x21, 0x3d]), &mut out);
        out.to_vec()
    }

    fn server() -> Connection {
        Connection::after_handshake(Side::Server, Config::default(), Instant::now())
    }

    fn written(conn: &mut Connection) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(Transmit::Bytes(bytes)) = conn.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        out
    }

    #[test]
    fn reply_to_a_message_goes_out_before_the_close_reply_that_came_in_the_same_chunk() {
        let mut conn = server();
        let mut input = client_frame(Opcode::Text, b"Hello");
        input.extend(client_frame(Opcode::Close, &[0x03, 0xe8]));
        conn.handle_data(&input);
        let Some(Event::Message(message)) = conn.poll_event() else {
            panic!("the message comes first");
        };
        conn.send(message).unwrap();
        assert!(conn.poll_event().is_none());
        conn.acknowledge_events();
        assert_eq!(written(&mut conn), b"\x81\x05Hello\x88\x02\x03\xe8");
        assert_eq!(conn.state(), State::Closing);
    }

    #[test]
    fn reply_to_a_message_goes_out_before_failing_on_the_bad_frame_after_it() {
        let mut conn = server();
        let mut input = client_frame(Opcode::Text, b"Hello");
        input.extend([0x8E, 0x80, 0, 0, 0, 0]); // reserved opcode 0xE
        conn.handle_data(&input);
        let Some(Event::Message(message)) = conn.poll_event() else {
            panic!("the message comes first");
        };
        conn.send(message).unwrap();
        assert!(conn.poll_event().is_none());
        conn.acknowledge_events();
        let out = written(&mut conn);
        assert_eq!(&out[..7], b"\x81\x05Hello");
        assert_eq!(&out[7..8], b"\x88");
        assert_eq!(&out[9..11], b"\x03\xea"); // close 1002, then a reason
    }

    #[test]
    fn close_waits_for_the_events_before_it_to_be_acknowledged() {
        let mut conn = server();
        let mut input = client_frame(Opcode::Text, b"Hello");
        input.extend(client_frame(Opcode::Close, &[0x03, 0xe8]));
        conn.handle_data(&input);
        assert!(matches!(conn.poll_event(), Some(Event::Message(_))));
        assert!(conn.poll_event().is_none());
        assert!(
            written(&mut conn).is_empty(),
            "taking events is not acknowledging them"
        );
        assert_eq!(conn.state(), State::Open);
        conn.acknowledge_events();
        assert_eq!(written(&mut conn), b"\x88\x02\x03\xe8");
    }

    #[test]
    fn acknowledging_with_events_still_queued_keeps_the_close_waiting() {
        let mut conn = server();
        let mut input = client_frame(Opcode::Text, b"one");
        input.extend(client_frame(Opcode::Text, b"two"));
        input.extend(client_frame(Opcode::Close, &[0x03, 0xe8]));
        conn.handle_data(&input);
        assert!(conn.poll_event().is_some());
        conn.acknowledge_events();
        assert!(
            written(&mut conn).is_empty(),
            "the second message is not taken yet"
        );
        assert!(conn.poll_event().is_some());
        conn.acknowledge_events();
        assert_eq!(written(&mut conn), b"\x88\x02\x03\xe8");
    }

    #[test]
    fn close_is_answered_once_the_acknowledge_timeout_passes_on_a_fake_clock() {
        let start = Instant::now();
        let config = Config {
            acknowledge_timeout: Some(Duration::from_millis(100)),
            ..Config::default()
        };
        let mut conn = Connection::after_handshake(Side::Server, config, start);
        let mut input = client_frame(Opcode::Text, b"Hello");
        input.extend(client_frame(Opcode::Close, &[0x03, 0xe8]));
        conn.handle_data(&input);
        assert!(conn.poll_event().is_some());
        conn.handle_timeout(start); // arms the timer
        assert_eq!(
            conn.poll_timeout(),
            Some(start + Duration::from_millis(100)),
            "the acknowledge timeout is the next deadline"
        );
        conn.handle_timeout(start + Duration::from_millis(99));
        assert!(written(&mut conn).is_empty());
        conn.handle_timeout(start + Duration::from_millis(100));
        assert_eq!(written(&mut conn), b"\x88\x02\x03\xe8");
        assert_eq!(conn.state(), State::Closing);
    }

    #[test]
    fn without_an_acknowledge_timeout_the_close_waits_for_the_acknowledgement() {
        let start = Instant::now();
        let config = Config {
            acknowledge_timeout: None,
            ..Config::default()
        };
        let mut conn = Connection::after_handshake(Side::Server, config, start);
        let mut input = client_frame(Opcode::Text, b"Hello");
        input.extend(client_frame(Opcode::Close, &[0x03, 0xe8]));
        conn.handle_data(&input);
        assert!(conn.poll_event().is_some());
        conn.handle_timeout(start + Duration::from_secs(3600));
        assert!(written(&mut conn).is_empty());
        conn.acknowledge_events();
        assert_eq!(written(&mut conn), b"\x88\x02\x03\xe8");
    }

    #[test]
    fn close_is_answered_at_once_when_no_event_is_waiting() {
        let mut conn = server();
        conn.handle_data(&client_frame(Opcode::Close, &[0x03, 0xe8]));
        assert_eq!(written(&mut conn), b"\x88\x02\x03\xe8");
    }
}
