//! One event loop: a `mio` poll over the shared listener and this loop's connections.
//! Handlers run inline; reads go through one buffer per loop; writes are vectored straight
//! from each connection's send buffer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::subscriptions::{Local, Subscriptions};
use super::{Command, Connection, ConnectionId, Handler, ServerShared, WorkerQueue};
use crate::layer::budget::{self, Share};
use crate::layer::close_if_open;
use crate::layer::server::{self, Answer, ACCEPT_RETRY_PAUSE, SHUTDOWN_REASON};
use crate::proto::{self, CloseCode, Config, Event, Request, State};
use crate::sync::transport::{NonBlocking, Transport};
use crate::topics::{Member, Publication};
use crate::{Error, ServerConfig};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// Reads from one connection per readiness event before the others get their turn, so a
/// fast sender cannot starve the rest (16 reads of 64 KiB: 1 MiB).
const READS_PER_TURN: usize = 16;
/// Replies queued past this are written at once rather than after the batch of events.
const BATCH_FLUSH_BYTES: usize = 64 << 10;
/// Connections whose replies wait for the end of a batch, at most: a bound on the latency
/// batching adds when many connections are ready at once.
const BATCH_CONNECTIONS: usize = 64;

/// One connection of this loop.
struct Conn<S> {
    stream: Transport,
    core: proto::Connection,
    state: S,
    generation: u32,
    peer_addr: Option<SocketAddr>,
    request: Option<Box<Request>>,
    /// The deadline last put on the timer heap.
    deadline: Option<Instant>,
    /// Whether `on_open` ran (and so `on_close` must).
    opened: bool,
    /// Whether the write half has been shut down.
    shut_down: bool,
    /// When the connection closed: what it had not written yet gets the close timeout.
    closed_at: Option<Instant>,
    /// Whether the socket failed; nothing more can be written.
    broken: bool,
    /// Bytes queued that the socket had not taken when this turn (a read's handlers, a
    /// timer, a command) began: what the backpressure policy judges the peer by.
    backlog: usize,
    /// Payload bytes of the messages handed to the handler this turn: how far the turn's
    /// replies may pass the high-water mark before they count against the peer.
    received: usize,
    /// This connection's part of the server's send budget.
    share: Option<Share>,
    /// Whether more bytes may be waiting in the socket after this turn.
    more_to_read: bool,
    /// Whether readiness reported the peer's end of stream: a short read then leaves it
    /// waiting in the socket, and edge-triggered readiness will not report it again.
    peer_closed: bool,
    /// The topics it is subscribed to.
    subscribed: Vec<Arc<str>>,
    /// Whether publications were queued for it since the loop last wrote them.
    published: bool,
    /// What the peer is judged by for publications.
    burst: server::Burst,
}

/// An event loop before it runs.
pub(super) struct EventLoop {
    index: u32,
    poll: Poll,
    listener: TcpListener,
    queue: Arc<WorkerQueue>,
}

impl EventLoop {
    pub(super) fn new(
        index: usize,
        listener: std::net::TcpListener,
        config: &ServerConfig,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let queue = Arc::new(WorkerQueue {
            commands: Mutex::new(Vec::new()),
            waker: Waker::new(poll.registry(), WAKER)?,
            wake_pending: AtomicBool::new(false),
            publish_backlog: AtomicUsize::new(0),
            max_publish_backlog: config.max_publish_backlog,
        });
        Ok(Self {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            poll,
            listener,
            queue,
        })
    }

    pub(super) fn queue(&self) -> Arc<WorkerQueue> {
        Arc::clone(&self.queue)
    }

    pub(super) fn run<H: Handler>(self, handler: &H, config: &ServerConfig, shared: &ServerShared) {
        let member: Arc<dyn Member> = self.queue.clone();
        let subscriptions =
            Subscriptions::new(config.topics.clone(), config.topics.new_member_id(), member);
        let mut running = Running {
            poll: self.poll,
            listener: self.listener,
            worker: Worker {
                index: self.index,
                queue: self.queue,
                subscriptions,
            },
            handler,
            config,
            protocol: Arc::new(config.protocol.clone()),
            shared,
            conns: Slab::new(),
            timers: BinaryHeap::new(),
            ready: Vec::new(),
            buf: vec![0; config.io.read_buffer_size.max(4096)],
            next_generation: 0,
            accepting: true,
            accept_retry: None,
            shutdown_deadline: None,
            batching: false,
            unflushed: Vec::new(),
            published: Vec::new(),
        };
        if let Err(error) = running.run() {
            tracing::error!(%error, "event loop failed");
        }
        running.drop_all();
    }
}

