//! `wsline serve`: the echo server.

use wsline::sync::server::{serve_with, Connection};
use wsline::tokio::{MaybeTlsStream, WebSocket};
use wsline::Message;

use crate::settings::{Failure, ServeSettings};

/// Echoes every message back as it came: text as text, binary as binary.
fn echo(conn: &mut Connection, message: Message) -> wsline::Result<()> {
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
        echo,
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
            echo_tokio,
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
