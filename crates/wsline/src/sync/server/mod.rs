//! The blocking server: per-message callbacks on an event loop per core
//! ([`serve`]), or a thread per connection for code that wants to block
//! ([`serve_blocking`]).
//!
//! ```no_run
//! use wsline::sync::server::{serve, Connection};
//! use wsline::Message;
//!
//! fn on_message(conn: &mut Connection, msg: Message) -> wsline::Result<()> {
//!     println!("<<< {msg}");
//!     conn.send(msg) // echo: text stays text, binary stays binary
//! }
//!
//! fn main() -> wsline::Result<()> {
//!     let server = serve(on_message, "127.0.0.1", 8001)?;
//!     server.serve_forever()
//! }
//! ```

mod blocking;
mod event_loop;
mod signal;
mod subscriptions;

use std::fmt;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use mio::Waker;

pub use blocking::{serve_blocking, serve_blocking_on, BlockingHandler};

use crate::layer::budget::SendBudget;
use crate::layer::server::{apply_backpressure, judged_backlog};
use crate::proto::{
    self, CloseCode, ConnectionClosed, PreparedMessage, Request, Response, SendOptions,
};
use crate::topics::{Counted, Member, Publication, PublishOptions, SubscriberId, Topics};
use crate::{Error, Message, Result, ServerConfig};

use self::subscriptions::{Local, Subscriptions};

/// What a server does with its connections: the per-message callback, and optional hooks
/// for the handshake, the opening and the closing of each connection.
///
/// A plain function or closure `Fn(&mut Connection, Message) -> wsline::Result<()>` is a
/// handler. Implement the trait on a struct for the other hooks and for per-connection
/// [`State`](Handler::State): the struct holds what connections share (a chat room), each
/// connection its own state (a user name), and no global is needed.
///
/// Callbacks run on the event loop: they must not block (use
/// [`serve_blocking`] for code that does). An `Err` from a callback closes the connection
/// with 1011 (internal error) without sending details.
pub trait Handler: Send + Sync + 'static {
    /// Per-connection state, created with `Default` when the connection opens.
    type State: Default + Send + 'static;

    /// Inspects the handshake request and may alter the response before it is sent: add
    /// headers, or refuse by replacing it (e.g. with [`Response::text`]`(403, "…")`).
    fn on_handshake(&self, request: &Request, response: &mut Response) {
        let _ = (request, response);
    }

    /// Called once the connection is open.
    ///
    /// # Errors
    /// An error closes the connection with 1011.
    fn on_open(&self, conn: &mut Connection<'_, Self::State>) -> Result<()> {
        let _ = conn;
        Ok(())
    }

    /// Called for each message.
    ///
    /// # Errors
    /// An error closes the connection with 1011.
    fn on_message(&self, conn: &mut Connection<'_, Self::State>, message: Message) -> Result<()>;

    /// Called once when an open connection ends, with how it ended.
    fn on_close(&self, conn: &mut Connection<'_, Self::State>, closed: &ConnectionClosed) {
        let _ = (conn, closed);
    }
}

impl<F> Handler for F
where
    F: Fn(&mut Connection<'_, ()>, Message) -> Result<()> + Send + Sync + 'static,
{
    type State = ();

    fn on_message(&self, conn: &mut Connection<'_, ()>, message: Message) -> Result<()> {
        self(conn, message)
    }
}

/// Identifies a connection within its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    worker: u32,
    key: u32,
    generation: u32,
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.worker, self.key, self.generation)
    }
}

/// A connection as its handler sees it, during a callback.
pub struct Connection<'a, S = ()> {
    core: &'a mut proto::Connection,
    state: &'a mut S,
    id: ConnectionId,
    peer_addr: Option<SocketAddr>,
    request: Option<&'a Request>,
    queue: &'a Arc<WorkerQueue>,
    config: &'a ServerConfig,
    subscriptions: &'a mut Subscriptions,
    /// The topics this connection is subscribed to.
    subscribed: &'a mut Vec<Arc<str>>,
    /// The high-water mark that applies now: the configured one, or less past the
    /// server's send budget.
    mark: usize,
    /// Bytes the socket had not taken when this turn began.
    backlog: usize,
    /// Payload bytes of the messages this turn brought.
    received: usize,
}

