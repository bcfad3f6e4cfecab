//! Chat rooms in an axum app: `GET /rooms/{name}` (or HTTP/2 CONNECT) joins room `name`,
//! the first text message is the member's name, every later one goes to everyone else in
//! the room. wsline's extractor does the handshake, with permessage-deflate negotiated.
//!
//! Each room is a topic of one [`Topics`]: a publish never waits for a member, and a member
//! that reads too slowly misses messages (counted in the topic's stats) rather than stall
//! the room or grow the server's memory. Give the `Topics` a broker
//! (`Topics::with_broker`) and the rooms span every node of the app.
//!
//! ```text
//! cargo run --features axum --example axum_chat
//! wsline connect ws://127.0.0.1:8003/rooms/lobby     # in two or more terminals
//! ```

use axum::extract::{Path, State};
use axum::routing::any;
use axum::Router;
use wsline::axum::{WebSocket, WebSocketUpgrade};
use wsline::topics::Topics;
use wsline::Message;

/// The longest name kept, in characters.
const MAX_NAME_CHARS: usize = 32;

async fn join_room(
    upgrade: WebSocketUpgrade,
    Path(room): Path<String>,
    State(topics): State<Topics>,
) -> axum::response::Response {
    upgrade.on_upgrade(move |ws| async move {
        if let Err(error) = chat(ws.with_topics(&topics), &room).await {
            tracing::debug!(%error, "member left");
        }
    })
}

/// One member: the first text is the name, then each text goes to the others in the room
/// while theirs come in (queued by the room's topic while this awaits `recv`).
async fn chat(mut ws: WebSocket, room: &str) -> wsline::Result<()> {
    let Some(Ok(Message::Text(name))) = ws.recv().await else {
        return Ok(());
    };
    let name: String = name.chars().take(MAX_NAME_CHARS).collect();
    ws.subscribe(room)?;
    ws.publish(room, format!("{name} joined {room}"))?;
    while let Some(message) = ws.recv().await {
        if let Message::Text(text) = message? {
            ws.publish(room, format!("{name}: {text}"))?;
        }
    }
    ws.publish(room, format!("{name} left"))?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/rooms/{room}", any(join_room))
        .with_state(Topics::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8003").await?;
    println!("chat on ws://{}/rooms/NAME", listener.local_addr()?);
    axum::serve(listener, app).await
}
