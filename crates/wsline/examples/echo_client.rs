//! The seed's echo client: sends "Hello, world!" (or the first argument) to the echo server
//! and prints the reply.
//!
//! ```text
//! cargo run --example echo_client -- "Hi there"
//! ```
use wsline::sync::client::connect;
use wsline::CloseCode;

fn main() -> wsline::Result<()> {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Hello, world!".to_owned());
    let ws = connect("ws://127.0.0.1:8001")?;
    ws.send_text(&text)?;
    println!(">>> {text}");
    let reply = ws.recv_text()?;
    println!("<<< {reply}");
    ws.close(CloseCode::NORMAL, "bye")
}