impl<S> Connection<'_, S> {
    /// This connection's identifier.
    #[must_use]
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// The client's address.
    #[must_use]
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// The handshake request: path, query and headers (cookies, origin, authorization).
    #[must_use]
    pub fn request(&self) -> Option<&Request> {
        self.request
    }

    /// The subprotocol the handshake selected.
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        self.core.subprotocol()
    }

    /// The names of the extensions the handshake negotiated, such as `permessage-deflate`.
    pub fn extension_names(&self) -> impl Iterator<Item = &str> {
        self.core
            .extensions()
            .iter()
            .map(|extension| extension.name())
    }

    /// This connection's state.
    pub fn state(&mut self) -> &mut S {
        self.state
    }

    /// A handle to send to this connection from anywhere, later.
    #[must_use]
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle {
            id: self.id,
            queue: Arc::clone(self.queue),
        }
    }

    /// The server's topics ([`ServerConfig::topics`]): publish to any topic from here, or
    /// keep a clone to publish from elsewhere.
    #[must_use]
    pub fn topics(&self) -> &Topics {
        self.subscriptions.topics()
    }

    /// This connection as a subscriber, to leave it out of a publish
    /// ([`PublishOptions::exclude`]).
    #[must_use]
    pub fn subscriber_id(&self) -> SubscriberId {
        self.subscriptions.subscriber_id(self.local())
    }

    fn local(&self) -> Local {
        Local {
            key: self.id.key,
            generation: self.id.generation,
        }
    }

    /// Subscribes this connection to `topic`: from now on it gets what is published there
    /// (and what was published just before and is still on its way to this event loop),
    /// until it unsubscribes or closes. Returns `false` if it was subscribed already.
    pub fn subscribe(&mut self, topic: &str) -> bool {
        let local = self.local();
        self.subscriptions.subscribe(local, topic, self.subscribed)
    }

    /// Unsubscribes this connection from `topic`. Returns `false` if it was not subscribed.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        let local = self.local();
        self.subscriptions
            .unsubscribe(local, topic, self.subscribed)
    }

    /// The topics this connection is subscribed to.
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.subscribed.iter().map(|topic| &**topic)
    }

    /// Publishes `message` to every subscriber of `topic` but this connection (as
    /// [`Topics::publish_with`] with [`PublishOptions::exclude`]); returns the number of
    /// this node's subscribers of the topic.
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> usize {
        let options = PublishOptions {
            exclude: Some(self.subscriber_id()),
            ..PublishOptions::default()
        };
        self.topics().publish_with(topic, message, options)
    }

    /// Bytes queued for this connection and not yet written to the socket.
    #[must_use]
    pub fn pending_send(&self) -> usize {
        self.core.pending_send()
    }

    /// Sends a message; text stays text and binary stays binary. The bytes are written when
    /// the callback returns, with everything else it sent.
    ///
    /// # Errors
    /// [`Error::SendBufferFull`] past the high-water mark (with
    /// [`BackpressurePolicy::Close`](crate::BackpressurePolicy::Close) the connection is also
    /// failed with 1008), and
    /// [`Error::Send`] once the connection is closing.
    pub fn send(&mut self, message: impl Into<Message>) -> Result<()> {
        self.send_with(message.into(), SendOptions::default())
    }

    /// Sends a text message.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_text(&mut self, text: &str) -> Result<()> {
        self.check_high_water()?;
        Ok(self.core.send_text(text)?)
    }

    /// Sends a binary message.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<()> {
        self.check_high_water()?;
        Ok(self.core.send_binary(data)?)
    }

    /// Sends a message with per-message options (such as compression).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_with(&mut self, message: Message, options: SendOptions) -> Result<()> {
        self.check_high_water()?;
        Ok(self.core.send_with(message, options)?)
    }

    /// Sends a message encoded once for many connections (see [`broadcast`]).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<()> {
        self.check_high_water()?;
        Ok(self.core.send_prepared(prepared)?)
    }

    /// Sends a ping; its pong is handled by the server.
    ///
    /// # Errors
    /// As [`send`](Self::send), and for payloads over 125 bytes.
    pub fn ping(&mut self, payload: &[u8]) -> Result<()> {
        Ok(self.core.send_ping(payload)?)
    }

    /// Sends an unsolicited pong: a one-way heartbeat that expects no reply (RFC 6455 §5.5.3).
    ///
    /// # Errors
    /// As [`ping`](Self::ping).
    pub fn pong(&mut self, payload: &[u8]) -> Result<()> {
        Ok(self.core.send_pong(payload)?)
    }

    /// Starts the closing handshake.
    ///
    /// # Errors
    /// [`Error::Send`] for a code that may not be sent or a connection already closing.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        Ok(self.core.send_close(code, reason)?)
    }

    /// Applies the backpressure policy before a send, judging the peer as
    /// [`judged_backlog`] says: by what it had not taken when this turn began, unless the
    /// turn's own output floods past the mark.
    fn check_high_water(&mut self) -> Result<()> {
        let mark = self.mark;
        let core = &mut *self.core;
        let pending = core.pending_send();
        let max_message_size = core.config().max_message_size;
        let judged = judged_backlog(pending, self.backlog, self.received, mark, max_message_size);
        if judged <= mark {
            return Ok(());
        }
        // Past it: reported with what is queued now (never less than what was judged).
        apply_backpressure(self.config.backpressure, pending, mark, |code, reason| {
            core.fail(code, reason);
        })
    }
}

