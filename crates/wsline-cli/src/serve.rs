//! `wsline serve`: the echo server.

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
    if settings.tokio {
        return serve_tokio(settings);
    }
    let server = serve_with(
        Echo,
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
fn serve_tokio(settings: &ServeSettings) -> Result<(), Failure> {
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
            Echo,
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
