//! The server: [`serve`] a [`Handler`] on a port, or [`accept`] one connection on any stream.

use std::fmt;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ::tokio::io::{AsyncRead, AsyncWrite};
use ::tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use ::tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use ::tokio::task::{JoinError, JoinSet};
use ::tokio::time::Instant;

#[cfg(feature = "http2")]
mod http2;

use super::signal::{Listener, Signal};
use super::stream::MaybeTlsStream;
use super::websocket::{Limits, WebSocket};
use crate::layer::budget::{SendBudget, Share};
use crate::layer::server::{answer_handshake, handler_error_close, ACCEPT_RETRY_PAUSE};
use crate::proto::{CloseCode, Config, Connection, Request, Response};
use crate::{Error, Result, ServerConfig};

/// What a server does with each connection.
///
/// An `async fn(WebSocket<MaybeTlsStream>) -> wsline::Result<()>` (or a closure returning
/// such a future) is a handler: it owns the connection, in a task of its own, and runs inline with
/// its I/O — no channel between the socket and the handler. Implement the trait on a struct
/// to share state between connections (a chat room) or to inspect the handshake.
///
/// When the handler is done with the connection (it returned, and dropped the
/// `WebSocket`), the server takes the connection back and closes it, completing the closing
/// handshake within the configuration's `close_timeout`: with 1000 (normal closure) when
/// the handler returned `Ok`, 1001 (going away) while the server shuts down, and 1011
/// (internal error) with an empty reason when it returned an `Err` — the error is logged on
/// the server, and the peer learns no details of it. An `Err` that is the end of the
/// connection itself (it closed, or a send found the buffer full) sends nothing more. A
/// handler that panics gets 1011 too. Call [`WebSocket::close`] before returning for
/// another code or reason.
///
/// A connection the handler [`split`](WebSocket::split) goes back to the server once both
/// halves (and every clone of the writer's [`Sender`](super::Sender)) are dropped;
/// [`reunite`](super::ReadHalf::reunite)d, it is a whole `WebSocket` again. A connection
/// the handler passes to another task stays open, and counted, until that task drops it.
pub trait Handler: Send + Sync + 'static {
    /// Inspects the handshake request and may alter the response before it is sent: add
    /// headers, or refuse by replacing it (e.g. with [`Response::text`]`(403, "…")`).
    ///
    /// Over HTTP/2 (feature `http2`) the request is an extended CONNECT: method `CONNECT`,
    /// [`Request::protocol`] `Some("websocket")`, no `Upgrade` or `Sec-WebSocket-Key`; the
    /// response that accepts it is a 200, not a 101 (RFC 8441). A panic here fails that one
    /// request (500), not the connection's other WebSockets.
    fn on_handshake(&self, request: &Request, response: &mut Response) {
        let _ = (request, response);
    }

    /// Serves one open connection until it is done with it.
    fn handle(
        self: Arc<Self>,
        ws: WebSocket<MaybeTlsStream>,
    ) -> impl Future<Output = Result<()>> + Send + 'static;
}

impl<F, Fut> Handler for F
where
    F: Fn(WebSocket<MaybeTlsStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    fn handle(
        self: Arc<Self>,
        ws: WebSocket<MaybeTlsStream>,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        (*self)(ws)
    }
}

/// Runs the server's side of the opening handshake on `stream` with the default
/// [`ServerConfig`].
///
/// # Errors
/// As [`accept_with_hook`].
pub async fn accept<S>(stream: S) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(stream, &ServerConfig::default()).await
}

/// Runs the server's side of the opening handshake on `stream` with `config`.
///
/// # Errors
/// As [`accept_with_hook`].
pub async fn accept_with<S>(stream: S, config: &ServerConfig) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with_hook(stream, config, |_, _| {}).await
}

/// Runs the server's side of the opening handshake on `stream`: reads the request, checks
/// it (RFC 6455 §4.2.1), lets `on_handshake` inspect it and alter or replace the response,
/// and sends the response.
///
/// # Errors
/// [`Error::Handshake`] when the request is invalid (the client got the matching HTTP
/// error: 400, 405, 426, 431, …) or `on_handshake` refused it, [`Error::Timeout`] past the
/// open timeout, [`Error::Io`] when the stream fails.
pub async fn accept_with_hook<S, F>(
    stream: S,
    config: &ServerConfig,
    on_handshake: F,
) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request, &mut Response),
{
    let conn = Connection::server(config.protocol.clone(), Instant::now().into_std());
    server_handshake(
        WebSocket::new(stream, conn, Limits::from(config)),
        None,
        on_handshake,
    )
    .await
}

