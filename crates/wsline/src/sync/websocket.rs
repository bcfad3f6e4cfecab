//! A blocking WebSocket over a TCP or TLS stream, with a driver thread that keeps the
//! protocol alive while the application is busy.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Events, Interest, Poll, Token, Waker};

use super::transport::{Blocking, Transport};
use crate::layer::{
    close_if_open, DEFAULT_MAX_UNREAD_BYTES as MAX_QUEUED_BYTES,
    DEFAULT_MAX_UNREAD_MESSAGES as MAX_QUEUED_MESSAGES, DEFAULT_PONG_WAIT,
};
use crate::proto::{self, CloseCode, ConnectionClosed, Event, Fragment, SendOptions, State};
use crate::{Error, Message, Result};
/// Pong payloads remembered for `ping()` callers.
const MAX_REMEMBERED_PONGS: usize = 16;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// State shared by the application thread and the driver thread.
struct Inner {
    conn: proto::Connection,
    stream: Transport,
    /// Received and not yet read: whole messages as one fragment each, or the fragments
    /// the core delivers with `Config::deliver_fragments`.
    messages: VecDeque<Fragment>,
    queued_bytes: usize,
    pongs: VecDeque<Bytes>,
    closed: Option<ConnectionClosed>,
    io_error: Option<io::ErrorKind>,
    /// Bytes the application may queue before `send` blocks.
    send_high_water: usize,
    /// Whether the write half has been shut down.
    shut_down: bool,
    /// Whether iteration has reported the error that ended the connection.
    error_reported: bool,
    /// Whether the application is handling a message it read (it has not come back to
    /// `recv` yet): until it does, the core is not told that the events were handled.
    handling: bool,
}

impl Inner {
    /// Writes as much queued output as the socket takes without blocking.
    fn flush(&mut self) -> io::Result<()> {
        super::flush_nonblocking(&mut self.stream, &mut self.conn, &mut self.shut_down)
    }

    /// Moves the core's events to where the application reads them. While messages wait
    /// for the application, or it is still handling the last one, the core is not told the
    /// events were handled, so a close frame or protocol error that followed them is acted
    /// on only after the application has read (and perhaps answered) them — or once the
    /// core's `acknowledge_timeout` has passed.
    fn dispatch_events(&mut self) {
        loop {
            self.take_events();
            if !self.messages.is_empty() || self.handling {
                return;
            }
            self.conn.acknowledge_events();
            if !self.conn.has_events() {
                return;
            }
        }
    }

    fn take_events(&mut self) {
        loop {
            // While a close frame or protocol error from the peer waits for the messages
            // before it, hand those over one at a time, as the application comes back for
            // them: the core's acknowledge timeout then runs from when it took the last.
            if self.conn.awaits_acknowledgement() && (!self.messages.is_empty() || self.handling) {
                return;
            }
            let Some(event) = self.conn.poll_event() else {
                return;
            };
            match event {
                Event::Message(message) => {
                    self.queued_bytes += message.len();
                    self.messages.push_back(Fragment {
                        data: message,
                        first: true,
                        fin: true,
                    });
                }
                Event::Pong(payload) => {
                    if self.pongs.len() == MAX_REMEMBERED_PONGS {
                        self.pongs.pop_front();
                    }
                    self.pongs.push_back(payload);
                }
                Event::Closed(closed) => self.closed = Some(closed),
                Event::Fragment(fragment) => {
                    self.queued_bytes += fragment.data.len();
                    self.messages.push_back(fragment);
                }
                Event::Request(_) | Event::Response(_) | Event::Ping(_) => {}
            }
        }
    }

    fn reading_paused(&self) -> bool {
        self.messages.len() >= MAX_QUEUED_MESSAGES || self.queued_bytes >= MAX_QUEUED_BYTES
    }

    /// Records a transport failure: the connection is over.
    fn fail_io(&mut self, error: &io::Error) {
        self.io_error.get_or_insert(error.kind());
        self.conn.handle_eof();
        self.dispatch_events();
    }

    /// Whether the driver has nothing left to do: once closed, what could be written has
    /// been written (a peer that stopped reading gets no more time).
    fn is_finished(&self) -> bool {
        self.conn.is_closed()
    }
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
    waker: Waker,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wake_driver(&self) {
        // The driver may have exited already, which is the only way waking can fail.
        let _ = self.waker.wake();
    }
}