/// A command for a worker, from any thread.
enum Command {
    Send(ConnectionId, Message),
    SendPrepared(ConnectionId, PreparedMessage),
    Close(ConnectionId, CloseCode, String),
    Publish(Arc<Publication>),
    Shutdown,
}

/// The command queue of one event loop.
struct WorkerQueue {
    commands: Mutex<Vec<Command>>,
    waker: Waker,
    wake_pending: AtomicBool,
    /// Frame bytes of the publications in the queue.
    publish_backlog: AtomicUsize,
    /// [`ServerConfig::max_publish_backlog`].
    max_publish_backlog: usize,
}

/// The loop is the registry's member for all its connections: a publication is queued once
/// for the loop, which delivers it to its subscribers.
impl Member for WorkerQueue {
    fn deliver(&self, publication: &Arc<Publication>, subscribers: usize) -> Counted {
        let len = publication.prepared.frame().len();
        let backlog = self.publish_backlog.fetch_add(len, Ordering::AcqRel);
        if backlog.saturating_add(len) > self.max_publish_backlog {
            // The loop is this far behind: its subscribers miss this one.
            self.publish_backlog.fetch_sub(len, Ordering::AcqRel);
            return Counted {
                queued: 0,
                dropped: subscribers as u64,
            };
        }
        self.push(Command::Publish(Arc::clone(publication)));
        // The loop counts them as it delivers.
        Counted::default()
    }
}

impl WorkerQueue {
    fn push(&self, command: Command) {
        self.commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(command);
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // Fails only when the event loop is gone, and then there is nobody to wake.
            let _ = self.waker.wake();
        }
    }

    fn take(&self, into: &mut Vec<Command>) {
        self.wake_pending.store(false, Ordering::Release);
        std::mem::swap(
            &mut *self
                .commands
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            into,
        );
    }
}

