//! Splitting a [`WebSocket`] into a reader and a writer for two tasks.
//!
//! The halves do not share the connection behind a lock: a driver task owns it and keeps
//! the protocol alive on its own — answering pings and close frames, running keepalive and
//! timeouts, writing queued bytes — whether or not the application reads or writes. The
//! reader takes messages from a queue the driver fills (bounded: past the unread limit the
//! driver stops reading the socket); writers hand messages to the driver through a queue
//! bounded in bytes by the send high-water mark. The hot paths are atomic counters and
//! lock-free channels; a lock is taken only to park a task that must wait (and, per send,
//! an uncontended one that numbers, in queue order, the sends whose verdict a caller awaits).
//!
//! Every command a [`Sender`] hands over comes back with a verdict: the driver applies it
//! to the connection and records the outcome in the sender's [`Outcomes`], so that a send
//! the connection refused (it was closing, a fragmented message was in progress, a control
//! payload was too long) returns that error to its caller.

use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use ::tokio::io::{AsyncRead, AsyncWrite};
use ::tokio::sync::{mpsc, oneshot};
use ::tokio::task::JoinHandle;
use futures_core::{FusedStream, Stream};
use futures_sink::Sink;

mod verdict;

use self::verdict::{AtomicPublished, Command, Order, Outcomes, Parked, Published, Ticket};
use super::websocket::{no_topics, ReadPolicy, Step, WebSocket};
use crate::layer::server::SLOW_READER_REASON;
use crate::layer::{close_if_open, DEFAULT_PONG_WAIT};
use crate::proto::{CloseCode, ConnectionClosed, Fragment, PreparedMessage, SendError, State};
use crate::topics::{PublishOptions, SubscriberId, Topics};
use crate::{BackpressurePolicy, Error, Message, Result};

/// What the halves and the driver share.
struct Shared {
    send_high_water: usize,
    backpressure: BackpressurePolicy,
    pong_wait: Duration,
    max_unread_messages: usize,
    /// Bytes of messages in the command queue.
    queued: AtomicUsize,
    /// The connection's send buffer, as the driver last published it.
    pending: AtomicUsize,
    /// Messages in the reader's queue.
    unread: AtomicUsize,
    state: AtomicPublished,
    /// A sender past the high-water mark under [`BackpressurePolicy::Close`] asks the driver
    /// to fail the connection: at once, not behind the commands it cannot take.
    slow_reader: AtomicBool,
    /// How the connection ended, once it has.
    closed: Mutex<Option<ConnectionClosed>>,
    writers: Parked,
    driver: Parked,
    /// The connection's topics, and itself as their subscriber, as of the split.
    topics: Option<(Topics, Option<SubscriberId>)>,
}

impl Shared {
    fn state(&self) -> Published {
        self.state.load()
    }

    fn pending(&self) -> usize {
        self.queued
            .load(Ordering::SeqCst)
            .saturating_add(self.pending.load(Ordering::SeqCst))
    }

    fn has_room(&self) -> bool {
        self.pending() <= self.send_high_water
    }

    fn closed_status(&self) -> Option<ConnectionClosed> {
        self.closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The error for a send on a connection that is no longer open.
    fn not_open(&self) -> Error {
        match self.closed_status() {
            Some(closed) if closed.failure.is_some() => Error::from_closed(closed),
            _ => SendError::Closed.into(),
        }
    }
}

/// The reading half of a split [`WebSocket`]: receives messages from the driver task.
pub struct ReadHalf<S: AsyncRead + AsyncWrite + Unpin> {
    inbox: mpsc::UnboundedReceiver<Result<Fragment>>,
    shared: Arc<Shared>,
    driver: JoinHandle<WebSocket<S>>,
    terminated: bool,
}

/// The writing half of a split [`WebSocket`]: what a [`Sender`] does, plus being
/// [reunited](ReadHalf::reunite) with its reader.
pub struct WriteHalf<S: AsyncRead + AsyncWrite + Unpin> {
    sender: Sender,
    stream: PhantomData<fn() -> S>,
}

/// A cloneable handle that sends on a split connection, from any number of tasks.
///
/// Messages from one `Sender` go out in the order sent; messages from several interleave
/// whole (never mixed within a message). Each clone learns the outcome of its own sends.
pub struct Sender {
    commands: mpsc::UnboundedSender<Order>,
    shared: Arc<Shared>,
    outcomes: Arc<Outcomes>,
    /// The number of the last awaited command handed over; locked while one is, so that
    /// numbers follow the order of the queue.
    issued: Mutex<u64>,
    /// The close command of the [`Sink`] impl, once handed over.
    sink_close: Option<u64>,
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            shared: Arc::clone(&self.shared),
            outcomes: Arc::default(),
            issued: Mutex::new(0),
            sink_close: None,
        }
    }
}

