//! The thread-per-connection server: each handler owns a [`WebSocket`] and may block.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mio::{Events, Interest, Poll, Token, Waker};

use super::{Server, ServerShared};
use crate::layer::server::{self as layer, ACCEPT_RETRY_PAUSE, SHUTDOWN_REASON};
use crate::proto::{self, CloseCode, Request, Response};
use crate::sync::transport::Blocking;
use crate::sync::websocket::Closer;
use crate::sync::WebSocket;
use crate::{Result, ServerConfig};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// The open connections of a thread-per-connection server, to close them on shutdown.
#[derive(Default)]
pub(super) struct Registry {
    closers: Mutex<Vec<Closer>>,
    waker: Mutex<Option<Arc<Waker>>>,
}

impl Registry {
    fn insert(&self, closer: Closer) {
        let mut closers = self
            .closers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        closers.retain(|closer| !closer.is_gone());
        closers.push(closer);
    }

    /// Closes every connection with 1001 and wakes the accept loop so that it stops.
    pub(super) fn shutdown(&self) {
        let closers = self
            .closers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for closer in closers.iter() {
            closer.close(CloseCode::GOING_AWAY, SHUTDOWN_REASON);
        }
        drop(closers);
        if let Some(waker) = &*self
            .waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            // Fails only when the accept loop has already exited.
            let _ = waker.wake();
        }
    }
}

/// What a thread-per-connection server does with each connection: it owns the connection
/// for its lifetime, on a thread of its own, and may block.
///
/// A plain function or closure `Fn(&WebSocket) -> wsline::Result<()>` is a handler.
/// Implement the trait on a struct to share state between connections or to inspect the
/// handshake.
///
/// When [`handle`](BlockingHandler::handle) returns `Ok`, the connection is closed with
/// 1000; when it returns `Err`, with 1011 (internal error) without sending details.
pub trait BlockingHandler: Send + Sync + 'static {
    /// Inspects the handshake request and may alter the response before it is sent: add
    /// headers, or refuse by replacing it (e.g. with [`Response::text`]`(403, "…")`).
    fn on_handshake(&self, request: &Request, response: &mut Response) {
        let _ = (request, response);
    }

    /// Serves one open connection until it is done with it.
    ///
    /// # Errors
    /// An error closes the connection with 1011.
    fn handle(&self, ws: &WebSocket) -> Result<()>;
}

impl<F> BlockingHandler for F
where
    F: Fn(&WebSocket) -> Result<()> + Send + Sync + 'static,
{
    fn handle(&self, ws: &WebSocket) -> Result<()> {
        self(ws)
    }
}

/// Serves `handler` on `host:port`, one thread per connection, with the default
/// [`ServerConfig`] (see [`BlockingHandler`]).
///
/// ```no_run
/// use wsline::sync::server::serve_blocking;
/// use wsline::sync::WebSocket;
///
/// fn echo(ws: &WebSocket) -> wsline::Result<()> {
///     for message in ws {
///         ws.send(message?)?;
///     }
///     Ok(())
/// }
///
/// serve_blocking(echo, "127.0.0.1", 8001)?.serve_forever()?;
/// # Ok::<(), wsline::Error>(())
/// ```
///
/// # Errors
/// When the address cannot be bound.
pub fn serve_blocking<H: BlockingHandler>(handler: H, host: &str, port: u16) -> Result<Server> {
    let listener = TcpListener::bind((host, port))?;
    serve_blocking_on(handler, listener, ServerConfig::default())
}

/// Serves `handler` on a listener, one thread per connection, with `config`.
///
/// # Errors
/// When the listener cannot be made non-blocking or the accept thread cannot start.
pub fn serve_blocking_on<H: BlockingHandler>(
    handler: H,
    listener: TcpListener,
    config: ServerConfig,
) -> Result<Server> {
    let local_addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let shared = Arc::new(ServerShared {
        shutting_down: AtomicBool::new(false),
        connections: AtomicUsize::new(0),
        queues: Vec::new(),
        blocking: Registry::default(),
        // Each connection's thread blocks at its high-water mark instead.
        budget: None,
        topics: config.topics.clone(),
    });
    *shared
        .blocking
        .waker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(waker);
    let accept_shared = Arc::clone(&shared);
    let handler = Arc::new(handler);
    let scheme = config.scheme();
    let config = Arc::new(config);
    let thread = std::thread::Builder::new()
        .name("wsline-accept".into())
        .spawn(move || accept_loop(&listener, poll, &accept_shared, &handler, &config))?;
    tracing::info!("Listening on {scheme}://{local_addr}");
    Ok(Server {
        shared,
        threads: vec![thread],
        local_addr,
    })
}