struct Running<'a, H: Handler> {
    poll: Poll,
    listener: TcpListener,
    worker: Worker,
    handler: &'a H,
    config: &'a ServerConfig,
    protocol: Arc<Config>,
    shared: &'a ServerShared,
    conns: Slab<Conn<H::State>>,
    /// Connection deadlines; stale entries are skipped when they come up.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Connections whose turn ended with bytes possibly left in the socket.
    ready: Vec<usize>,
    buf: Vec<u8>,
    next_generation: u32,
    accepting: bool,
    accept_retry: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    /// Whether a batch of readiness events is being handled: writes wait for its end.
    batching: bool,
    /// Connections with replies to write at the end of the batch.
    unflushed: Vec<usize>,
    /// Connections with publications to write after the commands.
    published: Vec<usize>,
}

impl<H: Handler> Running<'_, H> {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut commands = Vec::new();
        loop {
            let timeout = self.next_timeout();
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            let now = Instant::now();
            self.batching = true;
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    Token(key) => {
                        if event.is_writable() {
                            self.flush(key);
                        }
                        if event.is_read_closed() || event.is_error() {
                            if let Some(conn) = self.conns.get_mut(key) {
                                conn.peer_closed = true;
                            }
                        }
                        // Reading paused by backpressure resumes once replies drain.
                        let resume = self.conns.get(key).is_some_and(|conn| conn.more_to_read);
                        if resume
                            || event.is_readable()
                            || event.is_read_closed()
                            || event.is_error()
                        {
                            self.read(key, now);
                        }
                        self.settle(key, now);
                        if self.unflushed.len() >= BATCH_CONNECTIONS {
                            self.flush_batch(now);
                        }
                    }
                }
            }
            self.flush_batch(now);
            self.batching = false;
            self.worker.queue.take(&mut commands);
            for command in commands.drain(..) {
                match command {
                    Command::Publish(publication) => self.deliver(&publication),
                    command => {
                        self.settle_published(now);
                        self.command(command, now);
                    }
                }
            }
            self.settle_published(now);
            for key in std::mem::take(&mut self.ready) {
                self.read(key, now);
                self.settle(key, now);
            }
            self.fire_timers(now);
            if self.accept_retry.is_some_and(|at| at <= now) {
                self.accept_retry = None;
                self.accept(now);
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || deadline <= now {
                    return Ok(());
                }
            }
        }
    }

    fn next_timeout(&mut self) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        while let Some(Reverse((deadline, key, generation))) = self.timers.peek().copied() {
            let current = self.conns.get(key).is_some_and(|conn| {
                conn.generation == generation && conn.deadline == Some(deadline)
            });
            if current {
                break;
            }
            self.timers.pop();
        }
        let deadlines = [
            self.timers.peek().map(|Reverse((deadline, ..))| *deadline),
            self.accept_retry,
            self.shutdown_deadline,
        ];
        deadlines
            .into_iter()
            .flatten()
            .min()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    // ----- Accepting -----

    fn accept(&mut self, now: Instant) {
        while self.accepting && self.shutdown_deadline.is_none() {
            if self.shared.connections.load(Ordering::Relaxed) >= self.config.max_connections {
                // Wait in the backlog; a closing connection resumes accepting.
                self.pause_accepting();
                return;
            }
            match self.listener.accept() {
                Ok((stream, peer_addr)) => self.add(stream, peer_addr, now),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Out of file descriptors (or another transient failure): the pending
                    // connections stay in the backlog; try again shortly.
                    tracing::warn!(%error, "accept failed; retrying shortly");
                    self.accept_retry = Some(now + ACCEPT_RETRY_PAUSE);
                    return;
                }
            }
        }
    }

    fn pause_accepting(&mut self) {
        if self.accepting {
            self.accepting = false;
            // Deregistering fails only if the listener is already gone.
            let _ = self.poll.registry().deregister(&mut self.listener);
        }
    }

    fn resume_accepting(&mut self, now: Instant) {
        if self.accepting || self.shutdown_deadline.is_some() {
            return;
        }
        let registered =
            self.poll
                .registry()
                .register(&mut self.listener, LISTENER, Interest::READABLE);
        if registered.is_ok() {
            self.accepting = true;
            self.accept(now);
        }
    }

    fn add(&mut self, mut stream: TcpStream, peer_addr: SocketAddr, now: Instant) {
        if self.config.io.nodelay {
            // Only a latency optimization; the connection works without it.
            let _ = stream.set_nodelay(true);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(error) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%error, "cannot register a connection");
            return;
        }
        let stream = match Transport::accepted(stream, self.config) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot start a TLS session");
                return;
            }
        };
        self.next_generation = self.next_generation.wrapping_add(1);
        entry.insert(Conn {
            stream,
            core: proto::Connection::server(Arc::clone(&self.protocol), now),
            state: H::State::default(),
            generation: self.next_generation,
            peer_addr: Some(peer_addr),
            request: None,
            deadline: None,
            opened: false,
            shut_down: false,
            closed_at: None,
            broken: false,
            backlog: 0,
            received: 0,
            share: self.shared.budget.as_ref().map(Share::new),
            more_to_read: true,
            peer_closed: false,
            subscribed: Vec::new(),
            published: false,
            burst: server::Burst::default(),
        });
        self.shared.connections.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer_addr, "connection accepted");
        self.settle(key, now);
    }

    // ----- Reading and writing -----

    /// Reads a connection for one turn: until the socket is drained, the turn's budget is
    /// spent, or the connection's unwritten replies pass the high-water mark (a client that
    /// does not read its replies gets no more requests read until they drain).
    fn read(&mut self, key: usize, now: Instant) {
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.core.is_closed() || self.is_backpressured(key) {
                return;
            }
            let conn = &mut self.conns[key];
            match conn.stream.read(&mut self.buf) {
                Ok(0) => {
                    conn.core.handle_eof();
                    conn.more_to_read = false;
                    return;
                }
                Ok(n) => {
                    conn.core.handle_data(&self.buf[..n]);
                    // A short read drained the socket (but for the end of stream, if the peer
                    // closed, or what a TLS stream holds back for the next read);
                    // edge-triggered readiness reports the next bytes.
                    conn.more_to_read =
                        n == self.buf.len() || conn.peer_closed || conn.stream.input_pending();
                    let more_to_read = conn.more_to_read;
                    self.dispatch(key, now);
                    if !self.batching || self.conns[key].core.pending_send() > BATCH_FLUSH_BYTES {
                        self.flush(key);
                    }
                    if !more_to_read {
                        return;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    conn.more_to_read = false;
                    return;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::debug!(%error, "read failed");
                    conn.broken = true;
                    conn.more_to_read = false;
                    conn.core.handle_eof();
                    return;
                }
            }
        }
    }

    /// Writes the replies of the batch so far.
    fn flush_batch(&mut self, now: Instant) {
        self.batching = false;
        for key in std::mem::take(&mut self.unflushed) {
            self.settle(key, now);
        }
        self.batching = true;
    }

    fn is_backpressured(&self, key: usize) -> bool {
        self.conns
            .get(key)
            .is_some_and(|conn| conn.core.pending_send() > conn.mark(self.config))
    }

    fn flush(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn_flush(conn);
        }
    }

    // ----- Events, timers, commands -----

    /// Runs the handler on the connection's pending events, then tells the core they were
    /// handled (handlers run inline: their replies are queued), which may bring more: the
    /// answer to a close frame that came after them.
    fn dispatch(&mut self, key: usize, now: Instant) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.backlog = conn.core.pending_send();
            conn.received = 0;
        }
        loop {
            self.run_handler(key, now);
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            conn.core.acknowledge_events();
            if !conn.core.has_events() {
                return;
            }
        }
    }

    fn run_handler(&mut self, key: usize, now: Instant) {
        let handler = self.handler;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        while let Some(event) = conn.core.poll_event() {
            let outcome = match event {
                Event::Request(request) => {
                    let answer = server::answer_handshake(
                        &mut conn.core,
                        &request,
                        conn.peer_addr,
                        |request, response| handler.on_handshake(request, response),
                    );
                    // The core has just handed over the request, so it awaits the response.
                    if answer != Ok(Answer::Accepted) {
                        continue;
                    }
                    conn.request = Some(Box::new(request));
                    conn.core.handle_timeout(now);
                    conn.opened = true;
                    handler.on_open(&mut view(conn, key, &mut self.worker, self.config))
                }
                Event::Message(message) => {
                    conn.received += message.len();
                    handler.on_message(&mut view(conn, key, &mut self.worker, self.config), message)
                }
                Event::Fragment(fragment) => {
                    conn.received += fragment.data.len();
                    handler.on_message(
                        &mut view(conn, key, &mut self.worker, self.config),
                        fragment.data,
                    )
                }
                Event::Closed(closed) => {
                    tracing::info!(peer_addr = ?conn.peer_addr, %closed, "connection closed");
                    if conn.opened {
                        conn.opened = false;
                        handler
                            .on_close(&mut view(conn, key, &mut self.worker, self.config), &closed);
                    }
                    let local = local(key, conn);
                    self.worker
                        .subscriptions
                        .unsubscribe_all(local, &mut conn.subscribed);
                    Ok(())
                }
                Event::Response(_) | Event::Ping(_) | Event::Pong(_) => Ok(()),
            };
            if let Err(error) = outcome {
                if let Some(code) = server::handler_error_close(&error) {
                    conn.core.fail(code, "");
                }
            }
        }
    }

    /// After a connection's turn: run due timers, write, reschedule, and remove it if it is
    /// over.
    fn settle(&mut self, key: usize, now: Instant) {
        // A timer that is due now (a freshly started one is due at once) is handled here
        // rather than after another trip through the poll.
        for _ in 0..3 {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            match conn.core.poll_timeout() {
                Some(deadline) if deadline <= now => {
                    conn.core.handle_timeout(now);
                    self.dispatch(key, now);
                }
                _ => break,
            }
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if self.batching && !conn.core.send_buffer().is_empty() {
            // Written with the others after this batch of events.
            self.unflushed.push(key);
            return;
        }
        conn_flush(conn);
        if conn.core.has_events() {
            // The end of the stream, or a failed read or write, closed the connection: the
            // handler hears of it (`on_close`) before the connection goes.
            self.dispatch(key, now);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut deadline = conn.core.poll_timeout();
        if conn.core.is_closed() {
            // What is left is written within the close timeout: a peer that stopped reading
            // gets no more time than one that stopped answering.
            let closed_at = *conn.closed_at.get_or_insert(now);
            let linger_end = conn
                .core
                .config()
                .close_timeout
                .and_then(|timeout| closed_at.checked_add(timeout));
            if (conn.core.send_buffer().is_empty() && !conn.stream.holds_output())
                || conn.broken
                || linger_end.is_some_and(|end| end <= now)
            {
                return self.remove(key, now);
            }
            deadline = linger_end;
        }
        if deadline != conn.deadline {
            conn.deadline = deadline;
            if let Some(deadline) = deadline {
                self.timers.push(Reverse((deadline, key, conn.generation)));
            }
        }
        let pending = conn.core.pending_send();
        if let Some(share) = &mut conn.share {
            share.update(pending);
        }
        let backpressured = pending > conn.mark(self.config);
        if conn.more_to_read && !backpressured && !self.ready.contains(&key) {
            self.ready.push(key);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((deadline, key, generation))) = self.timers.peek().copied() {
            if deadline > now {
                return;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.generation != generation || conn.deadline != Some(deadline) {
                continue;
            }
            conn.deadline = None;
            conn.core.handle_timeout(now);
            self.dispatch(key, now);
            self.settle(key, now);
        }
    }

    fn command(&mut self, command: Command, now: Instant) {
        let (id, action) = match command {
            Command::Shutdown => return self.start_shutdown(now),
            Command::Publish(publication) => return self.deliver(&publication),
            Command::Send(id, message) => (id, Action::Send(message)),
            Command::SendPrepared(id, prepared) => (id, Action::SendPrepared(prepared)),
            Command::Close(id, code, reason) => (id, Action::Close(code, reason)),
        };
        let key = id.key as usize;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.generation != id.generation || id.worker != self.worker.index {
            return;
        }
        conn.backlog = conn.core.pending_send();
        conn.received = 0;
        let result = match action {
            Action::Send(message) => view(conn, key, &mut self.worker, self.config).send(message),
            Action::SendPrepared(prepared) => {
                view(conn, key, &mut self.worker, self.config).send_prepared(&prepared)
            }
            Action::Close(code, reason) => close_if_open(&mut conn.core, code, &reason)
                .map(drop)
                .map_err(Error::from),
        };
        if let Err(error) = result {
            tracing::debug!(%id, %error, "command for a connection failed");
        }
        self.dispatch(key, now);
        self.settle(key, now);
    }

    fn start_shutdown(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(now + self.config.shutdown_timeout);
        self.pause_accepting();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                if conn.core.state() == State::Connecting {
                    conn.core.fail(CloseCode::ABNORMAL, "");
                }
                // 1001 with a short reason may be sent.
                let _ = close_if_open(&mut conn.core, CloseCode::GOING_AWAY, SHUTDOWN_REASON);
            }
            self.dispatch(key, now);
            self.settle(key, now);
        }
    }

    /// Queues a publication for the loop's subscribers of its topic (each judged by the
    /// backpressure policy); they are written by [`settle_published`](Self::settle_published).
    fn deliver(&mut self, publication: &Publication) {
        self.worker
            .queue
            .publish_backlog
            .fetch_sub(publication.prepared.frame().len(), Ordering::AcqRel);
        let (mut delivered, mut dropped) = (0, 0);
        for local in self.worker.subscriptions.recipients(publication) {
            let key = local.key as usize;
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.generation != local.generation {
                continue;
            }
            let mark = conn.mark(self.config);
            if !conn.published {
                conn.published = true;
                self.published.push(key);
                if conn.core.pending_send() > mark {
                    conn_flush(conn);
                }
                conn.burst.update(conn.core.pending_send());
            }
            let open = conn.core.state() == State::Open;
            let queued = server::deliver_published(
                &mut conn.core,
                &publication.prepared,
                conn.burst.backlog(),
                mark,
                self.config.backpressure,
            );
            if queued {
                delivered += 1;
            } else if open {
                dropped += 1;
            }
        }
        publication.delivered(delivered);
        publication.dropped(dropped);
    }

    /// Writes what publications queued (each connection once, however many there were).
    fn settle_published(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.published) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.published = false;
            }
            self.dispatch(key, now);
            self.settle(key, now);
        }
    }

    fn remove(&mut self, key: usize, now: Instant) {
        let mut conn = self.conns.remove(key);
        let local = local(key, &conn);
        self.worker
            .subscriptions
            .unsubscribe_all(local, &mut conn.subscribed);
        if !conn.shut_down {
            // The peer may be gone already; the socket is closed on drop either way.
            conn.stream.shutdown();
        }
        // Deregistering fails only if the socket is already gone.
        let _ = self.poll.registry().deregister(conn.stream.socket_mut());
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(peer_addr = ?conn.peer_addr, "connection removed");
        self.resume_accepting(now);
    }

    /// Drops every connection left when the loop ends, telling handlers.
    fn drop_all(&mut self) {
        let now = Instant::now();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.core.handle_eof();
                conn.broken = true;
            }
            self.dispatch(key, now);
            self.remove(key, now);
        }
    }
}