/// A WebSocket connection for blocking code (over TCP, or TLS for `wss://`): the client
/// returned by [`connect`](crate::sync::client::connect) and the connection a
/// [`serve_blocking`](crate::sync::server::serve_blocking) handler owns.
///
/// A driver thread reads the socket, answers pings, completes the closing handshake and runs
/// keepalive, so the protocol stays alive while the application is busy between calls.
/// Messages wait in a bounded queue; when it is full the driver stops reading and TCP pushes
/// back on the peer. Dropping the `WebSocket` closes it with 1000 and waits (up to the close
/// timeout) for the closing handshake.
///
/// All methods take `&self` and may be called from several threads.
pub struct WebSocket {
    shared: Arc<Shared>,
    driver: Option<JoinHandle<()>>,
    peer_addr: Option<SocketAddr>,
    subprotocol: Option<String>,
    extension_names: Vec<String>,
    close_timeout: Option<Duration>,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("peer_addr", &self.peer_addr)
            .field("subprotocol", &self.subprotocol)
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    /// Wraps an open connection: `stream` carried the handshake that `conn` completed.
    pub(crate) fn start(
        stream: impl Blocking,
        conn: proto::Connection,
        send_high_water: usize,
    ) -> Result<Self> {
        let peer_addr = stream.socket().peer_addr().ok();
        let subprotocol = conn.subprotocol().map(str::to_owned);
        let extension_names = conn
            .extensions()
            .iter()
            .map(|extension| extension.name().to_owned())
            .collect();
        let close_timeout = conn.config().close_timeout;
        let mut stream = stream.into_transport()?;
        let poll = Poll::new()?;
        poll.registry().register(
            stream.socket_mut(),
            SOCKET,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let mut inner = Inner {
            conn,
            stream,
            messages: VecDeque::new(),
            queued_bytes: 0,
            pongs: VecDeque::new(),
            closed: None,
            io_error: None,
            send_high_water,
            shut_down: false,
            error_reported: false,
            handling: false,
        };
        inner.conn.handle_timeout(Instant::now());
        inner.dispatch_events();
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            changed: Condvar::new(),
            waker,
        });
        let driver_shared = Arc::clone(&shared);
        let driver = std::thread::Builder::new()
            .name("wsline-driver".into())
            .spawn(move || drive(&driver_shared, poll))?;
        Ok(Self {
            shared,
            driver: Some(driver),
            peer_addr,
            subprotocol,
            extension_names,
            close_timeout,
        })
    }

    /// A connection over a TCP stream whose opening handshake happened elsewhere (an HTTP
    /// server that did the upgrade itself), with `leftover`: the bytes that server read past
    /// the handshake head, if any. No extension is in use; the send high-water mark is the
    /// default (256 KiB).
    ///
    /// # Errors
    /// [`Error::Io`] when the stream cannot be set up for the driver thread, or the thread
    /// cannot start.
    pub fn from_upgraded(
        stream: TcpStream,
        side: proto::Side,
        config: proto::Config,
        leftover: &[u8],
    ) -> Result<Self> {
        let mut conn = proto::Connection::after_handshake(side, config, Instant::now());
        if !leftover.is_empty() {
            conn.handle_data(leftover);
        }
        Self::start(stream, conn, crate::DEFAULT_SEND_HIGH_WATER)
    }

    /// A server connection over a TCP stream whose handshake another HTTP stack answered
    /// with what [`proto::negotiate`] agreed on (subprotocol, extensions such as
    /// permessage-deflate, which are then in use), with `leftover`: the bytes that stack
    /// read past the request head, if any. The send high-water mark is the default
    /// (256 KiB).
    ///
    /// # Errors
    /// As [`from_upgraded`](Self::from_upgraded).
    pub fn from_negotiated(
        stream: TcpStream,
        negotiated: proto::Negotiated,
        config: impl Into<std::sync::Arc<proto::Config>>,
        leftover: &[u8],
    ) -> Result<Self> {
        let mut conn = proto::Connection::from_negotiated(negotiated, config, Instant::now());
        if !leftover.is_empty() {
            conn.handle_data(leftover);
        }
        Self::start(stream, conn, crate::DEFAULT_SEND_HIGH_WATER)
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// The subprotocol the handshake selected.
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The names of the extensions the handshake negotiated, such as `permessage-deflate`.
    pub fn extension_names(&self) -> impl Iterator<Item = &str> {
        self.extension_names.iter().map(String::as_str)
    }

    /// The connection's state.
    #[must_use]
    pub fn state(&self) -> State {
        self.shared.lock().conn.state()
    }

    /// Waits for the next message. With
    /// [`Config::deliver_fragments`](crate::Config::deliver_fragments), each fragment comes
    /// as a message of its own: [`recv_fragment`](Self::recv_fragment) says where messages
    /// begin and end.
    ///
    /// # Errors
    /// [`Error::ConnectionClosed`] once the connection is closed and every received message
    /// has been read (with the close codes), [`Error::Protocol`] if the peer broke the
    /// protocol, [`Error::Timeout`] for keepalive and close timeouts, [`Error::Io`] if the
    /// transport failed.
    pub fn recv(&self) -> Result<Message> {
        Ok(self.recv_fragment()?.data)
    }

    /// Waits for the next piece of a message, with its place in the message (RFC 6455
    /// §5.4): with [`Config::deliver_fragments`](crate::Config::deliver_fragments) each data
    /// frame as it arrives, else each whole message as one fragment with `first` and `fin`
    /// set.
    ///
    /// ```no_run
    /// use wsline::sync::client::connect_with;
    /// use wsline::{Config, ConnectConfig};
    /// let config = ConnectConfig {
    ///     protocol: Config { deliver_fragments: true, ..Config::default() },
    ///     ..ConnectConfig::default()
    /// };
    /// let ws = connect_with("ws://127.0.0.1:9001", config)?;
    /// let mut message = Vec::new();
    /// loop {
    ///     let fragment = ws.recv_fragment()?;
    ///     message.extend_from_slice(fragment.data.as_bytes());
    ///     if fragment.fin {
    ///         break;
    ///     }
    /// }
    /// # Ok::<(), wsline::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_fragment(&self) -> Result<Fragment> {
        self.recv_until(None)?
            .ok_or_else(|| Error::Io(io::ErrorKind::TimedOut.into()))
    }

    /// Waits at most `timeout` for the next message; `Ok(None)` when none came in time.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        let fragment = self.recv_until(Some(Instant::now() + timeout))?;
        Ok(fragment.map(|fragment| fragment.data))
    }

    /// Waits for the next message and returns its text.
    ///
    /// # Errors
    /// [`Error::NotText`] for a binary message (which is consumed), else as
    /// [`recv`](Self::recv).
    pub fn recv_text(&self) -> Result<String> {
        match self.recv()? {
            Message::Text(text) => Ok(text.as_str().to_owned()),
            Message::Binary(data) => Err(Error::NotText { len: data.len() }),
        }
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<Option<Fragment>> {
        let mut inner = self.shared.lock();
        loop {
            if let Some(fragment) = inner.messages.pop_front() {
                let was_paused = inner.reading_paused();
                inner.queued_bytes -= fragment.data.len();
                inner.handling = true;
                if was_paused && !inner.reading_paused() {
                    self.shared.wake_driver();
                }
                return Ok(Some(fragment));
            }
            // Every message read has been handled: the core may act on a close frame or a
            // protocol error that followed them.
            let state = inner.conn.state();
            let timeout = inner.conn.poll_timeout();
            inner.handling = false;
            inner.dispatch_events();
            if inner.conn.state() != state {
                if let Err(error) = inner.flush() {
                    inner.fail_io(&error);
                }
                self.shared.wake_driver();
            } else if inner.conn.poll_timeout() != timeout {
                // Taking the last message before a peer's close started the acknowledge
                // timeout: the driver must wait for it.
                self.shared.wake_driver();
            }
            if !inner.messages.is_empty() {
                continue;
            }
            if let Some(error) = closed_error(&inner) {
                return Err(error);
            }
            inner = match deadline {
                None => self.wait(inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return Ok(None);
                    };
                    self.wait_timeout(inner, left)
                }
            };
        }
    }

    fn wait<'a>(&self, inner: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        self.shared
            .changed
            .wait(inner)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait_timeout<'a>(
        &self,
        inner: MutexGuard<'a, Inner>,
        timeout: Duration,
    ) -> MutexGuard<'a, Inner> {
        self.shared
            .changed
            .wait_timeout(inner, timeout)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    /// Sends a message, blocking while more than the high-water mark of earlier sends is
    /// still waiting for the socket.
    ///
    /// # Errors
    /// [`Error::Send`] once the connection is closing or closed, [`Error::Io`] if the
    /// transport failed.
    pub fn send(&self, message: impl Into<Message>) -> Result<()> {
        self.send_with(message.into(), SendOptions::default())
    }

    /// Sends a text message.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_text(&self, text: &str) -> Result<()> {
        self.command(|conn| conn.send_text(text))
    }

    /// Sends a binary message.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_binary(&self, data: &[u8]) -> Result<()> {
        self.command(|conn| conn.send_binary(data))
    }

    /// Sends a message with per-message options (such as compression).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_with(&self, message: Message, options: SendOptions) -> Result<()> {
        self.command(|conn| conn.send_with(message, options))
    }

    /// Sends a message in fragments of at most `fragment_size` bytes (RFC 6455 §5.4). Text
    /// is cut at character boundaries.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_fragmented(&self, message: &Message, fragment_size: usize) -> Result<()> {
        for (range, fin) in message.fragment_ranges(fragment_size) {
            self.command(|conn| conn.send_message_fragment(message, range, fin))?;
        }
        Ok(())
    }

    /// Runs a send command on the core, then writes what the socket takes now; the driver
    /// writes the rest. Blocks first while the queue is above the high-water mark.
    fn command(
        &self,
        send: impl FnOnce(&mut proto::Connection) -> std::result::Result<(), proto::SendError>,
    ) -> Result<()> {
        let mut inner = self.shared.lock();
        while inner.conn.pending_send() > inner.send_high_water
            && inner.io_error.is_none()
            && !inner.conn.is_closed()
        {
            inner = self.wait(inner);
        }
        if let Some(error) = closed_error(&inner) {
            return Err(error);
        }
        send(&mut inner.conn)?;
        if let Err(error) = inner.flush() {
            inner.fail_io(&error);
            self.shared.changed.notify_all();
            return Err(error.into());
        }
        Ok(())
    }

    /// Sends an unsolicited pong: a one-way heartbeat that expects no reply (RFC 6455 §5.5.3).
    /// Pings are answered automatically; this is not needed for that.
    ///
    /// # Errors
    /// As [`send`](Self::send), and for payloads over 125 bytes.
    pub fn pong(&self, payload: &[u8]) -> Result<()> {
        self.command(|conn| conn.send_pong(payload))
    }

    /// Sends a ping and waits for its pong; returns the round-trip time.
    ///
    /// # Errors
    /// [`Error::Timeout`] when no pong arrives within the ping timeout (or the close timeout
    /// when keepalive is off), and as [`recv`](Self::recv).
    pub fn ping(&self) -> Result<Duration> {
        let mut payload = [0; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut payload);
        let started = Instant::now();
        let mut inner = self.shared.lock();
        let timeout = inner
            .conn
            .config()
            .ping_timeout
            .or(inner.conn.config().close_timeout)
            .unwrap_or(DEFAULT_PONG_WAIT);
        drop(inner);
        self.command(|conn| conn.send_ping(&payload))?;
        inner = self.shared.lock();
        loop {
            if let Some(index) = inner.pongs.iter().position(|pong| pong[..] == payload) {
                inner.pongs.remove(index);
                return Ok(started.elapsed());
            }
            if let Some(error) = closed_error(&inner) {
                return Err(error);
            }
            let Some(left) = timeout.checked_sub(started.elapsed()) else {
                return Err(Error::Timeout(proto::Failure::KeepaliveTimeout));
            };
            inner = self.wait_timeout(inner, left);
        }
    }

    /// Closes the connection (RFC 6455 §7.1.2) and waits, up to the close timeout, for the
    /// closing handshake to complete.
    ///
    /// # Errors
    /// [`Error::Send`] for a code that may not be sent. Closing a connection that is already
    /// closed is not an error.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<()> {
        let mut inner = self.shared.lock();
        if close_if_open(&mut inner.conn, code, reason)? {
            if let Err(error) = inner.flush() {
                inner.fail_io(&error);
            }
        }
        drop(inner);
        self.shared.wake_driver();
        let deadline = self
            .close_timeout
            .map(|timeout| Instant::now() + timeout * 2);
        let mut inner = self.shared.lock();
        while !inner.conn.is_closed() {
            inner = match deadline.and_then(|d| d.checked_duration_since(Instant::now())) {
                Some(left) => self.wait_timeout(inner, left),
                None if deadline.is_some() => break,
                None => self.wait(inner),
            };
        }
        Ok(())
    }

    /// A weak handle that can close this connection.
    pub(crate) fn closer(&self) -> Closer {
        Closer(Arc::downgrade(&self.shared))
    }

    /// How the connection ended, once it has.
    #[must_use]
    pub fn close_status(&self) -> Option<ConnectionClosed> {
        self.shared.lock().closed.clone()
    }
}