fn accept_loop<H: BlockingHandler>(
    listener: &mio::net::TcpListener,
    mut poll: Poll,
    shared: &Arc<ServerShared>,
    handler: &Arc<H>,
    config: &Arc<ServerConfig>,
) {
    let mut events = Events::with_capacity(16);
    let mut workers = Vec::new();
    while !shared.shutting_down.load(Ordering::Acquire) {
        // The pause bounds how long a connection waits in the backlog after an accept error
        // or while `max_connections` are open: readiness will not report it again.
        if let Err(error) = poll.poll(&mut events, Some(ACCEPT_RETRY_PAUSE)) {
            if error.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(%error, "accept loop failed");
                break;
            }
        }
        workers.retain(|worker: &std::thread::JoinHandle<()>| !worker.is_finished());
        while shared.connections.load(Ordering::Relaxed) < config.max_connections {
            let Ok((stream, peer_addr)) = listener.accept() else {
                break;
            };
            shared.connections.fetch_add(1, Ordering::Relaxed);
            let (shared, handler, config) =
                (Arc::clone(shared), Arc::clone(handler), Arc::clone(config));
            let spawned = std::thread::Builder::new()
                .name(format!("wsline-conn-{peer_addr}"))
                .spawn(move || {
                    serve_connection(stream, peer_addr, &shared, &*handler, &config);
                    shared.connections.fetch_sub(1, Ordering::Relaxed);
                });
            match spawned {
                Ok(worker) => workers.push(worker),
                Err(error) => tracing::warn!(%error, "cannot start a connection thread"),
            }
        }
    }
    let deadline = Instant::now() + config.shutdown_timeout;
    for worker in workers {
        while !worker.is_finished() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if worker.is_finished() {
            // A handler panic has already been reported by the thread itself.
            let _ = worker.join();
        }
    }
}

fn serve_connection<H: BlockingHandler>(
    stream: mio::net::TcpStream,
    peer_addr: SocketAddr,
    shared: &ServerShared,
    handler: &H,
    config: &ServerConfig,
) {
    let accepted = Instant::now();
    let result = (|| -> Result<()> {
        let stream = std::net::TcpStream::from(stream);
        stream.set_nonblocking(false)?;
        stream.set_nodelay(config.io.nodelay)?;
        #[cfg(feature = "rustls")]
        if let Some(tls) = &config.tls {
            let session = rustls::ServerConnection::new(Arc::clone(tls))
                .map_err(|error| crate::Error::Tls(error.to_string()))?;
            let mut stream = crate::sync::transport::tls::Session::new(session, stream);
            stream.handshake(open_deadline(config, accepted))?;
            let ws = open(stream, peer_addr, handler, config, accepted)?;
            return run_handler(&ws, shared, handler);
        }
        let ws = open(stream, peer_addr, handler, config, accepted)?;
        run_handler(&ws, shared, handler)
    })();
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// When the open timeout of a connection accepted at `accepted` runs out: TLS and
/// WebSocket handshakes share it.
fn open_deadline(config: &ServerConfig, accepted: Instant) -> Option<Instant> {
    config
        .protocol
        .open_timeout
        .map(|timeout| accepted + timeout)
}

/// Runs the server's opening handshake on an accepted stream, with the handler's hook.
fn open(
    mut stream: impl Blocking,
    peer_addr: SocketAddr,
    handler: &impl BlockingHandler,
    config: &ServerConfig,
    accepted: Instant,
) -> Result<WebSocket> {
    let deadline = open_deadline(config, accepted);
    let conn = proto::Connection::server(config.protocol.clone(), accepted);
    let conn = crate::sync::open_blocking(
        &mut stream,
        conn,
        deadline,
        config.io.read_buffer_size,
        |conn, request| {
            // The core has just handed over the request, so it awaits the response; a
            // rejection closes the connection, which `open_blocking` reports.
            let _ =
                layer::answer_handshake(conn, &request, Some(peer_addr), |request, response| {
                    handler.on_handshake(request, response);
                });
        },
    )?;
    WebSocket::start(stream, conn, config.io.send_high_water)
}

/// Runs the handler on an open connection, then closes it.
fn run_handler(
    ws: &WebSocket,
    shared: &ServerShared,
    handler: &impl BlockingHandler,
) -> Result<()> {
    shared.blocking.insert(ws.closer());
    if shared.shutting_down.load(Ordering::Acquire) {
        ws.close(CloseCode::GOING_AWAY, SHUTDOWN_REASON)?;
    }
    match handler.handle(ws) {
        Ok(()) => ws.close(CloseCode::NORMAL, ""),
        Err(error) => match layer::handler_error_close(&error) {
            Some(code) => ws.close(code, ""),
            None => Ok(()),
        },
    }
}
