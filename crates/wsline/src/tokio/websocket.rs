//! [`WebSocket`]: one connection over any async byte stream, driven by the calls the
//! application makes.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ::tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use ::tokio::sync::oneshot;
use ::tokio::time::Instant;
use bytes::{Buf, BytesMut};
use futures_core::{FusedStream, Stream};
use futures_sink::Sink;

mod parts;
mod subscriber;

use self::parts::{whole, Core, Pings, ReadSide, Timer, Unread, WriteSide};
pub(crate) use self::parts::{Limits, ReadPolicy, Step};
use self::subscriber::Subscriber;
use super::signal::Listener;
use crate::layer::budget::{self, Share};
use crate::layer::io::write_queued;
use crate::layer::server::{apply_backpressure, SHUTDOWN_REASON};
use crate::layer::{close_if_open, DEFAULT_PONG_WAIT};
pub use crate::layer::{DEFAULT_MAX_UNREAD_BYTES, DEFAULT_MAX_UNREAD_MESSAGES};
use crate::proto::{
    CloseCode, Config, Connection, ConnectionClosed, Event, Failure, Fragment, PreparedMessage,
    Request, Response, Side, State,
};
use crate::{Error, Message, Result};

/// A WebSocket connection over a byte stream `S`: a [`TcpStream`](::tokio::net::TcpStream)
/// from [`connect`](super::connect) or a server, or any `AsyncRead + AsyncWrite + Unpin`
/// stream (TLS, an HTTP upgrade done by hyper or axum, an in-memory duplex).
///
/// # How the connection makes progress
///
/// There is no background task: the connection reads, writes, answers pings and close
/// frames, and runs its timers (keepalive, close timeout) inside whichever method the
/// application awaits. Every method drives all of it, so:
///
/// - an application that only listens (awaits [`recv`](Self::recv) in a loop, or in
///   `tokio::select!` beside other work) answers pings and completes closing handshakes;
/// - an application that only sends answers pings too: [`send`](Self::send),
///   [`feed`](Self::feed) and [`flush`](Self::flush) read what arrives meanwhile and queue
///   messages for `recv` — up to a bounded queue ([`set_unread_limits`](Self::set_unread_limits)),
///   past which they stop reading and TCP pushes back on the peer;
/// - an application that neither reads nor writes for long stretches should
///   [`split`](Self::split) the connection: the halves run a driver task that keeps the
///   protocol alive on its own.
///
/// # Backpressure
///
/// Outgoing bytes wait in the connection's send buffer. [`feed`](Self::feed) (and the
/// [`Sink`] impl's readiness) waits while more than the high-water mark
/// (`send_high_water` of [`IoConfig`](crate::IoConfig) in [`ServerConfig`](crate::ServerConfig) / [`ConnectConfig`](crate::ConnectConfig)) is pending;
/// [`send`](Self::send) also waits until the message is written. Reading stops while the
/// send buffer is above the mark, so a peer that sends without reading cannot make the
/// connection buffer without bound.
///
/// # Cancel safety
///
/// [`recv`](Self::recv), [`flush`](Self::flush), [`close`](Self::close) and the
/// [`Stream`] impl are cancel-safe: all state lives in the `WebSocket`, so a call dropped in
/// `tokio::select!` loses nothing and the next call resumes. [`send`](Self::send),
/// [`feed`](Self::feed) and [`ping`](Self::ping) are not: dropped before the message is
/// queued, the message is not sent; dropped after, it is sent whole by a later call.
///
/// # Dropping
///
/// Dropping an open `WebSocket` queues a close frame (1000, or 1001 when its server is
/// shutting down) and writes what the socket takes without waiting; call
/// [`close`](Self::close) to complete the closing handshake. A connection that a
/// [`serve`](super::serve) server gave its [`Handler`](super::Handler) goes back to the
/// server instead, which closes it according to the handler's outcome and completes the
/// closing handshake (see [`Handler`](super::Handler)).
pub struct WebSocket<S: AsyncRead + AsyncWrite + Unpin> {
    conn: Core<S>,
    limits: Limits,
    read_buf: BytesMut,
    unread: Unread,
    timer: Timer,
    /// Whether events were taken from the core that the application may not have handled.
    unacknowledged: bool,
    read_side: ReadSide,
    write_side: WriteSide,
    /// Whether `recv` has reported the end of the connection.
    outcome_reported: bool,
    pings: Pings,
    request: Option<Request>,
    response: Option<Response>,
    going_away: Option<Listener>,
    /// Set on a server's connection: where it goes when dropped, for the server to close.
    hand_back: Option<oneshot::Sender<WebSocket<S>>>,
    /// Set on a server's connection: its part of the server's send budget.
    share: Option<Share>,
    /// The topics it may subscribe to.
    topics: Option<crate::topics::Topics>,
    /// Its subscriptions, from the first on.
    subscriber: Option<Box<Subscriber>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("conn", &*self.conn)
            .field("unread", &self.unread.queue.len())
            .field("read_side", &self.read_side)
            .field("write_side", &self.write_side)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    pub(crate) fn new(io: S, conn: Connection, limits: Limits) -> Self {
        Self {
            conn: Core::new(io, conn),
            limits,
            read_buf: BytesMut::new(),
            unread: Unread::default(),
            timer: Timer::default(),
            unacknowledged: false,
            read_side: ReadSide::Open,
            write_side: WriteSide::Open,
            outcome_reported: false,
            pings: Pings::default(),
            request: None,
            response: None,
            going_away: None,
            hand_back: None,
            share: None,
            topics: None,
            subscriber: None,
        }
    }

    /// A connection over a stream whose opening handshake happened elsewhere (an HTTP
    /// server that did the upgrade itself), with `leftover`: the bytes that server read past
    /// the handshake head, if any. No extension is in use.
    ///
    /// The read buffer and send high-water mark take their defaults (64 KiB, 256 KiB):
    /// [`with_io`](Self::with_io) sets others.
    #[must_use]
    pub fn from_upgraded(stream: S, side: Side, config: Config, leftover: &[u8]) -> Self {
        let conn = Connection::after_handshake(side, config, Instant::now().into_std());
        let limits = Limits::new(
            crate::DEFAULT_READ_BUFFER_SIZE,
            crate::DEFAULT_SEND_HIGH_WATER,
        );
        let mut ws = Self::new(stream, conn, limits);
        ws.received(leftover);
        ws
    }

