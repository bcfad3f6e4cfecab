//! Peer fan-out server: `sockudo-ws` 3.1's pub/sub (`sockudo_ws::pubsub::PubSub`)
//! on a **current-thread** Tokio runtime (one thread, because the benchmark
//! pins the server to one core), HTTP/1.1 only.
//!
//! The room protocol of `bench/README.md`: the request path names the room;
//! every text or binary message a client sends goes to every *other* client
//! in that room, unchanged. Per connection, the shape of the crate's
//! `pubsub_echo` / `axum_pubsub_chat` examples: `create_subscriber` with an
//! unbounded channel, `subscribe` to the room, then one loop that `select!`s
//! between the WebSocket (a message → `publish_excluding` the sender, which
//! clones the `Bytes`-backed message into each other subscriber's channel)
//! and the channel (a message → the socket), `remove_subscriber` at the end.
//!
//! Two departures from the examples, both in sockudo-ws's favour: the
//! connection is not `split` (which starts a control task per connection;
//! the unified stream answers pings itself), and channel messages are
//! written with `feed` for everything already queued and one `flush`,
//! instead of a `send` (one write) per message. `Config::default()`: no
//! compression (not built in), 64 MiB messages.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use sockudo_ws::pubsub::{PubSub, SubscriberId};
use sockudo_ws::{Config, Http1, Message, WebSocketServer, WebSocketStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver};

/// Moves messages between one connection and its room until it closes.
async fn pump<S>(
    ws: &mut WebSocketStream<S>,
    inbox: &mut UnboundedReceiver<Message>,
    pubsub: &PubSub,
    id: SubscriberId,
    room: &str,
) -> sockudo_ws::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    pubsub.publish_excluding(id, room, message);
                }
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {} // Ping/Pong are handled by the stream.
                Some(Err(e)) => return Err(e),
            },
            Some(message) = inbox.recv() => {
                ws.feed(message).await?;
                while let Ok(message) = inbox.try_recv() {
                    ws.feed(message).await?;
                }
                ws.flush().await?;
            }
        }
    }
}

/// Upgrades one accepted socket, joins the room its path names and pumps.
async fn serve_socket(stream: TcpStream, server: WebSocketServer<Http1>, pubsub: Arc<PubSub>) {
    // All peer servers (and the load generators) disable Nagle.
    let _ = stream.set_nodelay(true);
    // Abrupt disconnects at the end of a run are expected: errors are not logged.
    let Ok((mut ws, handshake)) = server.accept(stream).await else {
        return;
    };
    let room = handshake.path;
    let (tx, mut inbox) = mpsc::unbounded_channel();
    let id = pubsub.create_subscriber(tx);
    pubsub.subscribe(id, &room);
    let _ = pump(&mut ws, &mut inbox, &pubsub, id, &room).await;
    pubsub.remove_subscriber(id);
}

/// Binds `127.0.0.1:PORT` and serves rooms on a single-threaded runtime.
fn main() {
    let addr = wsline_bench::listen_addr_from_args("fanout-sockudo-ws");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fanout-sockudo-ws: runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("fanout-sockudo-ws: bind {addr}: {e}");
                std::process::exit(1);
            }
        };
        eprintln!("fanout-sockudo-ws listening on {addr} (rooms by path, current_thread runtime)");
        let server = WebSocketServer::<Http1>::new(Config::default());
        let pubsub = Arc::new(PubSub::new());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_socket(stream, server.clone(), pubsub.clone()));
                }
                Err(e) => eprintln!("fanout-sockudo-ws: accept: {e}"),
            }
        }
    });
}
