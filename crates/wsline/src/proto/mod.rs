//! The sans-I/O core: everything RFC 6455 says about bytes on the wire, with no sockets,
//! threads, runtimes or clocks.
//!
//! A [`Connection`] takes bytes in ([`Connection::handle_data`]) and hands out events
//! ([`Connection::poll_event`]) and bytes to write ([`Connection::poll_transmit`]). Time
//! comes in as [`Connection::handle_timeout`]. The sync and tokio layers drive this one core.

mod config;
mod connection;
mod error;
mod event;
pub mod extension;
mod frame;
mod handshake;
mod message;
mod send_buffer;
pub(crate) mod uri;
mod utf8;

pub use config::{
    Config, DEFAULT_ACKNOWLEDGE_TIMEOUT, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEAD_SIZE,
    DEFAULT_MAX_LINE_LEN, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_RESPONSE_BODY,
};
pub use connection::{Connection, PreparedMessage, RandomSource, SendOptions, Transmit};
pub use error::{ProtocolError, SendError};
pub use event::{ConnectionClosed, Event, Failure, Fragment, Initiator, Side, State};
pub use frame::{
    apply_mask, apply_mask_scalar, CloseCode, CloseFrame, Frame, FrameHeader, Opcode, Rsv,
    MAX_CLOSE_REASON_LEN, MAX_CONTROL_PAYLOAD_LEN,
};
pub use handshake::{
    accept_key, is_token, negotiate, parse_extensions, parse_token_list, reason_phrase,
    HandshakeError, Headers, Negotiated, Rejected, Request, Response,
};
#[cfg(feature = "http2")]
pub(crate) use handshake::{build_extended_connect, check_response};
#[cfg(feature = "http")]
pub(crate) use handshake::{error_response, for_http2};
pub use message::{Message, Utf8Bytes};
pub use send_buffer::SendBuffer;
pub use uri::{UriError, WsUri};