/// A cloneable, thread-safe handle to one connection: send to it or close it from any
/// thread. Commands for a connection that has closed meanwhile are dropped.
#[derive(Clone)]
pub struct ConnectionHandle {
    id: ConnectionId,
    queue: Arc<WorkerQueue>,
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnectionHandle").field(&self.id).finish()
    }
}

impl PartialEq for ConnectionHandle {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ConnectionHandle {}

impl std::hash::Hash for ConnectionHandle {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl ConnectionHandle {
    /// The connection's identifier.
    #[must_use]
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// Queues a message for the connection.
    pub fn send(&self, message: impl Into<Message>) {
        self.queue.push(Command::Send(self.id, message.into()));
    }

    /// Queues a message encoded once for many connections.
    pub fn send_prepared(&self, prepared: &PreparedMessage) {
        self.queue
            .push(Command::SendPrepared(self.id, prepared.clone()));
    }

    /// Starts the closing handshake of the connection.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.queue
            .push(Command::Close(self.id, code, reason.to_owned()));
    }
}

/// Sends one message to many connections, encoding it once.
///
/// ```no_run
/// # fn room() -> Vec<wsline::sync::server::ConnectionHandle> { Vec::new() }
/// use wsline::sync::server::broadcast;
/// broadcast(&room(), "someone joined");
/// ```
pub fn broadcast<'a>(
    connections: impl IntoIterator<Item = &'a ConnectionHandle>,
    message: impl Into<Message>,
) {
    let prepared = PreparedMessage::new(message.into());
    for connection in connections {
        connection.send_prepared(&prepared);
    }
}

/// State shared by a server's threads and handles.
struct ServerShared {
    shutting_down: AtomicBool,
    connections: AtomicUsize,
    queues: Vec<Arc<WorkerQueue>>,
    /// Closers of the connections of a thread-per-connection server.
    blocking: blocking::Registry,
    /// The budget of queued output of the event-loop server's connections.
    budget: Option<Arc<SendBudget>>,
    topics: Topics,
}

impl ServerShared {
    fn shutdown(&self) {
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!("server shutting down");
        for queue in &self.queues {
            queue.push(Command::Shutdown);
        }
        self.blocking.shutdown();
    }
}

/// A running server. Its threads start with [`serve`]; [`Server::serve_forever`] waits for
/// them. Dropping the server shuts it down: it stops accepting, closes every connection with
/// 1001 (going away), and waits up to `shutdown_timeout` for the closing handshakes.
pub struct Server {
    shared: Arc<ServerShared>,
    threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field(
                "connections",
                &self.shared.connections.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// A cloneable handle to shut a server down from another thread (or a Ctrl-C handler).
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<ServerShared>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle").finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Starts a graceful shutdown; [`Server::serve_forever`] returns once it completes.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Connections open now.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The server's topics ([`ServerConfig::topics`]).
    #[must_use]
    pub fn topics(&self) -> &Topics {
        &self.shared.topics
    }
}

impl Server {
    /// The address the server listens on (useful with port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to shut the server down from another thread.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Connections open now.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The server's topics ([`ServerConfig::topics`]): publish to its connections from
    /// anywhere.
    #[must_use]
    pub fn topics(&self) -> &Topics {
        &self.shared.topics
    }

    /// Serves until the server is shut down (by a [`ServerHandle`], or a Ctrl-C handler that
    /// calls it), then returns once every connection is closed or the shutdown timed out.
    ///
    /// # Errors
    /// When a server thread panicked.
    pub fn serve_forever(mut self) -> Result<()> {
        self.join()
    }