impl<S> Conn<S> {
    /// The high-water mark that applies to this connection now (see [`budget`]).
    fn mark(&self, config: &ServerConfig) -> usize {
        budget::mark(self.share.as_ref(), config.io.send_high_water)
    }
}

enum Action {
    Send(crate::Message),
    SendPrepared(proto::PreparedMessage),
    Close(CloseCode, String),
}

/// A connection as its subscriptions name it.
fn local<S>(key: usize, conn: &Conn<S>) -> Local {
    Local {
        key: u32::try_from(key).unwrap_or(u32::MAX),
        generation: conn.generation,
    }
}

/// What a connection's view needs of its event loop.
struct Worker {
    index: u32,
    queue: Arc<WorkerQueue>,
    subscriptions: Subscriptions,
}

/// The handler's view of a connection.
fn view<'a, S>(
    conn: &'a mut Conn<S>,
    key: usize,
    worker: &'a mut Worker,
    config: &'a ServerConfig,
) -> Connection<'a, S> {
    let mark = conn.mark(config);
    Connection {
        core: &mut conn.core,
        state: &mut conn.state,
        id: ConnectionId {
            worker: worker.index,
            key: u32::try_from(key).unwrap_or(u32::MAX),
            generation: conn.generation,
        },
        peer_addr: conn.peer_addr,
        request: conn.request.as_deref(),
        queue: &worker.queue,
        config,
        subscriptions: &mut worker.subscriptions,
        subscribed: &mut conn.subscribed,
        mark,
        backlog: conn.backlog,
        received: conn.received,
    }
}

/// Writes what the socket takes without blocking; shuts the write half down when the core
/// asks.
fn conn_flush<S>(conn: &mut Conn<S>) {
    if conn.broken {
        return;
    }
    let flushed =
        crate::sync::flush_nonblocking(&mut conn.stream, &mut conn.core, &mut conn.shut_down);
    if let Err(error) = flushed {
        tracing::debug!(%error, "write failed");
        conn.broken = true;
        conn.core.handle_eof();
    }
}