    /// Takes the read buffer size and the send high-water mark of `io` (its `nodelay` is
    /// the socket's: set it on the TCP stream), for a WebSocket made by
    /// [`from_upgraded`](Self::from_upgraded) or [`from_negotiated`](Self::from_negotiated).
    ///
    /// ```
    /// use wsline::proto::Side;
    /// use wsline::tokio::WebSocket;
    /// use wsline::{Config, IoConfig};
    ///
    /// // An upgraded stream: here one end of an in-memory pipe.
    /// let (stream, _client) = tokio::io::duplex(1 << 16);
    /// let io = IoConfig { send_high_water: 1 << 20, ..IoConfig::default() };
    /// let ws = WebSocket::from_upgraded(stream, Side::Server, Config::default(), &[]).with_io(&io);
    /// assert_eq!(ws.pending_send(), 0);
    /// ```
    #[must_use]
    pub fn with_io(mut self, io: &crate::IoConfig) -> Self {
        let sized = Limits::new(io.read_buffer_size, io.send_high_water);
        self.limits.read_buffer_size = sized.read_buffer_size;
        self.limits.send_high_water = sized.send_high_water;
        self
    }

    /// Lets this connection subscribe to `topics` and publish there
    /// ([`subscribe`](Self::subscribe), [`publish`](Self::publish)). A server's connections
    /// have the server's ([`ServerConfig::topics`](crate::ServerConfig::topics)); this is for
    /// those made otherwise (an axum route, [`accept`](super::accept)). Replaces the topics
    /// it had, leaving their subscriptions.
    ///
    /// ```
    /// use wsline::proto::Side;
    /// use wsline::tokio::WebSocket;
    /// use wsline::topics::Topics;
    /// use wsline::Config;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> wsline::Result<()> {
    /// let topics = Topics::new();
    /// let (stream, _client) = tokio::io::duplex(1 << 16);
    /// let mut ws = WebSocket::from_upgraded(stream, Side::Server, Config::default(), &[])
    ///     .with_topics(&topics);
    /// ws.subscribe("lobby")?;
    /// assert_eq!(topics.subscriber_count("lobby"), 1);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_topics(mut self, topics: &crate::topics::Topics) -> Self {
        self.set_topics(topics.clone());
        self
    }

    pub(crate) fn set_topics(&mut self, topics: crate::topics::Topics) {
        self.subscriber = None;
        self.topics = Some(topics);
    }

    /// Feeds bytes that were read from the stream before it became this connection's.
    pub(crate) fn received(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.conn.handle_data(bytes);
            self.drain_events();
        }
    }

    /// A server connection over a stream that another HTTP stack upgraded (hyper's
    /// `TokioIo<Upgraded>`, an HTTP/2 stream), with the subprotocol and extensions
    /// `negotiated` in use ([`proto::negotiate`](crate::proto::negotiate), or
    /// `wsline::http::accept` for the `http` crate's types, feature `http`), and
    /// `leftover`: the bytes that stack read past the request head, if any (hyper's
    /// `Upgraded` replays its own).
    ///
    /// The read buffer and send high-water mark take their defaults (64 KiB, 256 KiB):
    /// [`with_io`](Self::with_io) sets others.
    #[must_use]
    pub fn from_negotiated(
        stream: S,
        negotiated: crate::proto::Negotiated,
        config: impl Into<std::sync::Arc<Config>>,
        leftover: &[u8],
    ) -> Self {
        let conn = Connection::from_negotiated(negotiated, config, Instant::now().into_std());
        let limits = Limits::new(
            crate::DEFAULT_READ_BUFFER_SIZE,
            crate::DEFAULT_SEND_HIGH_WATER,
        );
        let mut ws = Self::new(stream, conn, limits);
        ws.received(leftover);
        ws
    }

    pub(crate) fn set_going_away(&mut self, listener: Listener) {
        self.going_away = Some(listener);
    }

    /// Makes this connection count against a server's send budget.
    pub(crate) fn set_budget_share(&mut self, share: Share) {
        self.share = Some(share);
    }

    /// The high-water mark that applies now: the connection's own, or less past its
    /// server's send budget.
    #[inline]
    pub(crate) fn send_mark(&self) -> usize {
        budget::mark(self.share.as_ref(), self.limits.send_high_water)
    }

    /// Makes this a server's connection: dropped, it goes to `slot` (as a `WebSocket` that
    /// closes on its own when dropped) instead of closing, and the server closes it with the
    /// code its handler's outcome calls for. Should the server be gone, or drop it unread,
    /// it closes on its own after all.
    pub(crate) fn set_hand_back(&mut self, slot: oneshot::Sender<WebSocket<S>>) {
        self.hand_back = Some(slot);
    }

    /// Whether dropping this connection hands it back to its server.
    pub(crate) fn hands_back(&self) -> bool {
        self.hand_back.is_some()
    }

    pub(crate) fn set_request(&mut self, request: Request) {
        self.request = Some(request);
    }

    /// Client: the server's answer to a handshake made elsewhere (an HTTP/2 stream).
    #[cfg(feature = "http2")]
    pub(crate) fn set_response(&mut self, response: Response) {
        self.response = Some(response);
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub(crate) fn take_request(&mut self) -> Option<Request> {
        self.request.take()
    }

    /// Whether this end has sent a close frame.
    pub(crate) fn close_sent(&self) -> bool {
        self.conn.close_status().sent.is_some()
    }

    // ----- Accessors -----

    /// The topics this connection subscribes to and publishes on, if it has any (see
    /// [`with_topics`](Self::with_topics)).
    #[must_use]
    pub fn topics(&self) -> Option<&crate::topics::Topics> {
        self.topics.as_ref()
    }

    /// This connection as a subscriber, to leave it out of a publish
    /// ([`PublishOptions::exclude`](crate::topics::PublishOptions::exclude)), once it has
    /// subscribed to a topic.
    #[must_use]
    pub fn subscriber_id(&self) -> Option<crate::topics::SubscriberId> {
        self.subscriber.as_deref().map(Subscriber::id)
    }

    /// Subscribes this connection to `topic`: from now on what is published there is queued
    /// for it, without the publisher waiting, and written while the connection makes
    /// progress — in [`recv`](Self::recv) or any other awaited method, so a handler that
    /// awaits `recv` gets publications out at once. Past the send high-water mark the
    /// backpressure policy applies to each publication ([`topics`](crate::topics)). The
    /// connection leaves every topic when it closes or is dropped. Returns `Ok(false)` if it
    /// was subscribed already.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a connection without topics
    /// ([`with_topics`](Self::with_topics)); the error that describes its end for a
    /// connection that is closed.
    pub fn subscribe(&mut self, topic: &str) -> Result<bool> {
        if self.conn.is_closed() {
            return Err(self.closed_error());
        }
        Ok(self.subscriber_mut()?.subscribe(topic))
    }

    /// Unsubscribes this connection from `topic`. Returns whether it was subscribed.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        self.subscriber
            .as_mut()
            .is_some_and(|subscriber| subscriber.unsubscribe(topic))
    }

    /// The topics this connection is subscribed to.
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.subscriber
            .as_deref()
            .into_iter()
            .flat_map(Subscriber::subscriptions)
    }

    /// Publishes `message` to every subscriber of `topic` but this connection (see
    /// [`Topics::publish_with`](crate::topics::Topics::publish_with)); returns the number
    /// of this node's subscribers of the topic. Never waits.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a connection without topics.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> Result<usize> {
        let topics = self.topics.as_ref().ok_or_else(no_topics)?;
        let options = crate::topics::PublishOptions {
            exclude: self.subscriber_id(),
            ..Default::default()
        };
        Ok(topics.publish_with(topic, message, options))
    }

    /// The subscriptions, made with the first.
    fn subscriber_mut(&mut self) -> Result<&mut Subscriber> {
        if self.subscriber.is_none() {
            let topics = self.topics.clone().ok_or_else(no_topics)?;
            let subscriber = Subscriber::new(
                topics,
                self.limits.backpressure,
                self.send_mark(),
                self.conn.config().max_message_size,
            );
            self.subscriber = Some(Box::new(subscriber));
        }
        self.subscriber.as_deref_mut().ok_or_else(no_topics)
    }

    /// Which end of the connection this is.
    #[must_use]
    pub fn side(&self) -> Side {
        self.conn.side()
    }

    /// Where the connection stands.
    #[must_use]
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// Whether the connection is over.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// The protocol settings: limits, timeouts, keepalive.
    #[must_use]
    pub fn config(&self) -> &Config {
        self.conn.config()
    }

    /// The subprotocol the handshake selected.
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        self.conn.subprotocol()
    }

    /// The names of the extensions the handshake negotiated, such as `permessage-deflate`.
    pub fn extension_names(&self) -> impl Iterator<Item = &str> {
        self.conn
            .extensions()
            .iter()
            .map(|extension| extension.name())
    }

    /// Server: the client's handshake request (path, headers such as `Origin` or cookies).
    #[must_use]
    pub fn request(&self) -> Option<&Request> {
        self.request.as_ref()
    }

    /// Client: the server's handshake response.
    #[must_use]
    pub fn response(&self) -> Option<&Response> {
        self.response.as_ref()
    }

    /// How the connection ended, once it has: close frames sent and received, and what
    /// failed if anything did.
    #[must_use]
    pub fn close_status(&self) -> Option<&ConnectionClosed> {
        self.conn.is_closed().then(|| self.conn.close_status())
    }

    /// Bytes queued for the network and not yet written.
    #[must_use]
    pub fn pending_send(&self) -> usize {
        self.conn.pending_send()
    }

    /// The underlying stream.
    #[must_use]
    pub fn get_ref(&self) -> &S {
        &self.conn.link().io
    }

    /// The underlying stream, mutably. Reading from or writing to it directly corrupts the
    /// connection; use it for socket options.
    pub fn get_mut(&mut self) -> &mut S {
        self.conn.io()
    }

    /// Sets the bounds of the queue of received messages that the application has not read
    /// yet. While sending, flushing or pinging, the connection reads (to answer pings and
    /// close frames) only while fewer than `messages` messages and `bytes` bytes wait;
    /// [`recv`](Self::recv) reads when the queue is empty. Defaults:
    /// [`DEFAULT_MAX_UNREAD_MESSAGES`], [`DEFAULT_MAX_UNREAD_BYTES`].
    pub fn set_unread_limits(&mut self, messages: usize, bytes: usize) {
        self.limits.max_unread_messages = messages.max(1);
        self.limits.max_unread_bytes = bytes.max(1);
    }

    /// Sets the high-water mark of the send buffer (see [Backpressure](Self#backpressure)).
    pub fn set_send_high_water(&mut self, bytes: usize) {
        self.limits.send_high_water = bytes;
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Drives the opening handshake until `arrived` holds (the request or the response is
    /// in) or the connection ends.
    pub(crate) async fn handshake_until(&mut self, arrived: fn(&Self) -> bool) -> Result<()> {
        poll_fn(|cx| loop {
            self.drain_events();
            if arrived(self) {
                return Poll::Ready(Ok(()));
            }
            match self.poll_step(cx, ReadPolicy::Receive) {
                Step::Progress => {}
                Step::Wrote | Step::Blocked => return Poll::Pending,
                Step::Finished => return Poll::Ready(Err(self.closed_error())),
            }
        })
        .await
    }

    // ----- Receiving -----

    /// Receives the next message. `None` once the connection has closed normally (1000,
    /// 1001, or a close frame without a code); any other ending is reported once as an
    /// error — the peer's close code ([`Error::ConnectionClosed`]), a protocol violation,
    /// a timeout, or an I/O error — then `None`.
    ///
    /// With [`Config::deliver_fragments`] each frame of a fragmented message comes as a
    /// `Message` of its own, with nothing telling where the message starts or ends: use
    /// [`recv_fragment`](Self::recv_fragment) to get that too.
    ///
    /// Cancel-safe: a `recv` dropped before it completes loses no message.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message, as [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        self.poll_recv_fragment(cx)
            .map(|item| item.map(|fragment| fragment.map(|fragment| fragment.data)))
    }

    /// Receives the next piece of a message with its flags: with
    /// [`Config::deliver_fragments`] each data frame as it arrives (RFC 6455 §5.4: `first`
    /// on the frame that starts a message, `fin` on the one that ends it), else each whole
    /// message as one `Fragment { first: true, fin: true, .. }`. The end of the connection
    /// is reported as by [`recv`](Self::recv).
    ///
    /// Cancel-safe, as [`recv`](Self::recv).
    pub async fn recv_fragment(&mut self) -> Option<Result<Fragment>> {
        poll_fn(|cx| self.poll_recv_fragment(cx)).await
    }

    /// Polls for the next piece of a message, as [`recv_fragment`](Self::recv_fragment).
    pub fn poll_recv_fragment(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Fragment>>> {
        loop {
            if let Some(fragment) = self.take_fragment() {
                return Poll::Ready(Some(Ok(fragment)));
            }
            // Back for more: the messages before are handled.
            self.acknowledge();
            match self.poll_step(cx, ReadPolicy::Receive) {
                Step::Progress => {}
                // Writing does not bring messages; the reader is registered.
                Step::Wrote | Step::Blocked => return Poll::Pending,
                Step::Finished => return Poll::Ready(self.take_outcome()),
            }
        }
    }

    /// The next message (or piece of one) received: those queued first, then those still
    /// in the core (a read for `recv` leaves its messages there, saving a queue on the hot
    /// path).
    pub(crate) fn take_fragment(&mut self) -> Option<Fragment> {
        if let Some(fragment) = self.unread.pop_front() {
            return Some(fragment);
        }
        while let Some(event) = self.conn.take_event() {
            self.unacknowledged = true;
            match event {
                Event::Message(message) => return Some(whole(message)),
                Event::Fragment(fragment) => return Some(fragment),
                event => self.handle_event(event),
            }
        }
        None
    }

    pub(crate) fn push_front_unread(
        &mut self,
        fragments: impl DoubleEndedIterator<Item = Fragment>,
    ) {
        for fragment in fragments.rev() {
            self.unread.push_front(fragment);
        }
    }

    /// The end of the connection as `recv` reports it: `None` for a normal closure, else the
    /// error, once.
    pub(crate) fn take_outcome<T>(&mut self) -> Option<Result<T>> {
        if std::mem::replace(&mut self.outcome_reported, true) {
            return None;
        }
        let error = self.closed_error();
        match &error {
            Error::ConnectionClosed(closed) if is_normal_closure(closed) => None,
            _ => Some(Err(error)),
        }
    }

    /// The error that describes a connection that is over.
    pub(crate) fn closed_error(&self) -> Error {
        let closed = self.conn.close_status();
        if let (ReadSide::Failed(error), false) = (&self.read_side, closed.clean) {
            return Error::Io(io::Error::new(error.kind(), error.to_string()));
        }
        Error::from_closed(closed.clone())
    }

    // ----- Sending -----

    /// Sends a message: waits while the send buffer is above the high-water mark, queues the
    /// message, and waits until it is written to the stream.
    ///
    /// Not cancel-safe: dropped before the message is queued, it is not sent; dropped after,
    /// the rest of it is written by later calls.
    ///
    /// # Errors
    /// [`Error::Send`] once the connection is closing or closed (or for a fragmented message
    /// in progress), [`Error::Io`] if the stream failed.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<()> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message without waiting for it to be written: waits only while the send
    /// buffer is above the high-water mark. The bytes go out with the next
    /// [`flush`](Self::flush), [`send`](Self::send), or [`recv`](Self::recv) that would wait
    /// for input — so an echo loop of `recv` and `feed` writes a burst of replies at once.
    ///
    /// Not cancel-safe, as [`send`](Self::send).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn feed(&mut self, message: impl Into<Message>) -> Result<()> {
        let message = message.into();
        poll_fn(|cx| self.poll_send_ready(cx)).await;
        self.queue(message)
    }

    /// Sends a message in fragments of at most `fragment_size` bytes (RFC 6455 §5.4; text is
    /// cut at character boundaries), waiting at the high-water mark between fragments, then
    /// until everything is written.
    ///
    /// Not cancel-safe: dropped midway, the message stays unfinished and later sends fail
    /// with [`SendError::MessageInProgress`](crate::proto::SendError::MessageInProgress).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_fragmented(&mut self, message: &Message, fragment_size: usize) -> Result<()> {
        for (range, fin) in message.fragment_ranges(fragment_size) {
            poll_fn(|cx| self.poll_send_ready(cx)).await;
            self.conn.send_message_fragment(message, range, fin)?;
        }
        self.flush().await
    }

    /// Sends a message encoded once for many connections (a broadcast): the frame is shared
    /// when the connection has no extension that transforms it, and so is its compression
    /// among connections whose permessage-deflate keeps no server context
    /// ([`PreparedMessage`]); other connections compress it themselves.
    ///
    /// Not cancel-safe, as [`send`](Self::send).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<()> {
        poll_fn(|cx| self.poll_send_ready(cx)).await;
        self.queue_prepared(prepared)?;
        self.flush().await
    }

    /// Sends an unsolicited pong, a one-way heartbeat that expects no reply (RFC 6455
    /// §5.5.3), and waits until it is written. Pings are answered automatically; this is not
    /// needed for that.
    ///
    /// Not cancel-safe, as [`send`](Self::send).
    ///
    /// # Errors
    /// As [`send`](Self::send), and for payloads over 125 bytes.
    pub async fn pong(&mut self, payload: &[u8]) -> Result<()> {
        self.conn.send_pong(payload)?;
        self.flush().await
    }

    /// Queues a message if the send buffer is below the high-water mark, without waiting.
    ///
    /// # Errors
    /// Past the high-water mark: [`Error::SendBufferFull`] (the message is not queued), and
    /// with [`BackpressurePolicy::Close`](crate::BackpressurePolicy::Close) (a server's default) the connection is also failed
    /// with 1008 (policy violation). Otherwise as [`send`](Self::send).
    pub fn try_send(&mut self, message: impl Into<Message>) -> Result<()> {
        self.check_room()?;
        self.queue(message.into())
    }

    /// Applies the backpressure policy to a send that does not wait.
    fn check_room(&mut self) -> Result<()> {
        let pending = self.conn.pending_send();
        let limit = self.send_mark();
        if self.conn.state() != State::Open {
            return Ok(());
        }
        let conn = &mut self.conn;
        apply_backpressure(self.limits.backpressure, pending, limit, |code, reason| {
            conn.fail(code, reason);
        })
    }

    /// Queues a message encoded once for many connections if the send buffer is below the
    /// high-water mark, without waiting: a broadcast loop that never waits for one slow
    /// connection (for topics, [`publish`](Self::publish) does this for every subscriber).
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send).
    pub fn try_send_prepared(&mut self, prepared: &PreparedMessage) -> Result<()> {
        self.check_room()?;
        self.queue_prepared(prepared)
    }

    /// Queues a message now, whatever the send buffer holds.
    pub(crate) fn queue(&mut self, message: Message) -> Result<()> {
        self.conn.send(message)?;
        Ok(())
    }

    /// Bytes not yet handed to the stream, plus one while the stream may hold written bytes
    /// back (not flushed yet): zero once everything is out.
    pub(crate) fn unwritten(&self) -> usize {
        self.conn.pending_send() + usize::from(self.write_side == WriteSide::Unflushed)
    }

    /// Queues a prepared message now, whatever the send buffer holds.
    pub(crate) fn queue_prepared(&mut self, prepared: &PreparedMessage) -> Result<()> {
        self.conn.send_prepared(prepared)?;
        Ok(())
    }

    /// Ready when a message may be queued: the send buffer is at or below the high-water
    /// mark, or the connection is no longer open (queueing then reports why).
    pub(crate) fn poll_send_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.conn.state() != State::Open || self.conn.pending_send() <= self.send_mark() {
                return Poll::Ready(());
            }
            match self.poll_step(cx, ReadPolicy::Bounded) {
                Step::Progress | Step::Wrote => {}
                Step::Blocked => return Poll::Pending,
                Step::Finished => return Poll::Ready(()),
            }
        }
    }

    /// Waits until every queued byte is written to the stream (and the stream's write half
    /// is shut down, if the closing handshake asked for it).
    ///
    /// Cancel-safe: what was written stays written, the rest waits for the next call.
    ///
    /// # Errors
    /// [`Error::Io`] if the stream failed; an error describing the end of the connection if
    /// it closed with bytes still queued.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Polls for the send buffer to be written, as [`flush`](Self::flush).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.unread.queue.is_empty() {
            // Every message was taken and what answers them is queued.
            self.acknowledge();
        }
        loop {
            if self.conn.pending_send() == 0
                && matches!(self.write_side, WriteSide::Open | WriteSide::Closed)
            {
                return Poll::Ready(Ok(()));
            }
            match self.poll_step(cx, ReadPolicy::Bounded) {
                Step::Progress | Step::Wrote => {}
                Step::Blocked => return Poll::Pending,
                Step::Finished if self.conn.pending_send() == 0 => return Poll::Ready(Ok(())),
                Step::Finished => return Poll::Ready(Err(self.closed_error())),
            }
        }
    }

    /// Sends a ping and waits for its pong; returns the round-trip time. Messages that
    /// arrive meanwhile are queued for [`recv`](Self::recv) (within the unread limits).
    ///
    /// Not cancel-safe: dropped, the ping is still sent but its pong is ignored.
    ///
    /// # Errors
    /// [`Error::Timeout`] when no pong arrives within the configuration's `ping_timeout`
    /// (20 s when it is `None`), an error describing the end of the connection if it closes
    /// first, and as [`send`](Self::send).
    pub async fn ping(&mut self) -> Result<Duration> {
        let (waiter, mut pong) = oneshot::channel();
        self.start_ping(waiter)?;
        let wait = self.conn.config().ping_timeout.unwrap_or(DEFAULT_PONG_WAIT);
        let pong = poll_fn(|cx| loop {
            match pong.try_recv() {
                Ok(latency) => return Poll::Ready(Ok(latency)),
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Poll::Ready(Err(Error::Timeout(Failure::KeepaliveTimeout)))
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            match self.poll_step(cx, ReadPolicy::Bounded) {
                Step::Progress | Step::Wrote => {}
                Step::Blocked => return Poll::Pending,
                Step::Finished => return Poll::Ready(Err(self.closed_error())),
            }
        });
        match ::tokio::time::timeout(wait, pong).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(Failure::KeepaliveTimeout)),
        }
    }

    /// Queues a ping whose round-trip time goes to `waiter`.
    pub(crate) fn start_ping(&mut self, waiter: oneshot::Sender<Duration>) -> Result<()> {
        if self.conn.state() != State::Open {
            return Err(crate::proto::SendError::Closed.into());
        }
        let payload = self.pings.start(waiter);
        self.conn.send_ping(&payload)?;
        Ok(())
    }

    /// Starts the closing handshake (RFC 6455 §7.1.2) and waits until it completes or the
    /// close timeout passes. Messages that arrive meanwhile stay readable with
    /// [`recv`](Self::recv) within the unread limits; past them they are dropped.
    ///
    /// Cancel-safe once polled: the close frame is queued on the first poll, and a later
    /// `close` (or any other call) carries the handshake on.
    ///
    /// # Errors
    /// [`Error::Send`] for a code that may not be sent; an error describing the end of the
    /// connection when the handshake did not complete cleanly (the close timeout passed, the
    /// stream failed). Closing a connection that closed normally is not an error.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.acknowledge();
        close_if_open(&mut self.conn, code, reason)?;
        poll_fn(|cx| self.poll_closed(cx)).await
    }

    /// Polls for the end of the closing handshake, as [`close`](Self::close).
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            match self.poll_step(cx, ReadPolicy::Closing) {
                Step::Progress | Step::Wrote => {}
                Step::Blocked => return Poll::Pending,
                Step::Finished => {
                    return Poll::Ready(match self.closed_error() {
                        Error::ConnectionClosed(closed) if closed.clean => Ok(()),
                        error => Err(error),
                    })
                }
            }
        }
    }

    // ----- Driving -----

    /// Makes what progress the connection can without the application: the server's
    /// shutdown signal, writing, reading as `policy` allows, and — when nothing came in —
    /// timers (a connection busy reading checks them once its socket runs dry).
    pub(crate) fn poll_step(&mut self, cx: &mut Context<'_>, policy: ReadPolicy) -> Step {
        if policy != ReadPolicy::Receive {
            // Messages a read for `recv` left in the core count against the unread limits.
            self.drain_events();
        }
        let changed = self.poll_going_away(cx) | self.poll_publications(cx);
        let wrote = self.poll_write(cx);
        let read = self.may_read(policy) && self.poll_read(cx, policy);
        if changed || read || self.poll_timers(cx) || (wrote && self.conn.is_closed()) {
            Step::Progress
        } else if wrote {
            Step::Wrote
        } else if self.conn.is_closed() {
            // What the stream took is written; a peer that stopped reading gets no more time.
            Step::Finished
        } else {
            Step::Blocked
        }
    }

    fn may_read(&self, policy: ReadPolicy) -> bool {
        if !matches!(self.read_side, ReadSide::Open)
            || self.conn.is_closed()
            || self.conn.pending_send() > self.send_mark()
        {
            return false;
        }
        match policy {
            ReadPolicy::Receive | ReadPolicy::Closing => true,
            ReadPolicy::Bounded => !self.unread_full(),
            ReadPolicy::Never => false,
        }
    }

    fn unread_full(&self) -> bool {
        self.unread.queue.len() >= self.limits.max_unread_messages
            || self.unread.bytes >= self.limits.max_unread_bytes
    }

    /// Starts the closing handshake with 1001 once the server shuts down.
    fn poll_going_away(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(listener) = &mut self.going_away else {
            return false;
        };
        if !listener.poll_raised(cx) {
            return false;
        }
        self.going_away = None;
        // 1001 with a short reason may be sent.
        close_if_open(&mut self.conn, CloseCode::GOING_AWAY, SHUTDOWN_REASON) == Ok(true)
    }

    /// Queues what was published to the connection's topics since the last step (not while
    /// a fragmented message is being sent: they wait for its end), writing the send buffer
    /// before a publication that would pass the mark, and fails a connection whose inbox
    /// overflowed under [`BackpressurePolicy::Close`] once it has queued what the inbox took.
    fn poll_publications(&mut self, cx: &mut Context<'_>) -> bool {
        let take = !self.conn.is_sending_fragments();
        let Some(inbox) = &mut self.subscriber else {
            return false;
        };
        let mut taken = inbox.take(cx, take);
        let mut progress = !taken.publications.is_empty();
        let mark = self.send_mark();
        if progress && self.conn.pending_send() > mark {
            self.poll_write(cx);
        }
        let backlog = match &mut self.subscriber {
            Some(inbox) if progress => inbox.burst(self.conn.pending_send()),
            _ => 0,
        };
        for publication in taken.publications.drain(..) {
            subscriber::queue_taken(&mut self.conn, &publication, backlog, mark, taken.policy);
        }
        if taken.slow {
            progress |= subscriber::fail_slow(&mut self.conn);
        }
        if let Some(inbox) = &mut self.subscriber {
            inbox.give_back(taken.publications);
        }
        progress
    }

    /// Fires the core's timers that are due, and arms the sleep for the next of them. The
    /// core's deadline is asked for again only after the core was changed (see [`Core`]).
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> bool {
        let mut fired = false;
        loop {
            let core_deadline = self.conn.deadline();
            let Some(deadline) = core_deadline else {
                break;
            };
            if !self.timer.poll_elapsed(cx, deadline) {
                break;
            }
            let now = Instant::now().into_std();
            if core_deadline.is_some_and(|core| core <= now) {
                self.conn.handle_timeout(now);
                self.drain_events();
            }
            fired = true;
        }
        fired
    }

    /// Writes the send buffer with vectored writes until it is empty or the stream is full,
    /// then shuts the write half down if the core asks for it; accounts what is left against
    /// the server's send budget. Returns whether anything happened.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        let progress = self.poll_write_queued(cx);
        if let Some(share) = &mut self.share {
            share.update(self.conn.pending_send());
        }
        if let Some(subscriber) = &self.subscriber {
            subscriber.publish_mark(self.send_mark());
        }
        progress
    }

    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        loop {
            if self.write_side == WriteSide::Closed {
                // Nothing can be written any more: drop what is queued.
                let out = self.conn.send_buffer();
                let queued = out.remaining();
                out.advance(queued);
                return progress;
            }
            if self.conn.pending_send() == 0 {
                if self.write_side == WriteSide::Unflushed {
                    match Pin::new(self.conn.io()).poll_flush(cx) {
                        Poll::Pending => return progress,
                        Poll::Ready(Ok(())) => {
                            // Completing the flush is progress: a caller waiting for it is
                            // done, and nothing else will wake it.
                            self.write_side = WriteSide::Open;
                            progress = true;
                        }
                        Poll::Ready(Err(error)) => {
                            self.fail_io(error);
                            return true;
                        }
                    }
                }
                if self.conn.poll_shutdown() {
                    self.write_side = WriteSide::ShuttingDown;
                }
                if self.write_side != WriteSide::ShuttingDown {
                    return progress;
                }
                let Poll::Ready(result) = Pin::new(self.conn.io()).poll_shutdown(cx) else {
                    return progress;
                };
                if let Err(error) = result {
                    // The peer may be gone already; there is nothing left to tell it.
                    tracing::debug!(%error, "shutting down the write half failed");
                }
                self.write_side = WriteSide::Closed;
                return true;
            }
            let (stream, out) = self.conn.io_and_send_buffer();
            let vectored = stream.is_write_vectored();
            let written = write_queued(out, vectored, |slices| {
                let written = match slices {
                    [one] => Pin::new(&mut *stream).poll_write(cx, one),
                    many => Pin::new(&mut *stream).poll_write_vectored(cx, many),
                };
                match written {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            });
            match written {
                Ok(_) => {
                    if self.write_side == WriteSide::Open {
                        // A shutdown under way flushes what it finds.
                        self.write_side = WriteSide::Unflushed;
                    }
                    progress = true;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return progress,
                Err(error) => {
                    self.fail_io(error);
                    return true;
                }
            }
        }
    }

    /// Reads once into the reusable buffer and feeds the core. Returns whether anything
    /// happened. A read for `recv` leaves the messages in the core for
    /// [`take_message`](Self::take_message).
    fn poll_read(&mut self, cx: &mut Context<'_>, policy: ReadPolicy) -> bool {
        if self.read_buf.capacity() == 0 {
            self.read_buf.reserve(self.limits.read_buffer_size);
        }
        let read = {
            let read = pin!(self.conn.io().read_buf(&mut self.read_buf));
            read.poll(cx)
        };
        match read {
            Poll::Pending => false,
            Poll::Ready(Ok(0)) => {
                self.read_side = ReadSide::Eof;
                self.conn.handle_eof();
                self.drain_events();
                true
            }
            Poll::Ready(Ok(_)) => {
                self.conn.handle_data(&self.read_buf);
                self.read_buf.clear();
                if policy != ReadPolicy::Receive || self.conn.state() == State::Connecting {
                    self.drain_events();
                }
                true
            }
            Poll::Ready(Err(error)) if error.kind() == io::ErrorKind::Interrupted => true,
            Poll::Ready(Err(error)) => {
                self.fail_io(error);
                true
            }
        }
    }

    /// The stream failed: the connection is over.
    fn fail_io(&mut self, error: io::Error) {
        tracing::debug!(side = ?self.conn.side(), %error, "stream failed");
        if !matches!(self.read_side, ReadSide::Failed(_)) {
            // The first failure is the one to report.
            self.read_side = ReadSide::Failed(error);
        }
        self.write_side = WriteSide::Closed;
        let out = self.conn.send_buffer();
        let queued = out.remaining();
        out.advance(queued);
        self.conn.handle_eof();
        self.drain_events();
    }

    /// Moves the core's events to where the application reads them. It takes only the
    /// events that are there: asking for more would tell the core that the application has
    /// handled them (see [`acknowledge`](Self::acknowledge)).
    fn drain_events(&mut self) {
        while let Some(event) = self.conn.take_event() {
            self.unacknowledged = true;
            self.handle_event(event);
        }
    }

    /// Tells the core that the application has handled the messages received so far, so
    /// that a close frame or protocol error that came after them is acted on now. Replies
    /// to those messages thus go out before the close frame: RFC 6455 §5.5.1 asks for the
    /// close reply "as soon as practical", and the core waits for this signal (or for its
    /// `acknowledge_timeout` to pass).
    #[inline]
    pub(crate) fn acknowledge(&mut self) {
        if self.unacknowledged {
            self.acknowledge_taken();
        }
    }

    fn acknowledge_taken(&mut self) {
        if self.conn.has_events() {
            self.drain_events();
        }
        let waiting = self.conn.acknowledge_events();
        self.unacknowledged = false;
        if waiting {
            // What the core did on its deferred input (a Closed event) is taken too.
            self.drain_events();
            self.unacknowledged = false;
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Message(message) => self.push_unread(whole(message)),
            Event::Fragment(fragment) => self.push_unread(fragment),
            Event::Pong(payload) => self.pings.answer(&payload),
            Event::Request(request) => self.request = Some(request),
            Event::Response(response) => self.response = Some(response),
            Event::Closed(_) => {
                if let Some(subscriber) = &mut self.subscriber {
                    subscriber.unsubscribe_all();
                }
            }
            Event::Ping(_) => {}
        }
    }

    fn push_unread(&mut self, fragment: Fragment) {
        if self.close_sent() && self.unread_full() {
            tracing::debug!(len = fragment.data.len(), "message dropped while closing");
            return;
        }
        self.unread.push_back(fragment);
    }
}