/// [`ReadHalf::reunite`] was given halves of two different connections; here they are back.
pub struct ReuniteError<S: AsyncRead + AsyncWrite + Unpin>(pub ReadHalf<S>, pub WriteHalf<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> fmt::Debug for ReuniteError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReuniteError(..)")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> fmt::Display for ReuniteError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves of different WebSocket connections")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> std::error::Error for ReuniteError<S> {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> WebSocket<S> {
    /// Splits the connection into a reader and a writer that two tasks can use at once,
    /// handing the connection to a driver task that keeps the protocol alive on its own
    /// (see the [module docs](crate::tokio#split-connections)). Messages already received
    /// stay first in line for the reader.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn split(self) -> (ReadHalf<S>, WriteHalf<S>) {
        let limits = self.limits();
        let pong_wait = self.config().ping_timeout.unwrap_or(DEFAULT_PONG_WAIT);
        let shared = Arc::new(Shared {
            send_high_water: limits.send_high_water,
            backpressure: limits.backpressure,
            pong_wait,
            max_unread_messages: limits.max_unread_messages,
            queued: AtomicUsize::new(0),
            pending: AtomicUsize::new(self.unwritten()),
            unread: AtomicUsize::new(0),
            state: AtomicPublished::new(Published::of(self.state())),
            slow_reader: AtomicBool::new(false),
            closed: Mutex::new(None),
            writers: Parked::default(),
            driver: Parked::default(),
            topics: self
                .topics()
                .map(|topics| (topics.clone(), self.subscriber_id())),
        });
        let (commands, command_queue) = mpsc::unbounded_channel();
        let (inbox_sender, inbox) = mpsc::unbounded_channel();
        let driver = Driver {
            commands: command_queue,
            commands_closed: false,
            inbox: inbox_sender,
            shared: Arc::clone(&shared),
        };
        let driver = ::tokio::spawn(driver.run(self));
        let reader = ReadHalf {
            inbox,
            shared: Arc::clone(&shared),
            driver,
            terminated: false,
        };
        let writer = WriteHalf {
            sender: Sender {
                commands,
                shared,
                outcomes: Arc::default(),
                issued: Mutex::new(0),
                sink_close: None,
            },
            stream: PhantomData,
        };
        (reader, writer)
    }
}

/// The task that owns a split connection.
struct Driver {
    commands: mpsc::UnboundedReceiver<Order>,
    commands_closed: bool,
    inbox: mpsc::UnboundedSender<Result<Fragment>>,
    shared: Arc<Shared>,
}

