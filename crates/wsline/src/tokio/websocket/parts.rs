//! What a [`WebSocket`](super::WebSocket) is made of: its limits, the step and read
//! policies its driving loop speaks in, the protocol core and its stream with
//! the core's deadline remembered, the two directions of the stream, the sleep for the next
//! deadline, the queue of unread messages, and the pings awaiting their pong.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use ::tokio::sync::oneshot;
use ::tokio::time::{sleep_until, Instant, Sleep};

use crate::layer::{DEFAULT_MAX_UNREAD_BYTES, DEFAULT_MAX_UNREAD_MESSAGES};
use crate::proto::{Connection, Event, Fragment, SendBuffer};
use crate::{BackpressurePolicy, ConnectConfig, Message, ServerConfig};

/// The I/O layer's limits for one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) read_buffer_size: usize,
    pub(crate) send_high_water: usize,
    pub(crate) backpressure: BackpressurePolicy,
    pub(crate) max_unread_messages: usize,
    pub(crate) max_unread_bytes: usize,
}

impl Limits {
    pub(super) fn new(read_buffer_size: usize, send_high_water: usize) -> Self {
        Self {
            read_buffer_size: read_buffer_size.max(1),
            send_high_water,
            backpressure: BackpressurePolicy::Error,
            max_unread_messages: DEFAULT_MAX_UNREAD_MESSAGES,
            max_unread_bytes: DEFAULT_MAX_UNREAD_BYTES,
        }
    }
}

impl From<&ServerConfig> for Limits {
    fn from(config: &ServerConfig) -> Self {
        Self {
            backpressure: config.backpressure,
            ..Self::new(config.io.read_buffer_size, config.io.send_high_water)
        }
    }
}

impl From<&ConnectConfig> for Limits {
    fn from(config: &ConnectConfig) -> Self {
        Self::new(config.io.read_buffer_size, config.io.send_high_water)
    }
}

/// When a step may read from the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadPolicy {
    /// The caller waits for a message: read.
    Receive,
    /// The caller waits for something else (room to send, a flush, a pong): read only while
    /// the queue of unread messages is below its limits, so that pings and close frames are
    /// answered without buffering without bound.
    Bounded,
    /// The caller waits for the closing handshake: read whatever comes; messages past the
    /// queue's limits are dropped.
    Closing,
    /// Do not read (a split connection whose reader is behind).
    Never,
}

/// What one step of progress achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Something happened: bytes arrived, a timer fired, the state changed.
    Progress,
    /// Bytes were written, nothing else happened; every source of progress has a waker.
    Wrote,
    /// Nothing can happen until a waker registered by the step fires.
    Blocked,
    /// The connection is closed and there is nothing left to do.
    Finished,
}

/// Ping payloads sent by [`WebSocket::ping`] whose pong is still awaited, at most.
const MAX_PINGS_IN_FLIGHT: usize = 64;

/// The read direction of the stream.
#[derive(Debug)]
pub(super) enum ReadSide {
    /// Reads may bring bytes.
    Open,
    /// The peer closed its write half: no more bytes will come.
    Eof,
    /// The stream failed, reading or writing; the error is kept for the application.
    Failed(io::Error),
}

/// The write direction of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WriteSide {
    /// Everything written is flushed.
    Open,
    /// Bytes were written since the stream was last flushed: a TLS stream (or any buffering
    /// one) may still hold them.
    Unflushed,
    /// The core asked for the write half to be shut down, and the shutdown is under way.
    ShuttingDown,
    /// Shut down, or the stream failed: nothing more can be written.
    Closed,
}

