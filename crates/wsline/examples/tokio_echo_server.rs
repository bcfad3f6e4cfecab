//! The echo server on the tokio layer, on 127.0.0.1:8001: prints what it receives and sends
//! it back. Ctrl-C shuts it down gracefully (every client gets 1001).
//!
//! ```text
//! cargo run --features tokio --example tokio_echo_server
//! ```
use wsline::tokio::{serve, MaybeTlsStream, WebSocket};

/// Echoes every message back as it came: text as text, binary as binary.
async fn echo(mut ws: WebSocket<MaybeTlsStream>) -> wsline::Result<()> {
    while let Some(message) = ws.recv().await {
        let message = message?;
        println!("<<< {message}");
        ws.send(message).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> wsline::Result<()> {
    let server = serve(echo, "127.0.0.1", 8001).await?;
    // Ctrl-C or SIGTERM: every connection is closed with 1001, then serve_forever returns.
    server.shutdown_on_signal()?;
    println!("Listening on ws://{}", server.local_addr());
    server.serve_forever().await
}