impl Driver {
    /// Drives the connection until it ends or the halves are reunited; returns it.
    async fn run<S>(mut self, mut ws: WebSocket<S>) -> WebSocket<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Messages received before the split go to the reader first.
        self.forward(&mut ws);
        poll_fn(|cx| self.poll(&mut ws, cx)).await;
        ws
    }

    fn poll<S>(&mut self, ws: &mut WebSocket<S>, cx: &mut Context<'_>) -> Poll<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            if self.take_commands(ws, cx).is_ready() {
                return Poll::Ready(());
            }
            if self.shared.unread.load(Ordering::SeqCst) == 0 {
                // The reader took every message, and what the writers sent is queued.
                ws.acknowledge();
            }
            if self.commands_closed && self.inbox.is_closed() {
                if ws.hands_back() {
                    // Nobody can read or write any more: a server's connection goes back
                    // to the server (when the task drops it), which closes it according
                    // to its handler's outcome.
                    return Poll::Ready(());
                }
                // Nobody can read or write any more: close (1000 may be sent).
                let _ = close_if_open(ws.conn_mut(), CloseCode::NORMAL, "");
            }
            let closing = ws.close_sent();
            let policy = if closing {
                ReadPolicy::Closing
            } else if self.reader_has_room() {
                ReadPolicy::Receive
            } else {
                self.shared.driver.park(cx.waker());
                if self.reader_has_room() {
                    continue;
                }
                ReadPolicy::Never
            };
            let step = ws.poll_step(cx, policy);
            self.forward(ws);
            self.shared.pending.store(ws.unwritten(), Ordering::SeqCst);
            self.shared.state.store(Published::of(ws.state()));
            match step {
                Step::Progress | Step::Wrote => self.shared.writers.wake_all(),
                Step::Blocked => {
                    self.shared.writers.wake_all();
                    return Poll::Pending;
                }
                Step::Finished => {
                    self.finish(ws);
                    return Poll::Ready(());
                }
            }
        }
    }

    /// Fails the connection for a slow reader if a sender asked, then applies writers'
    /// commands in order while the send buffer has room. Ready on `Stop`.
    fn take_commands<S>(&mut self, ws: &mut WebSocket<S>, cx: &mut Context<'_>) -> Poll<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        while !self.commands_closed && ws.pending_send() <= ws.send_mark() {
            let Order { command, ticket } = match self.commands.poll_recv(cx) {
                Poll::Ready(Some(order)) => order,
                Poll::Ready(None) => {
                    self.commands_closed = true;
                    break;
                }
                Poll::Pending => break,
            };
            let weight = command.weight();
            let result = match command {
                Command::Message(message) => ws.queue(message),
                Command::Prepared(prepared) => ws.queue_prepared(&prepared),
                Command::Ping(waiter) => ws.start_ping(waiter),
                Command::Pong(payload) => ws.conn_mut().send_pong(&payload).map_err(Error::from),
                Command::Close(code, reason) => close_if_open(ws.conn_mut(), code, &reason)
                    .map(drop)
                    .map_err(Error::from),
                Command::Stop => {
                    ticket.resolve(Ok(()));
                    return Poll::Ready(());
                }
            };
            if weight > 0 {
                // Now in the send buffer: counted there before it leaves the queue, so that
                // a flush never sees both at zero while it is on its way.
                self.shared.pending.store(ws.unwritten(), Ordering::SeqCst);
                self.shared.queued.fetch_sub(weight, Ordering::SeqCst);
            }
            ticket.resolve(result);
        }
        if !self.commands_closed && ws.pending_send() > ws.send_mark() {
            // The command queue is not polled, so its waker is not registered: a slow-reader
            // request wakes the driver through this one.
            self.shared.driver.park(cx.waker());
        }
        if self.shared.slow_reader.swap(false, Ordering::SeqCst) && ws.state() == State::Open {
            ws.conn_mut()
                .fail(CloseCode::POLICY_VIOLATION, SLOW_READER_REASON);
        }
        Poll::Pending
    }

    /// Whether the reader's queue has room (a reader that is gone takes nothing).
    fn reader_has_room(&self) -> bool {
        self.inbox.is_closed()
            || self.shared.unread.load(Ordering::SeqCst) < self.shared.max_unread_messages
    }

    /// Moves received messages to the reader's queue.
    fn forward<S>(&mut self, ws: &mut WebSocket<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let closing = ws.close_sent();
        while let Some(fragment) = ws.take_fragment() {
            if closing && !self.reader_has_room() {
                tracing::debug!(len = fragment.data.len(), "message dropped while closing");
                continue;
            }
            if self.inbox.send(Ok(fragment)).is_ok() {
                self.shared.unread.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// The connection is over: tell the reader how, and every parked writer.
    fn finish<S>(&mut self, ws: &mut WebSocket<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(Err(error)) = ws.take_outcome::<Fragment>() {
            // The reader may be gone; then nobody needs to know.
            let _ = self.inbox.send(Err(error));
        }
        *self
            .shared
            .closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = ws.close_status().cloned();
        self.shared.state.store(Published::Closed);
        self.shared.writers.wake_all();
    }
}

/// Senders stop once the driver is gone: the connection ended, was reunited, or the driver
/// panicked. Commands still queued are refused, so that nobody waits for their verdict.
impl Drop for Driver {
    fn drop(&mut self) {
        self.shared.state.store(Published::Closed);
        self.commands.close();
        while let Ok(order) = self.commands.try_recv() {
            order.ticket.resolve(Err(self.shared.not_open()));
        }
        self.shared.writers.wake_all();
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> fmt::Debug for ReadHalf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf")
            .field("unread", &self.shared.unread.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ReadHalf<S> {
    /// Receives the next message, as [`WebSocket::recv`]: `None` after a normal closure,
    /// any other ending reported once as an error.
    ///
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message, as [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        self.poll_recv_fragment(cx)
            .map(|item| item.map(|fragment| fragment.map(|fragment| fragment.data)))
    }

    /// Receives the next piece of a message with its flags, as
    /// [`WebSocket::recv_fragment`]: with
    /// [`Config::deliver_fragments`](crate::proto::Config::deliver_fragments) each frame,
    /// else each whole message as one `Fragment { first: true, fin: true, .. }`.
    ///
    /// Cancel-safe.
    pub async fn recv_fragment(&mut self) -> Option<Result<Fragment>> {
        poll_fn(|cx| self.poll_recv_fragment(cx)).await
    }

    /// Polls for the next piece of a message, as [`recv_fragment`](Self::recv_fragment).
    pub fn poll_recv_fragment(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Fragment>>> {
        let item = ready!(self.inbox.poll_recv(cx));
        match &item {
            Some(Ok(_)) => {
                self.shared.unread.fetch_sub(1, Ordering::SeqCst);
                self.shared.driver.wake_all();
            }
            Some(Err(_)) | None => self.terminated = true,
        }
        Poll::Ready(item)
    }

    /// How the connection ended, once it has.
    #[must_use]
    pub fn close_status(&self) -> Option<ConnectionClosed> {
        self.shared.closed_status()
    }

    /// Puts the connection back together: the driver task stops after applying what the
    /// writer sent, and messages the reader has not taken stay first in line.
    ///
    /// Clones of the writer's [`Sender`] stop working: their sends fail as on a closed
    /// connection.
    ///
    /// # Errors
    /// [`ReuniteError`] with both halves when they come from different connections.
    ///
    /// # Panics
    /// If the driver task panicked (the panic is resumed).
    pub async fn reunite(
        mut self,
        writer: WriteHalf<S>,
    ) -> std::result::Result<WebSocket<S>, ReuniteError<S>> {
        if !Arc::ptr_eq(&self.shared, &writer.sender.shared) {
            return Err(ReuniteError(self, writer));
        }
        // Queued after every command of the writer; a driver that already ended ignores it.
        let _ = writer.sender.enqueue(Command::Stop, false);
        let mut ws = match (&mut self.driver).await {
            Ok(ws) => ws,
            // The driver never aborts itself; a panic is the only way to get here while
            // this task runs.
            Err(error) => std::panic::resume_unwind(
                error
                    .try_into_panic()
                    .unwrap_or_else(|error| Box::new(error.to_string())),
            ),
        };
        let mut forwarded = Vec::new();
        while let Ok(item) = self.inbox.try_recv() {
            if let Ok(fragment) = item {
                forwarded.push(fragment);
            }
        }
        ws.push_front_unread(forwarded.into_iter());
        Ok(ws)
    }
}

/// Messages until the connection closes, as [`ReadHalf::recv`]. Cancel-safe.
impl<S: AsyncRead + AsyncWrite + Unpin> Stream for ReadHalf<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FusedStream for ReadHalf<S> {
    fn is_terminated(&self) -> bool {
        self.terminated
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> fmt::Debug for WriteHalf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WriteHalf").field(&self.sender).finish()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WriteHalf<S> {
    /// A cloneable sender on the same connection, for other tasks.
    #[must_use]
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// As [`Sender::send`].
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub async fn send(&self, message: impl Into<Message>) -> Result<()> {
        self.sender.send(message).await
    }

    /// As [`Sender::feed`].
    ///
    /// # Errors
    /// As [`Sender::feed`].
    pub async fn feed(&self, message: impl Into<Message>) -> Result<()> {
        self.sender.feed(message).await
    }

    /// As [`Sender::try_send`].
    ///
    /// # Errors
    /// As [`Sender::try_send`].
    pub fn try_send(&self, message: impl Into<Message>) -> Result<()> {
        self.sender.try_send(message)
    }

    /// As [`Sender::try_send_prepared`].
    ///
    /// # Errors
    /// As [`Sender::try_send_prepared`].
    pub fn try_send_prepared(&self, prepared: &PreparedMessage) -> Result<()> {
        self.sender.try_send_prepared(prepared)
    }

    /// As [`Sender::publish`].
    ///
    /// # Errors
    /// As [`Sender::publish`].
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> Result<usize> {
        self.sender.publish(topic, message)
    }

    /// As [`Sender::pong`].
    ///
    /// # Errors
    /// As [`Sender::pong`].
    pub async fn pong(&self, payload: &[u8]) -> Result<()> {
        self.sender.pong(payload).await
    }

    /// As [`Sender::send_prepared`].
    ///
    /// # Errors
    /// As [`Sender::send_prepared`].
    pub async fn send_prepared(&self, prepared: &PreparedMessage) -> Result<()> {
        self.sender.send_prepared(prepared).await
    }

    /// As [`Sender::flush`].
    ///
    /// # Errors
    /// As [`Sender::flush`].
    pub async fn flush(&self) -> Result<()> {
        self.sender.flush().await
    }

    /// As [`Sender::ping`].
    ///
    /// # Errors
    /// As [`Sender::ping`].
    pub async fn ping(&self) -> Result<Duration> {
        self.sender.ping().await
    }

    /// As [`Sender::close`].
    ///
    /// # Errors
    /// As [`Sender::close`].
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<()> {
        self.sender.close(code, reason).await
    }

    /// Whether the connection is closing or closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("pending", &self.shared.pending())
            .field("state", &self.shared.state())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Sends a message: waits while more than the high-water mark is queued (the writer's
    /// queue plus the connection's send buffer), hands it to the driver, and waits until the
    /// driver has queued it on the connection (it is written in the background).
    ///
    /// Not cancel-safe: dropped before the message is handed over, it is not sent; dropped
    /// after, it is sent and its outcome is lost.
    ///
    /// # Errors
    /// [`Error::Send`] once the connection is closing or closed, or when the connection
    /// refused the message (a fragmented message in progress); the failure that ended it if
    /// it failed. A refusal of an earlier [`try_send`](Self::try_send) from this sender is
    /// reported instead, and then this message is not sent.
    pub async fn send(&self, message: impl Into<Message>) -> Result<()> {
        let message = message.into();
        poll_fn(|cx| self.poll_room(cx)).await?;
        let seq = self.push_command(Command::Message(message), true)?;
        poll_fn(|cx| self.poll_verdict(cx, seq)).await
    }

    /// Hands a message to the driver after waiting, as [`send`](Self::send), while more than
    /// the high-water mark is queued, but without waiting for the driver to queue it on the
    /// connection: a burst of messages costs no round trip to the driver each, which is the
    /// fast way to send many.
    ///
    /// Not cancel-safe, as [`send`](Self::send).
    ///
    /// # Errors
    /// As [`send`](Self::send), except that a refusal by the connection is returned by the
    /// next call on this sender ([`flush`](Self::flush), another `feed`, ...), as for
    /// [`try_send`](Self::try_send).
    pub async fn feed(&self, message: impl Into<Message>) -> Result<()> {
        let message = message.into();
        poll_fn(|cx| self.poll_room(cx)).await?;
        self.push_command(Command::Message(message), false)
            .map(drop)
    }

    /// Hands a message to the driver if the high-water mark allows, without waiting.
    ///
    /// # Errors
    /// Past the high-water mark: [`Error::SendBufferFull`] (the message is not sent), and
    /// with [`BackpressurePolicy::Close`] (a server's default) the connection is also failed
    /// with 1008 at once, whatever is queued. Otherwise as [`send`](Self::send), except that
    /// `try_send` does not wait for the connection's verdict: if it refuses the message, the
    /// next call on this sender ([`send`](Self::send), [`flush`](Self::flush), another
    /// `try_send`, ...) returns that error.
    pub fn try_send(&self, message: impl Into<Message>) -> Result<()> {
        self.check_room()?;
        self.push_command(Command::Message(message.into()), false)
            .map(drop)
    }

    /// Hands a message encoded once for many connections to the driver if the high-water
    /// mark allows, without waiting: the broadcast loop over many [`Sender`]s that one slow
    /// connection cannot stall.
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send).
    pub fn try_send_prepared(&self, prepared: &PreparedMessage) -> Result<()> {
        self.check_room()?;
        self.push_command(Command::Prepared(prepared.clone()), false)
            .map(drop)
    }

    /// Publishes `message` to every subscriber of `topic` but this connection, as
    /// [`WebSocket::publish`]. The connection keeps its subscriptions across the split
    /// (subscribe before splitting); publications go out through the driver.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a connection without topics.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> Result<usize> {
        let Some((topics, exclude)) = &self.shared.topics else {
            return Err(no_topics());
        };
        let options = PublishOptions {
            exclude: *exclude,
            ..PublishOptions::default()
        };
        Ok(topics.publish_with(topic, message, options))
    }

    /// Applies the backpressure policy to a send that does not wait.
    fn check_room(&self) -> Result<()> {
        if !self.shared.has_room() && self.shared.state() == Published::Open {
            if self.shared.backpressure == BackpressurePolicy::Close {
                self.shared.slow_reader.store(true, Ordering::SeqCst);
                self.shared.driver.wake_all();
            }
            return Err(Error::SendBufferFull {
                pending: self.shared.pending(),
                limit: self.shared.send_high_water,
            });
        }
        Ok(())
    }

    /// Sends a message encoded once for many connections (a broadcast over many
    /// [`Sender`]s), as [`WebSocket::send_prepared`]; otherwise as [`send`](Self::send).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_prepared(&self, prepared: &PreparedMessage) -> Result<()> {
        poll_fn(|cx| self.poll_room(cx)).await?;
        let seq = self.push_command(Command::Prepared(prepared.clone()), true)?;
        poll_fn(|cx| self.poll_verdict(cx, seq)).await
    }

    /// Hands a command to the driver, counting what it will queue until the driver has.
    /// `awaited`: whether the caller waits for its verdict; then returns the number to wait
    /// for, else 0.
    fn push_command(&self, command: Command, awaited: bool) -> Result<u64> {
        self.outcomes.take_unclaimed()?;
        if self.shared.state() != Published::Open {
            return Err(self.shared.not_open());
        }
        self.enqueue(command, awaited)
    }

    /// Puts a command in the driver's queue, whatever the connection's state, numbered if
    /// `awaited`, as [`push_command`](Self::push_command).
    fn enqueue(&self, command: Command, awaited: bool) -> Result<u64> {
        let weight = command.weight();
        self.shared.queued.fetch_add(weight, Ordering::SeqCst);
        let outcomes = Arc::clone(&self.outcomes);
        let queued = if awaited {
            // Plain data; a panic elsewhere leaves it usable.
            let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
            let seq = *issued + 1;
            let ticket = Ticket {
                outcomes,
                seq: Some(seq),
            };
            let queued = self.commands.send(Order { command, ticket }).is_ok();
            if queued {
                *issued = seq;
            }
            queued.then_some(seq)
        } else {
            // Nobody waits for it, so it needs no number and no lock.
            let ticket = Ticket {
                outcomes,
                seq: None,
            };
            self.commands
                .send(Order { command, ticket })
                .is_ok()
                .then_some(0)
        };
        queued.ok_or_else(|| {
            self.shared.queued.fetch_sub(weight, Ordering::SeqCst);
            self.shared.not_open()
        })
    }

    /// Ready with the verdict on command `seq` once the driver has applied it (or dropped
    /// it with the connection).
    fn poll_verdict(&self, cx: &mut Context<'_>, seq: u64) -> Poll<Result<()>> {
        for parked in [false, true] {
            if self.outcomes.applied.load(Ordering::SeqCst) >= seq {
                return Poll::Ready(self.outcomes.take_verdict(seq));
            }
            if !parked {
                self.outcomes.waiters.park(cx.waker());
            }
        }
        Poll::Pending
    }

    /// Ready when a message may be handed over (or the connection is no longer open).
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_until(cx, Shared::has_room)
    }

    /// Ready once `done` holds or the connection is no longer open (then with its error).
    fn poll_until(&self, cx: &mut Context<'_>, done: fn(&Shared) -> bool) -> Poll<Result<()>> {
        for parked in [false, true] {
            if self.shared.state() != Published::Open {
                return Poll::Ready(Err(self.shared.not_open()));
            }
            if done(&self.shared) {
                return Poll::Ready(Ok(()));
            }
            if !parked {
                self.shared.writers.park(cx.waker());
            }
        }
        Poll::Pending
    }

    /// Ready once everything handed over so far is written, with the first refusal of a
    /// command nobody waited for.
    fn poll_written(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let written = ready!(self.poll_until(cx, |shared| shared.pending() == 0));
        self.outcomes.take_unclaimed()?;
        Poll::Ready(written)
    }

    /// Waits until everything handed over so far is written to the stream.
    ///
    /// Cancel-safe.
    ///
    /// # Errors
    /// As [`send`](Self::send), and the refusal of an earlier [`try_send`](Self::try_send)
    /// from this sender.
    pub async fn flush(&self) -> Result<()> {
        poll_fn(|cx| self.poll_written(cx)).await
    }

    /// Sends a ping and waits for its pong; returns the round-trip time.
    ///
    /// # Errors
    /// [`Error::Timeout`] when no pong arrives within the configuration's `ping_timeout`
    /// (20 s when it is `None`), and as [`send`](Self::send).
    pub async fn ping(&self) -> Result<Duration> {
        let (waiter, pong) = oneshot::channel();
        let seq = self.push_command(Command::Ping(waiter), true)?;
        poll_fn(|cx| self.poll_verdict(cx, seq)).await?;
        match ::tokio::time::timeout(self.shared.pong_wait, pong).await {
            Ok(Ok(latency)) => Ok(latency),
            Ok(Err(_)) if self.shared.state() != Published::Open => Err(self.shared.not_open()),
            Ok(Err(_)) | Err(_) => Err(Error::Timeout(crate::proto::Failure::KeepaliveTimeout)),
        }
    }

    /// Sends an unsolicited pong after the messages handed over so far, a one-way heartbeat
    /// that expects no reply (RFC 6455 §5.5.3), and waits until the driver has queued it.
    ///
    /// # Errors
    /// [`SendError::ControlPayloadTooLong`] over 125 bytes, else as [`send`](Self::send).
    pub async fn pong(&self, payload: &[u8]) -> Result<()> {
        let seq = self.push_command(Command::Pong(payload.to_vec()), true)?;
        poll_fn(|cx| self.poll_verdict(cx, seq)).await
    }

    /// Starts the closing handshake (RFC 6455 §7.1.2) after the messages handed over so far,
    /// and waits until the connection is closed (within the close timeout). The reader sees
    /// the end of its stream.
    ///
    /// Cancel-safe once polled.
    ///
    /// # Errors
    /// [`Error::Send`] for a code that may not be sent; the failure that ended the
    /// connection if the handshake did not complete cleanly.
    pub async fn close(&self, code: CloseCode, reason: &str) -> Result<()> {
        match self.push_command(Command::Close(code, reason.to_owned()), true) {
            Ok(seq) => poll_fn(|cx| self.poll_verdict(cx, seq)).await?,
            Err(error) if self.shared.state() == Published::Open => return Err(error),
            // Closing or closed already: wait for the end.
            Err(_) => {}
        }
        poll_fn(|cx| self.poll_closed(cx)).await
    }

    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        for parked in [false, true] {
            if self.shared.state() == Published::Closed {
                return Poll::Ready(match self.shared.closed_status() {
                    Some(closed) if !closed.clean => Err(Error::from_closed(closed)),
                    _ => Ok(()),
                });
            }
            if !parked {
                self.shared.writers.park(cx.waker());
            }
        }
        Poll::Pending
    }

    /// Whether the connection is closing or closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.state() != Published::Open
    }

    /// Bytes handed over and not yet written.
    #[must_use]
    pub fn pending_send(&self) -> usize {
        self.shared.pending()
    }
}

/// Sends messages as [`Sender::send`] without waiting for each verdict: flushing waits
/// until they are written and reports a message the connection refused; closing sends 1000
/// and waits for the end of the connection.
impl Sink<Message> for Sender {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_room(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<()> {
        self.push_command(Command::Message(message), false)
            .map(drop)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_written(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let seq = match this.sink_close {
            Some(seq) => seq,
            None => match this.push_command(Command::Close(CloseCode::NORMAL, String::new()), true)
            {
                Ok(seq) => *this.sink_close.insert(seq),
                Err(error) if this.shared.state() == Published::Open => {
                    return Poll::Ready(Err(error))
                }
                // Closing or closed already: nothing to wait for but the end (number 0
                // counts as applied).
                Err(_) => *this.sink_close.insert(0),
            },
        };
        ready!(this.poll_verdict(cx, seq))?;
        this.poll_closed(cx)
    }
}

/// As [`Sender`]'s.
impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WriteHalf<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().sender).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<()> {
        Pin::new(&mut self.get_mut().sender).start_send(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().sender).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().sender).poll_close(cx)
    }
}
