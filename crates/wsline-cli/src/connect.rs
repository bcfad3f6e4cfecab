//! `wsline connect`: the interactive client.

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::Arc;

use wsline::sync::client::connect_with;
use wsline::{CloseCode, Error, Message};

use crate::settings::{ConnectSettings, Failure};

/// Sends stdin's lines as text and prints what comes back, until stdin ends (then closes
/// with 1000) or the server closes.
pub fn run(settings: &ConnectSettings) -> Result<(), Failure> {
    let ws = Arc::new(connect_with(&settings.url, settings.config.clone())?);
    let interactive = io::stdin().is_terminal();
    if interactive {
        eprintln!("Connected to {}.", settings.url);
    }
    let reader = {
        let ws = Arc::clone(&ws);
        std::thread::spawn(move || print_incoming(&ws, interactive))
    };
    for line in io::stdin().lock().lines() {
        let line = line.map_err(Error::Io)?;
        if let Err(error) = ws.send_text(&line) {
            if error.is_closed() {
                break;
            }
            return Err(error.into());
        }
    }
    ws.close(CloseCode::NORMAL, "")?;
    let outcome = reader.join().unwrap_or(Ok(()));
    if let Some(closed) = ws.close_status() {
        if interactive {
            eprintln!("Connection closed: {closed}.");
        }
    }
    outcome
}

/// Prints messages until the connection closes; a closure other than 1000/1001 is an error.
fn print_incoming(ws: &wsline::sync::WebSocket, interactive: bool) -> Result<(), Failure> {
    let mut stdout = io::stdout();
    loop {
        let message = match ws.recv() {
            Ok(message) => message,
            Err(Error::ConnectionClosed(closed))
                if matches!(closed.code(), CloseCode::NORMAL | CloseCode::GOING_AWAY) =>
            {
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        let marker = if interactive { "< " } else { "" };
        // A closed stdout (a pipe to `head`) is not this program's failure.
        let _ = match &message {
            Message::Text(text) => writeln!(stdout, "{marker}{text}"),
            Message::Binary(data) => writeln!(stdout, "{marker}(binary) {}", hex(data)),
        };
        let _ = stdout.flush();
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|byte| format!("{byte:02x}")).collect()
}