/// Reads the request from the client at `peer` (when known), answers it, and writes the
/// answer.
async fn server_handshake<S, F>(
    mut ws: WebSocket<S>,
    peer: Option<SocketAddr>,
    on_handshake: F,
) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request, &mut Response),
{
    ws.handshake_until(|ws| ws.request().is_some()).await?;
    let Some(request) = ws.take_request() else {
        return Err(ws.closed_error());
    };
    answer_handshake(ws.conn_mut(), &request, peer, on_handshake)?;
    ws.set_request(request);
    ws.flush().await?;
    if ws.is_closed() {
        return Err(ws.closed_error());
    }
    Ok(ws)
}

/// What the server's tasks share.
struct ServerShared {
    shutdown: Arc<Signal>,
    connections: AtomicUsize,
    /// One per open connection (`max_connections`): a TCP connection, or a WebSocket on
    /// an HTTP/2 connection.
    permits: Arc<Semaphore>,
    finished: watch::Receiver<bool>,
    topics: crate::topics::Topics,
}

impl ServerShared {
    fn shutdown(&self) {
        if self.shutdown.raise() {
            tracing::info!("server shutting down");
        }
    }

    /// Waits until the accept loop has finished the shutdown.
    async fn finished(&self) -> Result<()> {
        let mut finished = self.finished.clone();
        let done = finished.wait_for(|done| *done).await.is_ok();
        if done {
            Ok(())
        } else {
            Err(Error::Io(std::io::Error::other("the server task failed")))
        }
    }
}

/// Settings every connection of a server uses, built once.
struct Settings {
    protocol: Arc<Config>,
    limits: Limits,
    nodelay: bool,
    shutdown_timeout: Duration,
    budget: Option<Arc<SendBudget>>,
    topics: crate::topics::Topics,
    #[cfg(feature = "rustls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Whether WebSockets over HTTP/2 are served (feature `http2`).
    #[cfg(feature = "http2")]
    http2: bool,
    /// Most WebSocket streams at once on one HTTP/2 connection.
    #[cfg(feature = "http2")]
    http2_max_streams: u32,
}

/// The TLS acceptor of `config`; with HTTP/2 served, the ALPN list offers `h2` first unless
/// the configuration has its own.
#[cfg(feature = "rustls")]
fn tls_acceptor(config: &ServerConfig) -> Option<tokio_rustls::TlsAcceptor> {
    let tls = config.tls.clone()?;
    #[cfg(feature = "http2")]
    let tls = if config.http2 && tls.alpn_protocols.is_empty() {
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(tls)
    } else {
        tls
    };
    Some(tokio_rustls::TlsAcceptor::from(tls))
}

/// A running server: its accept loop runs in a task from [`serve`] on.
///
/// ```no_run
/// use wsline::tokio::{serve, MaybeTlsStream, WebSocket};
///
/// async fn echo(mut ws: WebSocket<MaybeTlsStream>) -> wsline::Result<()> {
///     while let Some(message) = ws.recv().await {
///         ws.send(message?).await?;
///     }
///     Ok(())
/// }
///
/// # #[tokio::main]
/// # async fn main() -> wsline::Result<()> {
/// let server = serve(echo, "127.0.0.1", 8001).await?;
/// tokio::select! {
///     result = server.serve_forever() => result?,
///     _ = tokio::signal::ctrl_c() => server.shutdown().await?,
/// }
/// # Ok(())
/// # }
/// ```
///
/// Shutting down stops accepting, closes every connection with 1001 (going away), waits up
/// to `shutdown_timeout` for the closing handshakes, then drops what is left. Dropping the
/// `Server` starts a shutdown too.
pub struct Server {
    shared: Arc<ServerShared>,
    local_addr: SocketAddr,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The address the server listens on (useful with port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to shut the server down from elsewhere.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Connections open now (including those still in their opening handshake).
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The server's topics ([`ServerConfig::topics`]): publish to its connections from
    /// anywhere.
    #[must_use]
    pub fn topics(&self) -> &crate::topics::Topics {
        &self.shared.topics
    }

    /// Shuts the server down gracefully and waits until it is done (at most about
    /// `shutdown_timeout`).
    ///
    /// # Errors
    /// When the server's task panicked.
    pub async fn shutdown(&self) -> Result<()> {
        self.shared.shutdown();
        self.shared.finished().await
    }

    /// Waits until the server has been shut down (by a [`ServerHandle`], or a signal handler
    /// that calls it) and its connections are closed.
    ///
    /// Cancel-safe: the server keeps running when this future is dropped.
    ///
    /// # Errors
    /// When the server's task panicked.
    pub async fn serve_forever(&self) -> Result<()> {
        self.shared.finished().await
    }

    /// Serves until the process gets SIGINT (Ctrl-C) or SIGTERM (how systemd, Docker and
    /// Kubernetes stop a service) — on other platforms, Ctrl-C — then shuts down gracefully
    /// as [`shutdown`](Self::shutdown) does and returns once it completes.
    ///
    /// ```no_run
    /// use wsline::tokio::{serve, MaybeTlsStream, WebSocket};
    ///
    /// async fn echo(mut ws: WebSocket<MaybeTlsStream>) -> wsline::Result<()> {
    ///     while let Some(message) = ws.recv().await {
    ///         ws.send(message?).await?;
    ///     }
    ///     Ok(())
    /// }
    ///
    /// # #[tokio::main]
    /// # async fn main() -> wsline::Result<()> {
    /// serve(echo, "127.0.0.1", 8001).await?.serve_until_signal().await
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] when the signal handlers cannot be installed; else as
    /// [`serve_forever`](Self::serve_forever).
    pub async fn serve_until_signal(&self) -> Result<()> {
        self.shutdown_on_signal()?;
        self.serve_forever().await
    }

