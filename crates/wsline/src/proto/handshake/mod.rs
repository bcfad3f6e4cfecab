//! The opening handshake (RFC 6455 §4): HTTP heads, header grammar, and the checks each side
//! makes. [`Connection`](crate::proto::Connection) drives these; the functions here are pure.

mod client;
mod headers;
mod http;
mod server;

use thiserror::Error;

#[cfg(feature = "http2")]
pub(crate) use client::{build_extended_connect, NegotiatedClient};
pub(crate) use client::{build_request, check_response, generate_key};
pub use headers::{accept_key, is_token, parse_extensions, parse_token_list};
pub(crate) use http::{parse_request, parse_response, HeadLimits, HeadScanner};
pub use http::{reason_phrase, Headers, Request, Response};
#[cfg(feature = "http")]
pub(crate) use server::for_http2;
pub(crate) use server::{
    accept_response, check_request, error_response, reject_response, NegotiatedServer,
};
pub use server::{negotiate, Negotiated, Rejected};

use crate::proto::extension::NegotiationError;

/// Why an opening handshake failed.
///
/// On a server, [`HandshakeError::status`] is the HTTP status of the response that reports
/// it (RFC 6455 §4.2.1 and RFC 9110). The `Display` text is for people, not part of the API.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The HTTP head could not be parsed.
    #[error("malformed HTTP head: {0}")]
    InvalidHttp(String),
    /// The server closed the connection before its response was complete (a server at its
    /// connection limit, or restarting, may do that).
    #[error("connection closed during the handshake")]
    ClosedEarly,
    /// The request line was longer than `Config::max_line_len`.
    #[error("request line longer than {limit} bytes")]
    RequestLineTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// A header line was longer than `Config::max_line_len`.
    #[error("header line longer than {limit} bytes")]
    HeaderLineTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// The head had more than `Config::max_headers` fields.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// The head was larger than `Config::max_head_size`.
    #[error("HTTP head larger than {limit} bytes")]
    HeadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The HTTP version was not 1.1.
    #[error("HTTP version not supported")]
    UnsupportedHttpVersion,
    /// The request method was not GET.
    #[error("method {0} not allowed")]
    MethodNotAllowed(String),
    /// A required header was missing.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header had an invalid value (or was repeated where only one is allowed).
    #[error("invalid {name} header: {value:?}")]
    InvalidHeader {
        /// The header name.
        name: &'static str,
        /// The offending value.
        value: String,
    },
    /// `Sec-WebSocket-Version` was not 13.
    #[error("unsupported WebSocket version {0:?}")]
    UnsupportedVersion(String),
    /// The server answered with something else than 101; the response is kept whole.
    #[error("server rejected the handshake with HTTP {} {}", .0.status, .0.reason)]
    Rejected(Box<Response>),
    /// The server's `Sec-WebSocket-Accept` did not match the key.
    #[error("Sec-WebSocket-Accept does not match the key")]
    InvalidAccept,
    /// The server chose a subprotocol the client did not offer, or several.
    #[error("unexpected subprotocol {0:?}")]
    InvalidSubprotocol(String),
    /// Extension negotiation failed.
    #[error(transparent)]
    Negotiation(#[from] NegotiationError),
    /// The server application refused the request (set by [`Connection::reject`]).
    ///
    /// [`Connection::reject`]: crate::proto::Connection::reject
    #[error("rejected with HTTP {status}: {reason}")]
    RejectedByServer {
        /// The status sent.
        status: u16,
        /// The text sent.
        reason: String,
    },
}

impl HandshakeError {
    /// The HTTP status a server answers this error with; `None` for errors only a client
    /// sees.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            Self::InvalidHttp(_)
            | Self::MissingHeader(_)
            | Self::InvalidHeader { .. }
            | Self::InvalidSubprotocol(_)
            | Self::Negotiation(_) => 400,
            Self::MethodNotAllowed(_) => 405,
            Self::RequestLineTooLong { .. } => 414,
            Self::UnsupportedVersion(_) => 426,
            Self::HeaderLineTooLong { .. }
            | Self::TooManyHeaders { .. }
            | Self::HeadTooLarge { .. } => 431,
            Self::UnsupportedHttpVersion => 505,
            Self::RejectedByServer { status, .. } => *status,
            Self::Rejected(_) | Self::InvalidAccept | Self::ClosedEarly => return None,
        })
    }
}
