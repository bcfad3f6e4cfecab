//! # wsline
//!
//! A WebSocket library (RFC 6455, RFC 7692) built in layers:
//!
//! - [`proto`]: the sans-I/O core. Frames, the opening handshake and the per-connection
//!   state machine: bytes in, events and bytes out. No sockets, threads or clocks.
//! - [`extension`]: the extension negotiation API, and permessage-deflate (feature
//!   `deflate`, on by default).
//! - `sync` (feature `sync`, on by default): an event-loop server with per-message
//!   callbacks, a thread-per-connection server, and a blocking client.
//! - `tokio` (feature `tokio`): `WebSocket<S>` over any async stream, a client and a server.
//! - `tls` (feature `rustls`): `wss://` for the sync and tokio clients.
//! - `topics` (with `sync` or `tokio`): publish once to every connection subscribed to a
//!   topic, on this node and, through a broker, on every node: Redis pub/sub (feature
//!   `redis`, `topics::RedisBroker`) or NATS (feature `nats`, `topics::NatsBroker`).
//!
//! The README's quick start shows each layer; its examples are compiled as doc-tests.
//!
//! ## The core in a few lines
//!
//! ```
//! use std::time::Instant;
//! use wsline::proto::{Connection, Event, Side, Transmit};
//! use wsline::Config;
//!
//! // A server connection whose handshake already happened, fed one masked frame.
//! let mut server = Connection::after_handshake(Side::Server, Config::default(), Instant::now());
//! server.handle_data(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"); // RFC 6455 §5.7
//! while let Some(event) = server.poll_event() {
//!     if let Event::Message(message) = event {
//!         server.send(message)?; // echo
//!     }
//! }
//! let expected = &b"\x81\x05Hello"[..];
//! assert_eq!(server.poll_transmit(), Some(Transmit::Bytes(expected.into())));
//! # Ok::<(), wsline::proto::SendError>(())
//! ```
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

/// The README's examples, compiled and run as doc-tests (they use every layer, so with
/// `--all-features`, as `scripts/test.sh` runs them).
#[cfg(all(
    doctest,
    feature = "sync",
    feature = "tokio",
    feature = "rustls",
    feature = "http",
    feature = "http2",
    feature = "axum"
))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "axum")]
pub mod axum;
mod error;
pub mod extension;
#[cfg(feature = "http")]
pub mod http;
#[cfg(any(feature = "sync", feature = "tokio"))]
mod layer;
mod layer_config;
pub mod proto;
#[cfg(any(feature = "sync", feature = "tokio"))]
mod proxy;
#[cfg(any(feature = "sync", feature = "tokio"))]
mod reconnect;
#[cfg(feature = "sync")]
pub mod sync;
#[cfg(feature = "rustls")]
pub mod tls;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(any(feature = "sync", feature = "tokio"))]
pub mod topics;
// The URI helpers the layers use (user info masked in logs, percent-decoding).
use proto::uri;

pub use error::{Error, ProxyError, Result};
pub use layer_config::{
    BackpressurePolicy, ConnectConfig, Http2Policy, IoConfig, ServerConfig,
    DEFAULT_MAX_PUBLISH_BACKLOG, DEFAULT_READ_BUFFER_SIZE, DEFAULT_SEND_BUDGET,
    DEFAULT_SEND_HIGH_WATER,
};
pub use proto::{CloseCode, Config, Message, Utf8Bytes};
pub use proto::{UriError, WsUri};
#[cfg(any(feature = "sync", feature = "tokio"))]
pub use reconnect::Backoff;

/// The protocol settings the I/O layers start from: [`Config::default`], plus
/// permessage-deflate once the `deflate` feature provides it.
fn default_protocol_config() -> Config {
    let config = Config::default();
    #[cfg(feature = "deflate")]
    let config = config.extension(std::sync::Arc::new(
        extension::deflate::PerMessageDeflate::default(),
    ));
    config
}