    /// Shuts the server down gracefully, as [`shutdown`](Self::shutdown) does, when the
    /// process first gets SIGINT (Ctrl-C) or SIGTERM — elsewhere than Unix, Ctrl-C — from a
    /// task of its own. The handlers are in place when this returns (on Unix), so announce
    /// the server after it: a supervisor may signal from then on.
    ///
    /// # Errors
    /// [`Error::Io`] when the signal handlers cannot be installed.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn shutdown_on_signal(&self) -> Result<()> {
        let signal = shutdown_signal()?;
        let handle = self.handle();
        ::tokio::spawn(async move {
            signal.await;
            handle.shutdown();
        });
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

/// Installs handlers for SIGINT (Ctrl-C) and SIGTERM (how systemd, Docker and Kubernetes
/// stop a service) and returns a future that resolves when either arrives — on other
/// platforms, on Ctrl-C. For a server of the application's own (an axum app, say), or a
/// `tokio::select!` beside [`Server::serve_forever`]. The handlers are in place when this
/// returns (on Unix), so a supervisor may signal as soon as the server says it is ready.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> wsline::Result<()> {
/// # let handler = |_: wsline::tokio::WebSocket<wsline::tokio::MaybeTlsStream>| async { Ok(()) };
/// let server = wsline::tokio::serve(handler, "127.0.0.1", 8001).await?;
/// let signal = wsline::tokio::shutdown_signal()?;
/// println!("ready"); // a supervisor may signal from here on
/// signal.await;
/// server.shutdown().await
/// # }
/// ```
///
/// # Errors
/// [`Error::Io`] when the signal handlers cannot be installed.
///
/// # Panics
/// Outside a tokio runtime.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use ::tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            ::tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if let Err(error) = ::tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        })
    }
}

/// A cloneable handle on a [`Server`], for shutting it down from another task, and for
/// handlers that want to notice the shutdown in their own `tokio::select!` loops.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<ServerShared>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Starts a graceful shutdown without waiting for it.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Whether a shutdown has started.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.is_raised()
    }

    /// Resolves once a shutdown has started: a signal for `tokio::select!`. Connections
    /// get their 1001 close frame without it; it is for handlers with other work to stop.
    ///
    /// Cancel-safe.
    pub async fn shutting_down(&self) {
        self.shared.shutdown.raised().await;
    }

    /// Connections open now.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The server's topics ([`ServerConfig::topics`]).
    #[must_use]
    pub fn topics(&self) -> &crate::topics::Topics {
        &self.shared.topics
    }
}

/// Serves `handler` on `host:port` with the default [`ServerConfig`]; returns once the
/// server listens. Logs `Listening on ws://host:port`.
///
/// # Errors
/// When the address cannot be resolved or bound.
///
/// # Panics
/// Outside a tokio runtime.
pub async fn serve<H: Handler>(handler: H, host: &str, port: u16) -> Result<Server> {
    serve_with(handler, (host, port), ServerConfig::default()).await
}

/// Serves `handler` on `addr` with `config`.
///
/// # Errors
/// When the address cannot be resolved or bound.
///
/// # Panics
/// Outside a tokio runtime.
pub async fn serve_with<H: Handler>(
    handler: H,
    addr: impl ToSocketAddrs,
    config: ServerConfig,
) -> Result<Server> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(handler, listener, config)
}