/// Closes a [`WebSocket`] from elsewhere without keeping it alive (a server's shutdown).
#[derive(Clone)]
pub(crate) struct Closer(std::sync::Weak<Shared>);

impl Closer {
    /// Starts the closing handshake if the connection still exists and is open.
    pub(crate) fn close(&self, code: CloseCode, reason: &str) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let mut inner = shared.lock();
        // The code is a valid one chosen by the caller.
        if close_if_open(&mut inner.conn, code, reason) == Ok(true) {
            if let Err(error) = inner.flush() {
                inner.fail_io(&error);
            }
        }
        drop(inner);
        shared.wake_driver();
    }

    /// Whether the connection is gone.
    pub(crate) fn is_gone(&self) -> bool {
        self.0.strong_count() == 0
    }
}

impl Drop for WebSocket {
    fn drop(&mut self) {
        // A close that fails means the connection is already closing or gone.
        let _ = self.close(CloseCode::NORMAL, "");
        {
            let mut inner = self.shared.lock();
            if !inner.conn.is_closed() {
                inner.conn.fail(CloseCode::ABNORMAL, "");
                inner.conn.handle_eof();
            }
        }
        self.shared.wake_driver();
        if let Some(driver) = self.driver.take() {
            // The driver only ends by returning; a panic in it has nothing to report here.
            let _ = driver.join();
        }
    }
}