/// The core and the stream it runs over, with the core's next deadline remembered. Reading
/// the core (`Deref`) keeps the deadline; any mutable access (`DerefMut`: input, a send,
/// draining output or events) forgets it, so it is asked of the core again only after the
/// core may have changed, and no call site has to say so.
///
/// The stream and the core are one [`Link`], so that a server's connection can move both
/// to the server when its handler drops it (see [`WebSocket::set_hand_back`](super::WebSocket::set_hand_back)).
#[derive(Debug)]
pub(super) struct Core<S> {
    /// Present from construction until a dropped server connection hands it back: nothing
    /// uses a `WebSocket` after that.
    pub(super) link: Option<Link<S>>,
    /// `Connection::poll_timeout` as of the last mutable access, once asked.
    pub(super) deadline: Option<Option<std::time::Instant>>,
}

/// A connection's stream and its protocol core.
#[derive(Debug)]
pub(super) struct Link<S> {
    pub(super) io: S,
    pub(super) conn: Connection,
}

/// Why [`Core::link`] may be unwrapped.
pub(super) const LINKED: &str = "a WebSocket holds its stream and core until it is dropped";

impl<S> Core<S> {
    pub(super) fn new(io: S, conn: Connection) -> Self {
        Self {
            link: Some(Link { io, conn }),
            deadline: None,
        }
    }

    pub(super) fn link(&self) -> &Link<S> {
        self.link.as_ref().expect(LINKED)
    }

    pub(super) fn link_mut(&mut self) -> &mut Link<S> {
        self.link.as_mut().expect(LINKED)
    }

    /// The stream. Using it moves no timer of the core.
    pub(super) fn io(&mut self) -> &mut S {
        &mut self.link_mut().io
    }

    /// The stream and the bytes to write to it, at once.
    pub(super) fn io_and_send_buffer(&mut self) -> (&mut S, &mut SendBuffer) {
        let link = self.link_mut();
        (&mut link.io, link.conn.send_buffer())
    }

    /// The bytes to write (this shadows `Connection::send_buffer`), without forgetting the
    /// deadline: taking output moves no timer of
    /// the core (the shutdown that may follow is asked for through `DerefMut`).
    pub(super) fn send_buffer(&mut self) -> &mut SendBuffer {
        self.link_mut().conn.send_buffer()
    }

    /// The next event, if one is there, forgetting the deadline only when taking it moved a
    /// timer: taking the last event before a peer's held close starts the core's
    /// acknowledge timeout.
    pub(super) fn take_event(&mut self) -> Option<Event> {
        let conn = &mut self.link_mut().conn;
        let event = conn.poll_event()?;
        if conn.awaits_acknowledgement() && !conn.has_events() {
            self.deadline = None;
        }
        Some(event)
    }

    /// Tells the core the events taken were handled (this shadows
    /// `Connection::acknowledge_events`), forgetting the deadline only when the core had a
    /// peer's close or error waiting, which may act now. Returns whether one was waiting.
    pub(super) fn acknowledge_events(&mut self) -> bool {
        let conn = &mut self.link_mut().conn;
        let waiting = conn.awaits_acknowledgement();
        conn.acknowledge_events();
        if waiting {
            self.deadline = None;
        }
        waiting
    }

    /// The core's next deadline (see [`Connection::poll_timeout`]).
    pub(super) fn deadline(&mut self) -> Option<std::time::Instant> {
        if let Some(deadline) = self.deadline {
            return deadline;
        }
        let deadline = self.link().conn.poll_timeout();
        self.deadline = Some(deadline);
        deadline
    }
}

impl<S> Deref for Core<S> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.link().conn
    }
}

impl<S> DerefMut for Core<S> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.deadline = None;
        &mut self.link_mut().conn
    }
}

/// The sleep that wakes the connection at its next deadline. It is polled (which costs)
/// only when the deadline or the task to wake changes; otherwise checking it is an atomic
/// load.
#[derive(Default)]
pub(super) struct Timer {
    pub(super) sleep: Option<Pin<Box<Sleep>>>,
    /// The deadline the sleep is set to and the task it wakes, once polled for it.
    pub(super) armed: Option<(std::time::Instant, Waker)>,
}