/// The error for a topics method on a connection without topics.
pub(crate) fn no_topics() -> Error {
    Error::Unsupported(
        "this WebSocket has no topics: give it some with WebSocket::with_topics".into(),
    )
}

/// Whether a connection ended in a way `recv` reports as the plain end of the stream.
fn is_normal_closure(closed: &ConnectionClosed) -> bool {
    closed.failure.is_none()
        && matches!(
            closed.code(),
            CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS_RECEIVED
        )
}

impl<S: AsyncRead + AsyncWrite + Unpin> Drop for WebSocket<S> {
    fn drop(&mut self) {
        if let Some(slot) = self.hand_back.take() {
            // Always there: only this takes it.
            let Some(link) = self.conn.link.take() else {
                return;
            };
            let returned = WebSocket {
                conn: Core {
                    link: Some(link),
                    deadline: self.conn.deadline,
                },
                limits: self.limits,
                read_buf: std::mem::take(&mut self.read_buf),
                unread: std::mem::take(&mut self.unread),
                timer: std::mem::take(&mut self.timer),
                unacknowledged: self.unacknowledged,
                read_side: std::mem::replace(&mut self.read_side, ReadSide::Open),
                write_side: self.write_side,
                outcome_reported: self.outcome_reported,
                pings: std::mem::take(&mut self.pings),
                request: self.request.take(),
                response: self.response.take(),
                going_away: self.going_away.take(),
                hand_back: None,
                share: self.share.take(),
                // Dropped with this one: a connection its handler dropped leaves its topics.
                topics: None,
                subscriber: None,
            };
            // Should the server be gone, the connection comes back and closes as it drops.
            let _ = slot.send(returned);
            return;
        }
        let shutting_down = self.going_away.as_ref().is_some_and(Listener::is_raised);
        let code = if shutting_down {
            CloseCode::GOING_AWAY
        } else {
            CloseCode::NORMAL
        };
        // Both codes may be sent.
        let _ = close_if_open(&mut self.conn, code, "");
        let unwritten = self.conn.pending_send() > 0 || self.write_side == WriteSide::Unflushed;
        if unwritten && self.write_side != WriteSide::Closed {
            // Writes what the stream takes now; nothing will poll this connection again.
            let mut cx = Context::from_waker(Waker::noop());
            self.poll_write(&mut cx);
        }
    }
}