/// Serves `handler` on a listener the caller bound (or inherited).
///
/// # Errors
/// When the listener's address cannot be read.
///
/// # Panics
/// Outside a tokio runtime.
pub fn serve_on<H: Handler>(
    handler: H,
    listener: TcpListener,
    config: ServerConfig,
) -> Result<Server> {
    let local_addr = listener.local_addr()?;
    let scheme = config.scheme();
    let (finished_tx, finished) = watch::channel(false);
    let max_connections = config.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let shared = Arc::new(ServerShared {
        shutdown: Arc::new(Signal::default()),
        connections: AtomicUsize::new(0),
        permits: Arc::new(Semaphore::new(max_connections)),
        finished,
        topics: config.topics.clone(),
    });
    let settings = Arc::new(Settings {
        limits: Limits::from(&config),
        nodelay: config.io.nodelay,
        shutdown_timeout: config.shutdown_timeout,
        budget: config.send_budget.map(SendBudget::new),
        topics: config.topics.clone(),
        #[cfg(feature = "rustls")]
        tls: tls_acceptor(&config),
        #[cfg(feature = "http2")]
        http2: config.http2,
        #[cfg(feature = "http2")]
        http2_max_streams: config.http2_max_streams.max(1),
        protocol: Arc::new(config.protocol),
    });
    tracing::info!("Listening on {}://{local_addr}", scheme);
    ::tokio::spawn(accept_loop(
        listener,
        Arc::new(handler),
        settings,
        Arc::clone(&shared),
        finished_tx,
    ));
    Ok(Server { shared, local_addr })
}

