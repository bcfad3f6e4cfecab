//! The per-connection protocol state machine: a facade over its parts, each in its own
//! file — the [lifecycle](lifecycle) (states and every transition), the [opening
//! handshake](opening), the [frame reader](reader), the [send path](writer) and the
//! [timers](timers). This file wires them together in the order RFC 6455 asks for.

mod lifecycle;
mod opening;
mod reader;
mod timers;
mod writer;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use self::lifecycle::{Deferred, Input, Lifecycle, Shutdown};
use self::opening::{Answer, Opening, Progress};
use self::reader::{Context, Control, Reader};
use self::timers::{Expired, Keepalive, Timers};
use self::writer::{into_parts, Writer};
pub use self::writer::{PreparedMessage, RandomSource, SendOptions};
use super::error::SendError;
use super::event::{ConnectionClosed, Event, Failure, Side, State};
use super::extension::Extension;
use super::frame::{CloseCode, Opcode, Rsv, MAX_CONTROL_PAYLOAD_LEN};
use super::handshake::{self, Negotiated, Request, Response};
use super::message::Message;
use super::send_buffer::SendBuffer;
use super::{Config, WsUri};

/// What the I/O layer should do next with the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Write these bytes.
    Bytes(Bytes),
    /// Everything has been written: shut down the write half of the TCP connection (for a
    /// server this closes TCP first, RFC 6455 §7.1.1).
    Shutdown,
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
/// let request = client.connect_request()?;
/// client.send_request(request)?;
/// ferry(&mut client, &mut server);
/// let Some(Event::Request(request)) = server.poll_event() else { unreachable!() };
/// let response = server.accept(&request)?;
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
    lifecycle: Lifecycle,
    reader: Reader,
    writer: Writer,
    events: VecDeque<Event>,
    /// Whether events were taken that the application has not acknowledged
    /// ([`acknowledge_events`](Self::acknowledge_events)) yet.
    unacknowledged: bool,
    extensions: Vec<Box<dyn Extension>>,
    subprotocol: Option<String>,
    /// The most recent time the I/O layer told us.
    now: Instant,
    timers: Timers,
    keepalive: Keepalive,
    closed: ConnectionClosed,
    shutdown: Shutdown,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.side)
            .field("state", &self.state())
            .field("subprotocol", &self.subprotocol)
            .field("extensions", &self.extensions)
            .field("pending_send", &self.writer.pending())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn new(side: Side, config: Arc<Config>, lifecycle: Lifecycle, now: Instant) -> Self {
        // The open timeout runs from `now`, when the connection was created.
        let timers = Timers::opening(config.open_timeout, now);
        Self {
            side,
            config,
            lifecycle,
            reader: Reader::default(),
            writer: Writer::new(side, None),
            events: VecDeque::new(),
            unacknowledged: false,
            extensions: Vec::new(),
            subprotocol: None,
            now,
            timers,
            keepalive: Keepalive::default(),
            closed: ConnectionClosed::default(),
            shutdown: Shutdown::NotYet,
        }
    }

    /// A server connection, waiting for the client's handshake request. `now` starts the
    /// open timeout.
    pub fn server(config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let opening = Lifecycle::Connecting(Opening::server());
        Self::new(Side::Server, config.into(), opening, now)
    }

    /// A client connection to `uri`; build the request with
    /// [`connect_request`](Self::connect_request) and send it with
    /// [`send_request`](Self::send_request). `now` starts the open timeout.
    pub fn client(uri: WsUri, config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let opening = Lifecycle::Connecting(Opening::client(uri));
        Self::new(Side::Client, config.into(), opening, now)
    }

    /// A connection whose opening handshake happened elsewhere (an HTTP server that did the
    /// upgrade itself, or a test); install what that handshake negotiated with
    /// [`set_extensions`](Self::set_extensions).
    pub fn after_handshake(side: Side, config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let mut connection = Self::new(side, config.into(), Lifecycle::Closed, now);
        connection.open();
        connection
    }

    /// The source of masking keys and handshake nonces. Without one, a client makes a
    /// generator seeded from the operating system the first time it needs random bytes;
    /// tests pass a deterministic one.
    #[must_use]
    pub fn with_random_source(mut self, random: Box<dyn RandomSource>) -> Self {
        self.writer.set_random_source(random);
        self
    }

    /// A server connection opened by a handshake that another HTTP stack carried: the
    /// subprotocol and extensions that [`negotiate`](crate::proto::negotiate) agreed on are
    /// in use. `now` starts the keepalive timers.
    pub fn from_negotiated(
        negotiated: Negotiated,
        config: impl Into<Arc<Config>>,
        now: Instant,
    ) -> Self {
        let Negotiated {
            extensions,
            subprotocol,
            ..
        } = negotiated;
        Self::opened_with(Side::Server, config.into(), now, extensions, subprotocol)
    }

    /// A client connection opened by an HTTP/2 extended CONNECT that `negotiated` checked.
    #[cfg(feature = "http2")]
    pub(crate) fn from_negotiated_client(
        negotiated: handshake::NegotiatedClient,
        config: impl Into<Arc<Config>>,
        now: Instant,
    ) -> Self {
        let handshake::NegotiatedClient {
            extensions,
            subprotocol,
        } = negotiated;
        Self::opened_with(Side::Client, config.into(), now, extensions, subprotocol)
    }

    /// An open connection with what a handshake done elsewhere agreed on.
    fn opened_with(
        side: Side,
        config: Arc<Config>,
        now: Instant,
        extensions: Vec<Box<dyn Extension>>,
        subprotocol: Option<String>,
    ) -> Self {
        let mut connection = Self::after_handshake(side, config, now);
        connection.extensions = extensions;
        connection.subprotocol = subprotocol;
        connection
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
        self.lifecycle.state()
    }

    /// Whether a fragmented message is being sent (its last fragment is still to come):
    /// no other data message can be sent until it ends.
    #[must_use]
    pub fn is_sending_fragments(&self) -> bool {
        self.writer.is_in_message()
    }

    /// Whether the connection is over.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Closed)
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
        self.writer.pending()
    }

    // ----- Input -----

    /// Feeds bytes read from the network.
    ///
    /// Never fails: protocol errors fail the connection (a close frame is queued and the
    /// state moves on), and the outcome shows in the events and the state.
    pub fn handle_data(&mut self, data: &[u8]) {
        if let Lifecycle::Connecting(opening) = &mut self.lifecycle {
            let progress = opening.handle_data(data, &self.config);
            self.handle_progress(progress);
        } else if self.lifecycle.reads_frames() {
            self.keepalive.hear();
            self.handle_frames(data);
        }
    }

    /// Reports that the peer closed its end of the TCP connection.
    pub fn handle_eof(&mut self) {
        if self.is_closed() {
            return;
        }
        self.run_deferred();
        if let Lifecycle::Connecting(opening) = &mut self.lifecycle {
            if let (Some(error), Side::Client) = (opening.handle_eof(), self.side) {
                self.fail_connection(Some(Failure::Handshake(error)), CloseCode::ABNORMAL, "");
            }
        }
        self.queue_shutdown();
        self.set_closed();
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must be called, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline(self.now)
    }

    /// Tells the connection the time: arms new timers and fires expired ones (open timeout,
    /// acknowledge timeout, keepalive ping and pong, close timeout). Calling it early is
    /// harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        while let Some(expired) = self.timers.expire(now) {
            match expired {
                Expired::Open => {
                    self.fail_connection(Some(Failure::OpenTimeout), CloseCode::ABNORMAL, "");
                }
                Expired::Close => {
                    if !self.closed.clean {
                        self.closed.failure.get_or_insert(Failure::CloseTimeout);
                    }
                    self.queue_shutdown();
                    self.set_closed();
                }
                // The application did not come back in time: act on the peer's input anyway
                // (replies it queues later fail).
                Expired::Acknowledge => self.run_deferred(),
                // A peer still sending is alive, its pong queued behind its messages:
                // give it another timeout.
                Expired::Pong if self.keepalive.take_heard() => {
                    self.timers.start(Expired::Pong, self.config.ping_timeout);
                }
                Expired::Pong => self.fail_connection(
                    Some(Failure::KeepaliveTimeout),
                    CloseCode::INTERNAL_ERROR,
                    "keepalive ping timeout",
                ),
                Expired::Ping => self.send_keepalive_ping(),
            }
        }
    }

    fn send_keepalive_ping(&mut self) {
        self.timers.start(Expired::Ping, self.config.ping_interval);
        if self.state() != State::Open {
            return;
        }
        if let Some(payload) = self.keepalive.next_ping() {
            self.writer.frame(true, Rsv::NONE, Opcode::Ping, &payload);
            self.timers.start(Expired::Pong, self.config.ping_timeout);
        }
    }

    // ----- Output -----

    /// The next thing to do with the transport: bytes to write, then possibly a shutdown.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(bytes) = self.writer.buffer().pop() {
            return Some(Transmit::Bytes(bytes));
        }
        self.poll_shutdown().then_some(Transmit::Shutdown)
    }

    /// The queued bytes, for vectored writes: write [`Buf::chunks_vectored`](bytes::Buf::chunks_vectored) and
    /// [`advance`](bytes::Buf::advance) by what was written. Once it is empty, check
    /// [`poll_shutdown`](Self::poll_shutdown).
    pub fn send_buffer(&mut self) -> &mut SendBuffer {
        self.writer.buffer()
    }

    /// Whether the write half should now be shut down (reported once, after every queued
    /// byte has been taken).
    #[must_use]
    pub fn poll_shutdown(&mut self) -> bool {
        if self.writer.is_empty() && self.shutdown == Shutdown::Queued {
            self.shutdown = Shutdown::Reported;
            return true;
        }
        false
    }

    /// The next event. Taking events changes nothing else: a close frame or protocol error
    /// from the peer that came after them waits for
    /// [`acknowledge_events`](Self::acknowledge_events).
    #[must_use]
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        self.unacknowledged = true;
        if self.events.is_empty() && self.awaits_acknowledgement() {
            self.events_taken();
        }
        Some(event)
    }

    /// Whether a close frame or protocol error from the peer waits for the events before it
    /// to be acknowledged ([`acknowledge_events`](Self::acknowledge_events)). A layer that
    /// queues messages for its application hands them over one at a time meanwhile, so
    /// that [`Config::acknowledge_timeout`] runs from when the application took the last.
    #[must_use]
    #[inline]
    pub fn awaits_acknowledgement(&self) -> bool {
        matches!(
            self.lifecycle,
            Lifecycle::Open {
                input: Input::Waiting(_)
            } | Lifecycle::Closing {
                input: Input::Waiting(_)
            }
        )
    }

    /// Whether an event is waiting.
    #[must_use]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Tells the connection that the application has handled every event it has taken
    /// (replies to those messages are queued). A close frame from the peer is answered,
    /// and a protocol error fails the connection, only once the events that came before it
    /// are taken and acknowledged — or once [`Config::acknowledge_timeout`] has passed since
    /// the last of them was taken — so that replies to those messages go out before the
    /// close frame.
    ///
    /// Call it after each batch of events: an event loop after running its handlers, a
    /// blocking or async receiver when the application comes back for the next message.
    #[inline]
    pub fn acknowledge_events(&mut self) {
        self.unacknowledged = false;
        if self.events.is_empty() && self.awaits_acknowledgement() {
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
    /// # Errors
    /// [`SendError::HandshakeState`] on a server, or once the request was sent.
    pub fn connect_request(&mut self) -> Result<Request, SendError> {
        let Lifecycle::Connecting(opening) = &mut self.lifecycle else {
            return Err(SendError::HandshakeState);
        };
        let writer = &mut self.writer;
        opening.request(&self.config, |bytes| writer.fill_random(bytes))
    }

    /// Client: queues the handshake request.
    ///
    /// # Errors
    /// [`SendError::HandshakeState`] on a server, or once a request was sent.
    pub fn send_request(&mut self, request: Request) -> Result<(), SendError> {
        let Lifecycle::Connecting(opening) = &mut self.lifecycle else {
            return Err(SendError::HandshakeState);
        };
        let writer = &mut self.writer;
        opening.request_sent(&self.config, |bytes| writer.fill_random(bytes))?;
        self.writer.bytes(&request.to_bytes());
        Ok(())
    }

    /// Server: checks the request (RFC 6455 §4.2.1) and negotiates subprotocol and
    /// extensions. Returns the 101 response, or the error response (400, 405, 426, …) that
    /// describes what is wrong. Alter it if needed, then pass it to
    /// [`send_response`](Self::send_response).
    ///
    /// # Errors
    /// [`SendError::HandshakeState`] unless a request is waiting for its response.
    pub fn accept(&mut self, request: &Request) -> Result<Response, SendError> {
        let Lifecycle::Connecting(opening) = &mut self.lifecycle else {
            return Err(SendError::HandshakeState);
        };
        opening.accept(request, &self.config)
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
    /// [`SendError::HandshakeState`] unless a request is waiting for its response.
    pub fn send_response(&mut self, response: Response) -> Result<(), SendError> {
        let Lifecycle::Connecting(opening) = &mut self.lifecycle else {
            return Err(SendError::HandshakeState);
        };
        let answer = opening.answer(&response)?;
        self.writer.bytes(&response.to_bytes());
        match answer {
            Answer::Refused(error) => {
                self.fail_connection(Some(Failure::Handshake(error)), CloseCode::ABNORMAL, "");
            }
            Answer::Open {
                extensions,
                subprotocol,
                rest,
            } => {
                if let Some(extensions) = extensions {
                    self.extensions = extensions;
                }
                self.subprotocol = subprotocol;
                self.open_with(&rest);
            }
        }
        Ok(())
    }

    fn handle_progress(&mut self, progress: Progress) {
        match progress {
            Progress::Pending => {}
            Progress::Request(request) => self.events.push_back(Event::Request(request)),
            Progress::Accepted {
                response,
                extensions,
                subprotocol,
                rest,
            } => {
                self.extensions = extensions;
                self.subprotocol = subprotocol;
                self.events.push_back(Event::Response(response));
                self.open_with(&rest);
            }
            Progress::Failed(error) => {
                tracing::debug!(side = ?self.side, %error, "opening handshake failed");
                // A server answers a request it cannot take with the error's status.
                if self.side == Side::Server && error.status().is_some() {
                    let response = handshake::error_response(&error, &self.config);
                    self.writer.bytes(&response.to_bytes());
                }
                self.fail_connection(Some(Failure::Handshake(error)), CloseCode::ABNORMAL, "");
            }
        }
    }

    // ----- Frames in -----

    #[inline]
    fn handle_frames(&mut self, mut input: &[u8]) {
        self.reader.reclaim();
        // A frame completed by the last byte is returned by the read that took that byte,
        // so nothing is left to do once the input is used up.
        while !input.is_empty() && self.lifecycle.reads_frames() {
            let mut cx = Context {
                side: self.side,
                config: &self.config,
                extensions: &mut self.extensions,
                events: &mut self.events,
            };
            match self.reader.read(&mut input, &mut cx) {
                Ok(Some(control)) => self.receive_control(control),
                Ok(None) => return,
                Err(error) => return self.defer(Deferred::Failure(error)),
            }
        }
    }

    fn receive_control(&mut self, control: Control) {
        let event = match control {
            Control::Ping(payload) => {
                // RFC 6455 §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong
                // frame in response, unless it already received a Close frame."
                if self.closed.received.is_none() && self.shutdown == Shutdown::NotYet {
                    self.writer.frame(true, Rsv::NONE, Opcode::Pong, &payload);
                }
                Event::Ping(payload)
            }
            Control::Pong(payload) => {
                if self.keepalive.answered_by(&payload) {
                    self.timers.stop(Expired::Pong);
                }
                Event::Pong(payload)
            }
            Control::Close(close, payload) => {
                tracing::debug!(side = ?self.side, code = %close.code, "close frame received");
                // RFC 6455 §1.4: after a close frame, no more data is processed.
                return self.defer(Deferred::Close(close, payload));
            }
        };
        self.events.push_back(event);
    }

    // ----- Commands -----

    /// Sends a text message.
    ///
    /// # Errors
    /// [`SendError::NotOpen`] before the handshake, [`SendError::Closed`] once closing,
    /// [`SendError::MessageInProgress`] while a fragmented message is being sent.
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.check_can_send()?;
        self.writer.message(
            Opcode::Text,
            text.as_bytes(),
            None,
            None,
            &mut self.extensions,
        )
    }

    /// Sends a binary message.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.check_can_send()?;
        self.writer
            .message(Opcode::Binary, data, None, None, &mut self.extensions)
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
        self.check_can_send()?;
        let (opcode, payload) = into_parts(message);
        self.writer.message(
            opcode,
            &payload,
            Some(&payload),
            options.compress,
            &mut self.extensions,
        )
    }

    /// Sends a message encoded beforehand with [`PreparedMessage::new`]: a server without
    /// a transforming extension queues the shared frame as is; other connections encode the
    /// message as [`send`](Self::send) would.
    ///
    /// # Errors
    /// As [`send_text`](Self::send_text).
    pub fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<(), SendError> {
        self.check_can_send()?;
        self.writer.prepared(prepared, &mut self.extensions)
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
        self.writer
            .fragment(opcode, data, fin, &mut self.extensions)
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
        self.writer.frame(true, Rsv::NONE, opcode, payload);
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

    /// Fails the connection (RFC 6455 §7.1.7): sends a close frame with `code` if the
    /// connection is open, stops processing input, and — on a server — shuts the TCP
    /// connection down without waiting for the peer's close frame. Use
    /// [`CloseCode::ABNORMAL`] to send no close frame.
    pub fn fail(&mut self, code: CloseCode, reason: &str) {
        self.fail_connection(None, code, reason);
    }
}
