//! The seed's echo server: every message comes back as it was sent.
//!
//! ```text
//! cargo run --example echo_server
//! ```
use wsline::sync::server::{serve, Connection};
use wsline::Message;

fn on_message(conn: &mut Connection, msg: Message) -> wsline::Result<()> {
    println!("<<< {msg}");
    conn.send(msg.clone())?;
    println!(">>> {msg}");
    Ok(())
}

fn main() -> wsline::Result<()> {
    let server = serve(on_message, "127.0.0.1", 8001)?;
    // Ctrl-C or SIGTERM: every connection is closed with 1001, then serve_forever returns.
    server.shutdown_on_signal()?;
    println!("Listening on ws://{}", server.local_addr());
    server.serve_forever()
}