/// Accepts connections until the shutdown signal, then closes them gracefully.
async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: Arc<Settings>,
    shared: Arc<ServerShared>,
    finished: watch::Sender<bool>,
) {
    let mut tasks = JoinSet::new();
    let permits = Arc::clone(&shared.permits);
    loop {
        // Further clients wait in the listen backlog while max_connections are open.
        let permit = ::tokio::select! {
            biased;
            () = shared.shutdown.raised() => break,
            Some(result) = tasks.join_next() => {
                report(result);
                continue;
            }
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = ::tokio::select! {
            biased;
            () = shared.shutdown.raised() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tasks.spawn(connection(
                    stream,
                    peer,
                    Arc::clone(&handler),
                    Arc::clone(&settings),
                    Arc::clone(&shared),
                    permit,
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed; retrying shortly");
                ::tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
    drop(listener);
    // Every connection saw the signal and is closing with 1001.
    let drained = ::tokio::time::timeout(settings.shutdown_timeout, async {
        while let Some(result) = tasks.join_next().await {
            report(result);
        }
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            remaining = tasks.len(),
            "shutdown timeout passed; dropping connections"
        );
        tasks.shutdown().await;
    }
    finished.send_replace(true);
}

/// The close code for how a handler ended: `done` (1000, or 1001 while shutting down) when
/// it returned `Ok` or its error was the end of the connection itself (`ended`: the stream
/// failed or the connection closed, and nothing can be sent any more), the handler-error
/// policy's code otherwise, 1011 for a panic.
fn close_code(
    outcome: &std::thread::Result<Result<()>>,
    ended: bool,
    done: CloseCode,
    peer: SocketAddr,
) -> CloseCode {
    match outcome {
        Ok(Ok(())) => done,
        Ok(Err(error)) if ended => {
            tracing::debug!(%peer, %error, "handler ended with its connection");
            done
        }
        Ok(Err(error)) => tracing::info_span!("connection", %peer)
            .in_scope(|| handler_error_close(error))
            .unwrap_or(done),
        // The panic is reported with the task's.
        Err(_) => CloseCode::INTERNAL_ERROR,
    }
}

/// Logs a connection task that panicked.
pub(super) fn report(result: std::result::Result<(), JoinError>) {
    if let Err(error) = result {
        if error.is_panic() {
            tracing::error!(%error, "connection task panicked");
        }
    }
}

/// Counts a connection for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TLS handshake, within the open timeout counted from `accepted`, when the server has
/// TLS.
#[cfg(feature = "rustls")]
async fn secure(
    stream: TcpStream,
    settings: &Settings,
    accepted: Instant,
) -> Result<MaybeTlsStream> {
    let Some(acceptor) = &settings.tls else {
        return Ok(MaybeTlsStream::Tcp(stream));
    };
    let accept = acceptor.accept(stream);
    let outcome = match settings.protocol.open_timeout {
        Some(timeout) => ::tokio::time::timeout_at(accepted + timeout, accept)
            .await
            .map_err(|_| Error::Timeout(crate::proto::Failure::OpenTimeout))?,
        None => accept.await,
    };
    let stream = outcome.map_err(crate::tls::io_error)?;
    Ok(MaybeTlsStream::Tls(Box::new(stream.into())))
}

#[cfg(not(feature = "rustls"))]
async fn secure(stream: TcpStream, _: &Settings, _: Instant) -> Result<MaybeTlsStream> {
    Ok(MaybeTlsStream::Tcp(stream))
}

/// One connection's task: the TLS and opening handshakes, then the handler.
async fn connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    settings: Arc<Settings>,
    shared: Arc<ServerShared>,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let _counted = Counted::new(&shared.connections);
    if settings.nodelay {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
    }
    // One open timeout from here covers the TLS and the WebSocket handshakes.
    let accepted = Instant::now();
    let stream = match secure(stream, &settings, accepted).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
    };
    #[cfg(feature = "http2")]
    let (stream, received) = match http2::detect(stream, &settings, accepted).await {
        Ok(http2::Detected::Http2(stream, received)) => {
            let shared = Arc::clone(&shared);
            // Boxed: h2's connection is large, and every HTTP/1.1 connection's task would
            // carry room for it.
            let serve = Box::pin(http2::serve(
                stream, received, accepted, peer, handler, settings, shared,
            ));
            return serve.await;
        }
        Ok(http2::Detected::Http1(stream, received)) => (stream, received),
        Err(error) => {
            tracing::debug!(%peer, %error, "connection ended before its first bytes");
            return;
        }
    };
    let conn = Connection::server(Arc::clone(&settings.protocol), accepted.into_std());
    let mut ws = WebSocket::new(stream, conn, settings.limits);
    #[cfg(feature = "http2")]
    {
        ws.received(&received);
        drop(received);
    }
    prepare(&mut ws, &settings, &shared);
    let hook = |request: &Request, response: &mut Response| {
        handler.on_handshake(request, response);
    };
    let ws = match server_handshake(ws, Some(peer), hook).await {
        Ok(ws) => ws,
        Err(error) => {
            tracing::debug!(%peer, %error, "handshake failed");
            return;
        }
    };
    run_handler(ws, peer, &handler, &shared).await;
}

/// Makes `ws` one of the server's connections: told of its shutdown, counted against its
/// send budget.
fn prepare(ws: &mut WebSocket<MaybeTlsStream>, settings: &Settings, shared: &ServerShared) {
    ws.set_going_away(Listener::new(Arc::clone(&shared.shutdown)));
    if let Some(budget) = &settings.budget {
        ws.set_budget_share(Share::new(budget));
    }
    ws.set_topics(settings.topics.clone());
}

/// Runs the handler on an open connection, then takes the connection back and closes it
/// with the code for how the handler ended.
async fn run_handler<H: Handler>(
    mut ws: WebSocket<MaybeTlsStream>,
    peer: SocketAddr,
    handler: &Arc<H>,
    shared: &ServerShared,
) {
    let (hand_back, returned) = oneshot::channel();
    ws.set_hand_back(hand_back);
    let outcome = {
        let mut handling = pin!(Arc::clone(handler).handle(ws));
        // A panic is caught only to close the connection with 1011 (the handler's future is
        // dropped, and never polled again), then resumed.
        poll_fn(|cx| {
            panic::catch_unwind(AssertUnwindSafe(|| handling.as_mut().poll(cx)))
                .map_or_else(|panic| Poll::Ready(Err(panic)), |poll| poll.map(Ok))
        })
        .await
    };
    let done = if shared.shutdown.is_raised() {
        CloseCode::GOING_AWAY
    } else {
        CloseCode::NORMAL
    };
    // The connection comes back once the handler, or whatever task it gave the connection
    // to, drops it. A sender gone without it means the connection ended elsewhere.
    match returned.await {
        Ok(mut ws) => {
            let code = close_code(&outcome, ws.is_closed(), done, peer);
            // Every code above may be sent; closing a connection that is closing already
            // waits for the end of the closing handshake.
            if let Err(error) = ws.close(code, "").await {
                tracing::debug!(%peer, %error, "the closing handshake did not complete");
            }
        }
        // Nothing to close: the connection ended elsewhere.
        Err(_) => {
            close_code(&outcome, true, done, peer);
        }
    }
    if let Err(panic) = outcome {
        panic::resume_unwind(panic);
    }
}
