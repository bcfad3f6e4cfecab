//! The thread-per-connection server: each handler owns a [`WebSocket`] and may block.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mio::{Events, Interest, Poll, Token, Waker};

use super::{Server, ServerShared};
use crate::proto::{self, CloseCode};
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
            closer.close(CloseCode::GOING_AWAY, "server shutting down");
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

/// Serves `handler` on `host:port`, one thread per connection, with the default
/// [`ServerConfig`]. The handler owns the connection for its lifetime and may block; when
/// it returns `Ok`, the connection is closed with 1000, when it returns `Err`, with 1011.
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
pub fn serve_blocking<F>(handler: F, host: &str, port: u16) -> Result<Server>
where
    F: Fn(&WebSocket) -> Result<()> + Send + Sync + 'static,
{
    let listener = TcpListener::bind((host, port))?;
    serve_blocking_on(handler, listener, ServerConfig::default())
}

/// Serves `handler` on a listener, one thread per connection, with `config`.
///
/// # Errors
/// When the listener cannot be made non-blocking or the accept thread cannot start.
pub fn serve_blocking_on<F>(
    handler: F,
    listener: TcpListener,
    config: ServerConfig,
) -> Result<Server>
where
    F: Fn(&WebSocket) -> Result<()> + Send + Sync + 'static,
{
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

fn accept_loop<F>(
    listener: &mio::net::TcpListener,
    mut poll: Poll,
    shared: &Arc<ServerShared>,
    handler: &Arc<F>,
    config: &Arc<ServerConfig>,
) where
    F: Fn(&WebSocket) -> Result<()> + Send + Sync + 'static,
{
    let mut events = Events::with_capacity(16);
    let mut workers = Vec::new();
    while !shared.shutting_down.load(Ordering::Acquire) {
        if let Err(error) = poll.poll(&mut events, Some(std::time::Duration::from_millis(100))) {
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
                    serve_connection(stream, &shared, &*handler, &config);
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

fn serve_connection<F>(
    stream: mio::net::TcpStream,
    shared: &ServerShared,
    handler: &F,
    config: &ServerConfig,
) where
    F: Fn(&WebSocket) -> Result<()>,
{
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
            let ws = open(stream, config, accepted)?;
            return run_handler(&ws, shared, handler);
        }
        let ws = open(stream, config, accepted)?;
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

/// Runs the server's opening handshake on an accepted stream.
fn open(mut stream: impl Blocking, config: &ServerConfig, accepted: Instant) -> Result<WebSocket> {
    let deadline = open_deadline(config, accepted);
    let conn = proto::Connection::server(config.protocol.clone(), accepted);
    let conn = crate::sync::open_blocking(
        &mut stream,
        conn,
        deadline,
        config.io.read_buffer_size,
        |conn, request| {
            // The core is waiting for exactly this response, so neither call can fail.
            if let Ok(response) = conn.accept(&request) {
                let _ = conn.send_response(response);
            }
        },
    )?;
    WebSocket::start(stream, conn, config.io.send_high_water)
}

/// Runs the handler on an open connection, then closes it.
fn run_handler<F>(ws: &WebSocket, shared: &ServerShared, handler: &F) -> Result<()>
where
    F: Fn(&WebSocket) -> Result<()>,
{
    shared.blocking.insert(ws.closer());
    if shared.shutting_down.load(Ordering::Acquire) {
        ws.close(CloseCode::GOING_AWAY, "server shutting down")?;
    }
    match handler(ws) {
        Ok(()) => ws.close(CloseCode::NORMAL, ""),
        Err(error) if error.is_closed() => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "handler failed; closing the connection with 1011");
            ws.close(CloseCode::INTERNAL_ERROR, "")
        }
    }
}