/// Iterates over messages until the connection closes; a normal closure (1000, 1001) ends
/// the iteration, anything else yields the error once.
impl Iterator for &WebSocket {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Result<Message>> {
        match self.recv() {
            Ok(message) => Some(Ok(message)),
            Err(Error::ConnectionClosed(closed))
                if matches!(closed.code(), CloseCode::NORMAL | CloseCode::GOING_AWAY) =>
            {
                None
            }
            Err(error) => {
                let mut inner = self.shared.lock();
                if std::mem::replace(&mut inner.error_reported, true) {
                    return None;
                }
                Some(Err(error))
            }
        }
    }
}

/// The error that `recv` and `send` report once the connection is over.
fn closed_error(inner: &Inner) -> Option<Error> {
    if let Some(kind) = inner.io_error {
        return Some(Error::Io(kind.into()));
    }
    inner.closed.clone().map(Error::from_closed)
}

/// The driver thread: reads, answers, times, flushes, until the connection is over.
fn drive(shared: &Shared, mut poll: Poll) {
    let mut events = Events::with_capacity(8);
    let mut buf = vec![0; crate::DEFAULT_READ_BUFFER_SIZE];
    loop {
        let timeout = {
            let inner = shared.lock();
            if inner.is_finished() {
                break;
            }
            inner
                .conn
                .poll_timeout()
                .map(|deadline| deadline.saturating_duration_since(Instant::now()))
        };
        if let Err(error) = poll.poll(&mut events, timeout) {
            if error.kind() != io::ErrorKind::Interrupted {
                let mut inner = shared.lock();
                inner.fail_io(&error);
                shared.changed.notify_all();
                break;
            }
        }
        let mut inner = shared.lock();
        read_available(&mut inner, &mut buf);
        inner.conn.handle_timeout(Instant::now());
        inner.dispatch_events();
        if let Err(error) = inner.flush() {
            inner.fail_io(&error);
        }
        shared.changed.notify_all();
    }
    let mut inner = shared.lock();
    // One last chance for queued bytes (a close frame), then the connection is over; the
    // socket may already be closed by the peer, so errors are moot.
    let _ = inner.flush();
    inner.stream.shutdown();
}

/// Reads until the socket would block, the connection ends, or the message queue is full.
fn read_available(inner: &mut Inner, buf: &mut [u8]) {
    while !inner.reading_paused() && !inner.conn.is_closed() {
        match inner.stream.read(buf) {
            Ok(0) => {
                inner.conn.handle_eof();
                break;
            }
            Ok(n) => {
                inner.conn.handle_data(&buf[..n]);
                inner.dispatch_events();
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                inner.fail_io(&error);
                break;
            }
        }
    }
}