impl Timer {
    /// Whether `deadline` has passed; if not, the task of `cx` is woken when it does.
    #[inline]
    pub(super) fn poll_elapsed(
        &mut self,
        cx: &mut Context<'_>,
        deadline: std::time::Instant,
    ) -> bool {
        if let (Some(sleep), Some((armed, waker))) = (&self.sleep, &self.armed) {
            if *armed == deadline && waker.will_wake(cx.waker()) {
                // Registered already: an atomic load.
                let elapsed = sleep.is_elapsed();
                if elapsed {
                    self.armed = None;
                }
                return elapsed;
            }
        }
        self.poll_armed(cx, deadline)
    }

    /// Sets the sleep to `deadline` (if it is not set to it) and polls it for the task of
    /// `cx`.
    pub(super) fn poll_armed(
        &mut self,
        cx: &mut Context<'_>,
        deadline: std::time::Instant,
    ) -> bool {
        let at = Instant::from_std(deadline);
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(sleep_until(at)));
        if self
            .armed
            .as_ref()
            .is_none_or(|(armed, _)| *armed != deadline)
        {
            sleep.as_mut().reset(at);
        }
        let elapsed = sleep.as_mut().poll(cx).is_ready();
        self.armed = (!elapsed).then(|| (deadline, cx.waker().clone()));
        elapsed
    }
}

/// Received messages (or pieces of them) the application has not read yet.
#[derive(Debug, Default)]
pub(super) struct Unread {
    pub(super) queue: VecDeque<Fragment>,
    pub(super) bytes: usize,
}

impl Unread {
    pub(super) fn push_back(&mut self, fragment: Fragment) {
        self.bytes += fragment.data.len();
        self.queue.push_back(fragment);
    }

    pub(super) fn push_front(&mut self, fragment: Fragment) {
        self.bytes += fragment.data.len();
        self.queue.push_front(fragment);
    }

    pub(super) fn pop_front(&mut self) -> Option<Fragment> {
        let fragment = self.queue.pop_front()?;
        self.bytes -= fragment.data.len();
        Some(fragment)
    }
}

/// A whole message as the one piece of itself.
pub(super) fn whole(message: Message) -> Fragment {
    Fragment {
        data: message,
        first: true,
        fin: true,
    }
}

/// Pings sent by [`WebSocket::ping`](super::WebSocket::ping) (and split senders) whose pong is awaited.
#[derive(Debug, Default)]
pub(super) struct Pings {
    pub(super) next_id: u64,
    pub(super) in_flight: VecDeque<(u64, std::time::Instant, oneshot::Sender<Duration>)>,
}

impl Pings {
    /// Records a ping; returns its payload.
    pub(super) fn start(&mut self, waiter: oneshot::Sender<Duration>) -> [u8; 8] {
        if self.in_flight.len() == MAX_PINGS_IN_FLIGHT {
            // Its caller sees the ping fail; an unanswered ping is not worth memory.
            self.in_flight.pop_front();
        }
        self.next_id += 1;
        let now = Instant::now().into_std();
        self.in_flight.push_back((self.next_id, now, waiter));
        self.next_id.to_be_bytes()
    }

    /// A pong arrived: it answers its ping and every earlier one (RFC 6455 §5.5.3: "If an
    /// endpoint receives a Ping frame and has not yet sent Pong frame(s) in response to
    /// previous Ping frame(s), the endpoint MAY elect to send a Pong frame for only the most
    /// recently processed Ping frame.")
    pub(super) fn answer(&mut self, payload: &[u8]) {
        let Ok(id) = <[u8; 8]>::try_from(payload).map(u64::from_be_bytes) else {
            return;
        };
        if !self.in_flight.iter().any(|(sent_id, _, _)| *sent_id == id) {
            return;
        }
        let now = Instant::now().into_std();
        while let Some((sent_id, sent_at, waiter)) = self.in_flight.pop_front() {
            // The caller may have given up waiting; then nobody needs the latency.
            let _ = waiter.send(now.saturating_duration_since(sent_at));
            if sent_id == id {
                break;
            }
        }
    }
}
