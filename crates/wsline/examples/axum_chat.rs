//! Chat rooms in an axum app: `GET /rooms/{name}` (or HTTP/2 CONNECT) joins room `name`,
//! the first text message is the member's name, every later one goes to everyone in the
//! room. wsline's extractor does the handshake, with permessage-deflate negotiated.
//!
//! Each room is a `tokio::sync::broadcast` channel: a publish never waits for a member, and a
//! member that falls more than [`ROOM_BACKLOG`] messages behind skips them (and is told how
//! many), so one slow client cannot stall a room or grow the server's memory.
//!
//! ```text
//! cargo run --features axum --example axum_chat
//! wsline connect ws://127.0.0.1:8003/rooms/lobby     # in two or more terminals
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, State};
use axum::routing::any;
use axum::Router;
use tokio::sync::broadcast;
use wsline::axum::{WebSocket, WebSocketUpgrade};
use wsline::Message;

/// How many messages a room holds for members that have not read them yet.
const ROOM_BACKLOG: usize = 256;
/// The longest name kept, in characters.
const MAX_NAME_CHARS: usize = 32;

/// Every room by name: the sending end of its channel.
#[derive(Clone, Default)]
struct Rooms(Arc<Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>>);

impl Rooms {
    /// Joins the room `name`, created on first use: its sender, and this member's inbox
    /// (subscribed under the lock, so that a member leaving meanwhile cannot remove the
    /// room between the two).
    fn join(&self, name: &str) -> (broadcast::Sender<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let mut rooms = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = rooms
            .entry(name.to_owned())
            .or_insert_with(|| broadcast::channel(ROOM_BACKLOG).0);
        (room.clone(), room.subscribe())
    }

    /// Forgets the room `name` once nobody is in it.
    fn leave(&self, name: &str) {
        let mut rooms = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if rooms
            .get(name)
            .is_some_and(|room| room.receiver_count() == 0)
        {
            rooms.remove(name);
        }
    }
}

async fn join_room(
    upgrade: WebSocketUpgrade,
    Path(room): Path<String>,
    State(rooms): State<Rooms>,
) -> axum::response::Response {
    upgrade.on_upgrade(move |ws| async move {
        chat(ws, &rooms, &room).await;
        rooms.leave(&room);
    })
}

/// One member: the first text is the name, then each text goes to the room while the
/// room's messages come back.
async fn chat(mut ws: WebSocket, rooms: &Rooms, room_name: &str) {
    let Some(Ok(Message::Text(name))) = ws.recv().await else {
        return;
    };
    let name: String = name.chars().take(MAX_NAME_CHARS).collect();
    let (room, mut inbox) = rooms.join(room_name);
    let _ = room.send(format!("{name} joined {room_name}").into());
    loop {
        tokio::select! {
            incoming = ws.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let _ = room.send(format!("{name}: {text}").into());
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            published = inbox.recv() => match published {
                Ok(line) => {
                    if ws.send(&*line).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    let note = format!("({skipped} messages skipped: you read too slowly)");
                    if ws.send(note).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    drop(inbox);
    let _ = room.send(format!("{name} left").into());
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/rooms/{room}", any(join_room))
        .with_state(Rooms::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8003").await?;
    println!("chat on ws://{}/rooms/NAME", listener.local_addr()?);
    axum::serve(listener, app).await
}
