//! The async layer on tokio (feature `tokio`): a server, a client, and a [`WebSocket`] over
//! any `AsyncRead + AsyncWrite + Unpin` stream, all driving the sans-I/O
//! [`Connection`](crate::proto::Connection).
//!
//! # Server
//!
//! ```no_run
//! use wsline::tokio::{serve, MaybeTlsStream, WebSocket};
//!
//! async fn echo(mut ws: WebSocket<MaybeTlsStream>) -> wsline::Result<()> {
//!     while let Some(message) = ws.recv().await {
//!         ws.send(message?).await?; // text stays text, binary stays binary
//!     }
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> wsline::Result<()> {
//!     let server = serve(echo, "127.0.0.1", 8001).await?;
//!     tokio::select! {
//!         result = server.serve_forever() => result,
//!         _ = tokio::signal::ctrl_c() => server.shutdown().await,
//!     }
//! }
//! ```
//!
//! Each connection runs its [`Handler`] in a task of its own, inline with the connection's
//! I/O: a message goes from the socket to the handler and back without a channel. When the
//! handler is done, the server closes the connection and completes the closing handshake:
//! 1000 after `Ok`, 1011 with no details after an `Err` (which it logs). Shutting
//! down ([`Server::shutdown`], [`ServerHandle::shutdown`], or dropping the [`Server`]) stops
//! accepting, closes every connection with 1001, and waits up to
//! [`ServerConfig::shutdown_timeout`](crate::ServerConfig::shutdown_timeout). Use
//! [`serve_on`] for a listener you bound yourself, and [`accept`] for one connection on any
//! stream.
//!
//! # Client
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> wsline::Result<()> {
//! let mut ws = wsline::tokio::connect("ws://127.0.0.1:8001").await?;
//! ws.send("Hello!").await?;
//! while let Some(message) = ws.recv().await {
//!     println!(">>> {}", message?);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`connect_with`] takes a [`ConnectConfig`](crate::ConnectConfig) (limits, timeouts,
//! keepalive, `Origin`, headers, subprotocols, TLS for `wss://` with the `rustls` feature,
//! an HTTP proxy, how many redirects to follow); [`reconnecting`] connects again and again
//! with backoff; [`connect_on`] runs the handshake over a stream you opened.
//!
//! # Who answers pings
//!
//! A [`WebSocket`] has no task of its own: it answers pings and close frames, sends
//! keepalive pings and enforces timeouts inside whichever method the application awaits —
//! [`recv`](WebSocket::recv), [`send`](WebSocket::send), [`flush`](WebSocket::flush),
//! [`close`](WebSocket::close). A client that only listens therefore answers pings, and the
//! fast path (one task per connection, handler inline) costs no channel hop.
//!
//! # Split connections
//!
//! [`WebSocket::split`] hands the connection to a driver task and returns a [`ReadHalf`] and
//! a [`WriteHalf`] for two tasks; [`WriteHalf::sender`] gives cloneable [`Sender`]s for
//! more. The driver keeps the protocol alive whether or not the application reads or
//! writes. Its queues are bounded: unread messages (past the limit it stops reading the
//! socket) and bytes to write (past the high-water mark, senders wait).
//! [`ReadHalf::reunite`] gives the [`WebSocket`] back.
//!
//! A send reports what became of its message: [`Sender::send`] returns once the driver has
//! queued it on the connection, or with the error the connection refused it with (a round
//! trip to the driver per message); [`Sender::feed`], [`Sender::try_send`] and the `Sink`
//! impl, which do not wait for that and so send bursts faster, report a refusal with the
//! sender's next call. Under [`BackpressurePolicy::Close`](crate::BackpressurePolicy::Close)
//! a `try_send` past the high-water mark fails the connection with 1008 at once.
//!
//! # Fragments
//!
//! With [`Config::deliver_fragments`](crate::proto::Config::deliver_fragments),
//! [`WebSocket::recv_fragment`] and [`ReadHalf::recv_fragment`] give each frame of a
//! fragmented message as a [`Fragment`](crate::proto::Fragment) with its `first` and `fin`
//! flags (without it, each whole message as one fragment); `recv` gives each frame as a
//! plain message.
//!
//! # Runtime
//!
//! Any tokio runtime, current-thread or multi-thread, with I/O and time enabled
//! (`#[tokio::main]` and `Builder::enable_all` do): timeouts and keepalive run on
//! `tokio::time`. [`serve`] and [`WebSocket::split`] spawn tasks.
//!
//! # Cancel safety
//!
//! Receiving ([`WebSocket::recv`], [`ReadHalf::recv`], the `Stream` impls) is cancel-safe:
//! use it in `tokio::select!` without losing messages. Each method documents its own
//! guarantee.

mod client;
#[cfg(feature = "http2")]
mod http2;
mod server;
mod signal;
mod split;
mod stream;
mod websocket;

pub use client::{connect, connect_on, connect_with, reconnecting, Reconnect};
#[cfg(feature = "http2")]
pub use http2::Http2Connection;
pub use server::{
    accept, accept_with, accept_with_hook, serve, serve_on, serve_with, shutdown_signal, Handler,
    Server, ServerHandle,
};
pub use split::{ReadHalf, ReuniteError, Sender, WriteHalf};
#[cfg(feature = "http2")]
pub use stream::Http2Stream;
pub use stream::MaybeTlsStream;
pub use websocket::{WebSocket, DEFAULT_MAX_UNREAD_BYTES, DEFAULT_MAX_UNREAD_MESSAGES};
