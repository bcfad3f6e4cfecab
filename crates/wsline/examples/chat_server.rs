//! A chat room on the sync event-loop server, without globals: the handler holds the room
//! (a handle to every member), each connection holds its member's name, and every line a
//! member sends is broadcast to the room, encoded once.
//!
//! ```text
//! cargo run --example chat_server
//! wsline connect ws://127.0.0.1:8002     # in two or more terminals; the first line is your name
//! ```

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use wsline::proto::ConnectionClosed;
use wsline::sync::server::{broadcast, serve, Connection, ConnectionHandle, ConnectionId, Handler};
use wsline::Message;

/// The longest name kept, in characters.
const MAX_NAME_CHARS: usize = 32;

/// The room: a handle to every member who has given a name.
#[derive(Default)]
struct Chat {
    members: Mutex<HashMap<ConnectionId, ConnectionHandle>>,
}

/// One connection's state: its member's name, once given.
#[derive(Default)]
struct Member {
    name: Option<String>,
}

impl Chat {
    /// Sends `text` to every member.
    fn announce(&self, text: &str) {
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        broadcast(members.values(), text);
    }
}

impl Handler for Chat {
    type State = Member;

    fn on_open(&self, conn: &mut Connection<'_, Member>) -> wsline::Result<()> {
        conn.send_text("Welcome! What is your name?")
    }

    fn on_message(
        &self,
        conn: &mut Connection<'_, Member>,
        message: Message,
    ) -> wsline::Result<()> {
        let Some(text) = message.as_text().map(str::trim) else {
            return conn.send_text("Text only, please.");
        };
        if let Some(name) = &conn.state().name {
            self.announce(&format!("{name}: {text}"));
            return Ok(());
        }
        let name: String = text.chars().take(MAX_NAME_CHARS).collect();
        if name.is_empty() {
            return conn.send_text("Your name, please?");
        }
        conn.state().name = Some(name.clone());
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(conn.id(), conn.handle());
        self.announce(&format!("* {name} joined"));
        Ok(())
    }

    fn on_close(&self, conn: &mut Connection<'_, Member>, _closed: &ConnectionClosed) {
        let Some(name) = conn.state().name.take() else {
            return;
        };
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&conn.id());
        self.announce(&format!("* {name} left"));
    }
}

fn main() -> wsline::Result<()> {
    let server = serve(Chat::default(), "127.0.0.1", 8002)?;
    server.shutdown_on_signal()?;
    println!("Chat on ws://{}", server.local_addr());
    server.serve_forever()
}
