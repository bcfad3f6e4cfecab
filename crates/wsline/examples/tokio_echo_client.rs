//! The echo client on the tokio layer: sends "Hello, world!" (or the first argument) to the
//! echo server and prints the reply.
//!
//! ```text
//! cargo run --features tokio --example tokio_echo_client -- "Hi there"
//! ```
use wsline::tokio::connect;
use wsline::{CloseCode, Error};

#[tokio::main]
async fn main() -> wsline::Result<()> {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Hello, world!".to_owned());
    let mut ws = connect("ws://127.0.0.1:8001").await?;
    ws.send(text.as_str()).await?;
    println!(">>> {text}");
    match ws.recv().await {
        Some(reply) => println!("<<< {}", reply?),
        None => return Err(Error::Io(std::io::Error::other("the server closed first"))),
    }
    ws.close(CloseCode::NORMAL, "bye").await
}