/// Messages until the connection closes, as [`WebSocket::recv`]. Cancel-safe.
impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FusedStream for WebSocket<S> {
    fn is_terminated(&self) -> bool {
        self.outcome_reported
    }
}

/// Sends messages as [`WebSocket::feed`] and [`WebSocket::flush`]; closing sends 1000 and
/// waits for the closing handshake.
impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_send_ready(cx).map(Ok)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<()> {
        self.get_mut().queue(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        WebSocket::poll_flush(self.get_mut(), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let ws = self.get_mut();
        ws.acknowledge();
        close_if_open(&mut ws.conn, CloseCode::NORMAL, "")?;
        ws.poll_closed(cx)
    }
}

#[cfg(test)]
mod tests {
    use ::tokio::io::{duplex, AsyncReadExt, DuplexStream};

    use super::*;

    /// A server connection over an in-memory stream, and the client's end of that stream.
    fn server_over_duplex() -> (WebSocket<DuplexStream>, DuplexStream) {
        let (client, server) = duplex(1 << 16);
        let ws = WebSocket::from_upgraded(server, Side::Server, Config::default(), &[]);
        (ws, client)
    }

    #[::tokio::test]
    async fn with_io_sets_the_high_water_mark_of_an_upgraded_websocket() {
        let (ws, _client) = server_over_duplex();
        let io = crate::IoConfig {
            send_high_water: 1000,
            ..crate::IoConfig::default()
        };
        let mut ws = ws.with_io(&io);
        // Nothing is written until a step runs, so the queue grows by each message.
        ws.try_send(Message::binary(vec![0; 600])).unwrap();
        ws.try_send(Message::binary(vec![0; 600])).unwrap();
        match ws.try_send(Message::binary(vec![0; 600])) {
            Err(Error::SendBufferFull { limit, .. }) => assert_eq!(limit, 1000),
            other => panic!("expected SendBufferFull, got {other:?}"),
        }
    }

    /// Regression (review): `with_io` rebuilt every limit, so unread limits set before it
    /// were lost.
    #[::tokio::test]
    async fn with_io_keeps_the_unread_limits() {
        let (mut ws, _client) = server_over_duplex();
        ws.set_unread_limits(3, 4096);
        let ws = ws.with_io(&crate::IoConfig::default());
        assert_eq!(ws.limits.max_unread_messages, 3);
        assert_eq!(ws.limits.max_unread_bytes, 4096);
    }

    /// Regression (review): a publication that came while a fragmented message was being
    /// sent was refused by the core (a message in progress) and counted as dropped.
    #[::tokio::test]
    async fn publications_wait_for_the_end_of_a_fragmented_message() {
        let topics = crate::topics::Topics::new();
        let (ws, mut client) = server_over_duplex();
        let mut ws = ws.with_topics(&topics);
        ws.subscribe("t").unwrap();
        ws.conn.send_binary_fragment(b"first", false).unwrap();
        topics.publish("t", "p");
        let mut cx = Context::from_waker(Waker::noop());
        let _ = ws.poll_step(&mut cx, ReadPolicy::Bounded);
        ws.conn.send_continuation(b"last", true).unwrap();
        ws.flush().await.unwrap();
        let mut frames = [0; 7 + 6 + 3];
        let read = client.read_exact(&mut frames);
        ::tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("every frame written")
            .unwrap();
        assert_eq!(&frames, b"\x02\x05first\x80\x04last\x81\x01p");
        let stats = topics.topic_stats("t").unwrap();
        assert_eq!((stats.delivered, stats.dropped), (1, 0));
    }

    /// A server's close frame with code 1000 and no reason.
    const NORMAL_CLOSE: [u8; 4] = [0x88, 0x02, 0x03, 0xE8];

    #[tokio::test]
    async fn a_dropped_server_connection_goes_back_to_its_server_unclosed() {
        let (mut ws, mut client) = server_over_duplex();
        let (slot, mut returned) = oneshot::channel();
        ws.set_hand_back(slot);
        drop(ws);
        let mut ws = returned.try_recv().expect("the connection came back");
        assert_eq!(ws.state(), State::Open);
        ws.queue(Message::text("after")).unwrap();
        ws.flush().await.unwrap();
        let mut frame = [0; 7];
        client.read_exact(&mut frame).await.unwrap();
        assert_eq!(frame, *b"\x81\x05after");
    }

    #[tokio::test]
    async fn a_server_connection_its_server_drops_unread_closes_on_its_own() {
        let (mut ws, mut client) = server_over_duplex();
        let (slot, returned) = oneshot::channel();
        ws.set_hand_back(slot);
        drop(ws);
        drop(returned);
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.unwrap();
        assert_eq!(written, NORMAL_CLOSE);
    }

    #[tokio::test]
    async fn a_dropped_server_connection_whose_server_is_gone_closes_on_its_own() {
        let (mut ws, mut client) = server_over_duplex();
        let (slot, returned) = oneshot::channel();
        ws.set_hand_back(slot);
        drop(returned);
        drop(ws);
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.unwrap();
        assert_eq!(written, NORMAL_CLOSE);
    }
}