    /// Shuts the server down gracefully, as [`shutdown`](Self::shutdown) does, when the
    /// process first gets SIGINT (Ctrl-C) or SIGTERM (how systemd, Docker and Kubernetes
    /// stop a service) — elsewhere than Unix, Ctrl-C. The handlers are in place when this
    /// returns, so announce the server after it: a supervisor may signal from then on.
    /// Other signals are left alone (`SIGHUP` stays ignored under `nohup`), and so are
    /// handlers the process installed before. A second signal during the shutdown is
    /// ignored; `shutdown_timeout` bounds it.
    ///
    /// ```no_run
    /// use wsline::sync::server::{serve, Connection};
    /// use wsline::Message;
    ///
    /// fn echo(conn: &mut Connection, message: Message) -> wsline::Result<()> {
    ///     conn.send(message)
    /// }
    ///
    /// let server = serve(echo, "127.0.0.1", 8001)?;
    /// server.shutdown_on_signal()?;
    /// println!("ready");
    /// server.serve_forever()?;
    /// # Ok::<(), wsline::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] when the signal handlers cannot be installed.
    pub fn shutdown_on_signal(&self) -> Result<()> {
        signal::shutdown_on_signal(self.handle())?;
        Ok(())
    }

    /// [`shutdown_on_signal`](Self::shutdown_on_signal), then
    /// [`serve_forever`](Self::serve_forever): serves until SIGINT or SIGTERM, and returns
    /// once the graceful shutdown completes.
    ///
    /// # Errors
    /// As [`shutdown_on_signal`](Self::shutdown_on_signal) (the server is then shut down),
    /// and as [`serve_forever`](Self::serve_forever).
    pub fn serve_until_signal(self) -> Result<()> {
        self.shutdown_on_signal()?;
        self.serve_forever()
    }

    fn join(&mut self) -> Result<()> {
        let mut panicked = false;
        for thread in self.threads.drain(..) {
            panicked |= thread.join().is_err();
        }
        if panicked {
            return Err(Error::Io(std::io::Error::other("a server thread panicked")));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.shutdown();
        // A panicked thread has nothing more to report at this point.
        let _ = self.join();
    }
}

/// Serves `handler` on `host:port` with the default [`ServerConfig`]; returns once the
/// server listens. Logs `Listening on ws://host:port`.
///
/// # Errors
/// When the address cannot be bound.
pub fn serve<H: Handler>(handler: H, host: &str, port: u16) -> Result<Server> {
    serve_with(handler, (host, port), ServerConfig::default())
}

/// Serves `handler` on `addr` with `config`.
///
/// # Errors
/// When the address cannot be bound.
pub fn serve_with<H: Handler>(
    handler: H,
    addr: impl ToSocketAddrs,
    config: ServerConfig,
) -> Result<Server> {
    let listener = TcpListener::bind(addr)?;
    serve_on(handler, listener, config)
}

/// Serves `handler` on a listener the caller bound (or inherited).
///
/// # Errors
/// When the listener cannot be made non-blocking or event-loop threads cannot start.
pub fn serve_on<H: Handler>(
    handler: H,
    listener: TcpListener,
    config: ServerConfig,
) -> Result<Server> {
    let local_addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let workers = config.workers.max(1);
    let mut loops = Vec::with_capacity(workers);
    let mut queues = Vec::with_capacity(workers);
    for index in 0..workers {
        let event_loop = event_loop::EventLoop::new(index, listener.try_clone()?, &config)?;
        queues.push(event_loop.queue());
        loops.push(event_loop);
    }
    let shared = Arc::new(ServerShared {
        shutting_down: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
        queues,
        blocking: blocking::Registry::default(),
        budget: config.send_budget.map(SendBudget::new),
        topics: config.topics.clone(),
    });
    let handler = Arc::new(handler);
    let config = Arc::new(config);
    let mut threads = Vec::with_capacity(workers);
    for event_loop in loops {
        let handler = Arc::clone(&handler);
        let config = Arc::clone(&config);
        let shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("wsline-loop-{}", threads.len()))
            .spawn(move || event_loop.run(&*handler, &config, &shared))?;
        threads.push(thread);
    }
    tracing::info!("Listening on {}://{local_addr}", config.scheme());
    Ok(Server {
        shared,
        threads,
        local_addr,
    })
}
