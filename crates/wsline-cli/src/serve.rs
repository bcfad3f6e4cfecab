//! `wsline serve`: the echo server.

use wsline::sync::server::{serve_with, Connection};
use wsline::Message;

use crate::settings::{Failure, ServeSettings};

/// Echoes every message back as it came: text as text, binary as binary.
fn echo(conn: &mut Connection, message: Message) -> wsline::Result<()> {
    tracing::debug!(id = %conn.id(), len = message.len(), "echo");
    conn.send(message)
}

/// Serves until Ctrl-C, then shuts down gracefully (close 1001, bounded wait).
pub fn run(settings: &ServeSettings) -> Result<(), Failure> {
    if settings.tokio {
        return serve_tokio(settings);
    }
    let server = serve_with(
        echo,
        (settings.host.as_str(), settings.port),
        settings.config.clone(),
    )?;
    println!("Listening on ws://{}", server.local_addr());
    let handle = server.handle();
    ctrlc::set_handler(move || handle.shutdown())
        .map_err(|error| wsline::Error::Io(std::io::Error::other(error)))?;
    server.serve_forever()?;
    Ok(())
}

/// The tokio layer's echo server.
fn serve_tokio(_settings: &ServeSettings) -> Result<(), Failure> {
    Err(Failure(wsline::Error::Io(std::io::Error::other(
        "this build has no tokio layer",
    ))))
}
