//! The error type of the I/O layers.

use std::io;

use thiserror::Error;

use crate::proto::{ConnectionClosed, Failure, HandshakeError, ProtocolError, SendError};
use crate::UriError;

/// Why an HTTP proxy did not open a tunnel (see `ConnectConfig::proxy`).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy answered `CONNECT` with a status other than 2xx (407: credentials
    /// missing or wrong).
    #[error("the proxy refused the tunnel: HTTP {status} {reason}")]
    Refused {
        /// The status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The proxy answered with something that is not a valid response head, or too large a
    /// one, or sent data before the tunnel's peer spoke.
    #[error("invalid answer from the proxy: {0}")]
    InvalidResponse(String),
    /// The proxy closed the connection before answering.
    #[error("the proxy closed the connection before answering")]
    ClosedEarly,
    /// The proxy could not be reached, or the connection to it failed.
    #[error("proxy {proxy}: {error}")]
    Unreachable {
        /// The proxy's `host:port`.
        proxy: String,
        /// What failed.
        error: io::Error,
    },
}

/// Everything that can go wrong on a connection driven by the sync or tokio layer.
///
/// Match on the variant, not on the text: `Display` is for people.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed (connection refused, reset, …).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The URI is not a valid `ws://` or `wss://` URI.
    #[error(transparent)]
    Uri(#[from] UriError),
    /// The opening handshake failed; [`HandshakeError::Rejected`] keeps the server's
    /// response (status, headers, body).
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The peer broke the protocol; the connection was failed with the error's close code.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The connection is closed: the close frames sent and received say how.
    #[error("connection closed: {0}")]
    ConnectionClosed(ConnectionClosed),
    /// The operation is not allowed in the connection's state.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The opening handshake, the closing handshake, or a keepalive pong took too long.
    #[error("{0}")]
    Timeout(Failure),
    /// More bytes are waiting to be written than the configured high-water mark allows.
    #[error("send buffer full: {pending} bytes pending, high-water mark {limit}")]
    SendBufferFull {
        /// Bytes waiting to be written.
        pending: usize,
        /// The configured high-water mark.
        limit: usize,
    },
    /// A text message was expected and a binary one arrived.
    #[error("expected a text message, received {len} bytes of binary")]
    NotText {
        /// The binary message's length.
        len: usize,
    },
    /// TLS setup or negotiation failed.
    #[error("TLS error: {0}")]
    Tls(String),
    /// The HTTP proxy could not be reached, refused the tunnel, or answered wrongly.
    #[error("proxy error: {0}")]
    Proxy(#[from] ProxyError),
    /// The configuration asks for what this build or layer cannot do, such as
    /// [`Http2Policy::Always`](crate::Http2Policy::Always) on the blocking client. Every
    /// attempt would fail the same way, so a reconnecting client stops at it.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    /// The error for a `wss://` URI in a build without TLS.
    #[cfg(any(feature = "sync", feature = "tokio"))]
    pub(crate) fn no_tls(uri: &crate::WsUri) -> Self {
        Self::Tls(format!(
            "{uri}: wss:// needs TLS: enable the `rustls` feature of wsline"
        ))
    }

    /// The error that reports how a connection ended: its failure if it had one, else the
    /// close status.
    #[must_use]
    pub fn from_closed(closed: ConnectionClosed) -> Self {
        match &closed.failure {
            Some(Failure::Handshake(error)) => Self::Handshake(error.clone()),
            Some(Failure::Protocol(error)) => Self::Protocol(error.clone()),
            Some(
                failure
                @ (Failure::OpenTimeout | Failure::CloseTimeout | Failure::KeepaliveTimeout),
            ) => Self::Timeout(failure.clone()),
            _ => Self::ConnectionClosed(closed),
        }
    }

    /// Whether this error means the connection is closed (cleanly or not), as opposed to a
    /// failure of the operation alone.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(
            self,
            Self::ConnectionClosed(_)
                | Self::Protocol(_)
                | Self::Timeout(_)
                | Self::Send(SendError::Closed)
        )
    }

    /// The close status, when the connection closed with a close handshake or its remains.
    #[must_use]
    pub fn close_status(&self) -> Option<&ConnectionClosed> {
        match self {
            Self::ConnectionClosed(closed) => Some(closed),
            _ => None,
        }
    }
}

/// `Result` with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
