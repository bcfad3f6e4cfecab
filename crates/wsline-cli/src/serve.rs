//! `wsline serve`: the echo server, or with `--rooms` the rooms server.

use std::future::Future;
use std::sync::Arc;

use wsline::proto::{Request, Response};
use wsline::sync::server::{serve_with, Connection, Handler};
use wsline::tokio::{MaybeTlsStream, WebSocket};
use wsline::Message;

use crate::page::answer_plain_http;
use crate::settings::{Failure, ServeSettings};

/// The echo server of both layers: every message back as it came, and the echo test page
/// for a browser's plain `GET /`.
struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_handshake(&self, request: &Request, response: &mut Response) {
        answer_plain_http(request, response);
    }

    fn on_message(&self, conn: &mut Connection<'_, ()>, message: Message) -> wsline::Result<()> {
        echo(conn, message)
    }
}

impl wsline::tokio::Handler for Echo {
    fn on_handshake(&self, request: &Request, response: &mut Response) {
        answer_plain_http(request, response);
    }

    fn handle(
        self: Arc<Self>,
        ws: WebSocket<MaybeTlsStream>,
    ) -> impl Future<Output = wsline::Result<()>> + Send + 'static {
        echo_tokio(ws)
    }
}

/// The rooms server of both layers: a connection's path names its room, and what it
/// sends goes to everyone else there, on this node.
struct Rooms;

impl Handler for Rooms {
    type State = String;

    fn on_handshake(&self, request: &Request, response: &mut Response) {
        answer_plain_http(request, response);
    }

    fn on_open(&self, conn: &mut Connection<'_, String>) -> wsline::Result<()> {
        let room = room_of(conn.request());
        tracing::debug!(id = %conn.id(), %room, "joined");
        conn.subscribe(&room);
        *conn.state() = room;
        Ok(())
    }

    fn on_message(
        &self,
        conn: &mut Connection<'_, String>,
        message: Message,
    ) -> wsline::Result<()> {
        let room = conn.state().clone();
        conn.publish(&room, message);
        Ok(())
    }
}

impl wsline::tokio::Handler for Rooms {
    fn on_handshake(&self, request: &Request, response: &mut Response) {
        answer_plain_http(request, response);
    }

    fn handle(
        self: Arc<Self>,
        ws: WebSocket<MaybeTlsStream>,
    ) -> impl Future<Output = wsline::Result<()>> + Send + 'static {
        rooms_tokio(ws)
    }
}

/// The room a handshake asks for: its path without the query.
fn room_of(request: Option<&Request>) -> String {
    let path = request.map_or("/", |request| request.path.as_str());
    path.split_once('?')
        .map_or(path, |(path, _)| path)
        .to_owned()
}

/// Puts the connection in its room, and every message it sends to the others there.
async fn rooms_tokio(mut ws: WebSocket<MaybeTlsStream>) -> wsline::Result<()> {
    let room = room_of(ws.request());
    ws.subscribe(&room)?;
    while let Some(message) = ws.recv().await {
        ws.publish(&room, message?)?;
    }
    Ok(())
}

/// Echoes every message back as it came: text as text, binary as binary.
fn echo(conn: &mut Connection<'_, ()>, message: Message) -> wsline::Result<()> {
    tracing::debug!(id = %conn.id(), len = message.len(), preview = %preview(&message), "echo");
    conn.send(message)
}

/// The start of a message, for logs: text up to 60 characters, binary as its length.
fn preview(message: &Message) -> String {
    match message.as_text() {
        Some(text) if text.chars().count() > 60 => {
            format!("{}…", text.chars().take(60).collect::<String>())
        }
        _ => message.to_string(),
    }
}

/// Serves until SIGINT (Ctrl-C) or SIGTERM, then shuts down gracefully (close 1001, bounded
/// wait).
pub fn run(settings: &ServeSettings) -> Result<(), Failure> {
    if let Some(every) = settings.trim_memory {
        crate::memory::trim_periodically(every).map_err(wsline::Error::Io)?;
    }
    match (settings.tokio, settings.rooms) {
        (false, false) => serve_sync(Echo, settings),
        (false, true) => serve_sync(Rooms, settings),
        (true, false) => serve_tokio(Echo, settings),
        (true, true) => serve_tokio(Rooms, settings),
    }
}

/// The sync layer's server: the event loop.
fn serve_sync<H: Handler>(handler: H, settings: &ServeSettings) -> Result<(), Failure> {
    let server = serve_with(
        handler,
        (settings.host.as_str(), settings.port),
        settings.config.clone(),
    )?;
    // Announced once SIGINT and SIGTERM are handled: a script may send either as soon as it
    // reads this.
    server.shutdown_on_signal()?;
    println!(
        "Listening on {}://{}",
        settings.scheme(),
        server.local_addr()
    );
    server.serve_forever()?;
    Ok(())
}

/// The tokio layer's echo server: a current-thread runtime for one worker (a server pinned
/// to one core), a multi-thread runtime otherwise.
fn serve_tokio<H: wsline::tokio::Handler>(
    handler: H,
    settings: &ServeSettings,
) -> Result<(), Failure> {
    let workers = settings.config.workers.max(1);
    let mut runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = runtime.enable_all().build().map_err(wsline::Error::Io)?;
    runtime.block_on(async {
        let server = wsline::tokio::serve_with(
            handler,
            (settings.host.as_str(), settings.port),
            settings.config.clone(),
        )
        .await?;
        // Installed before the banner: a script may signal as soon as it reads it.
        server.shutdown_on_signal()?;
        println!(
            "Listening on {}://{}",
            settings.scheme(),
            server.local_addr()
        );
        server.serve_forever().await?;
        Ok(())
    })
}

/// Echoes every message back as it came; replies to a burst go out in one write.
async fn echo_tokio(mut ws: WebSocket<MaybeTlsStream>) -> wsline::Result<()> {
    while let Some(message) = ws.recv().await {
        let message = message?;
        tracing::debug!(len = message.len(), "echo");
        ws.feed(message).await?;
    }
    Ok(())
}
