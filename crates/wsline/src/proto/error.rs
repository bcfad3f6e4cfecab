//! Errors of the sans-I/O core: what the peer did wrong, and what the application asked for
//! that the protocol forbids.

use thiserror::Error;

use crate::proto::frame::CloseCode;

/// The peer broke RFC 6455 (or a negotiated extension) while the connection was open.
///
/// Each error knows the close code it fails the connection with ([`ProtocolError::close_code`]).
/// The `Display` text is for people and not part of the API.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame used a reserved opcode (RFC 6455 §5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A 64-bit payload length had its most significant bit set (RFC 6455 §5.2).
    #[error("payload length has its most significant bit set")]
    InvalidPayloadLength,
    /// A control frame carried more than 125 bytes (RFC 6455 §5.5).
    #[error("control frame longer than 125 bytes")]
    ControlFrameTooLong,
    /// A control frame was fragmented (RFC 6455 §5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A frame set reserved bits that no negotiated extension defines (RFC 6455 §5.2).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// A client frame arrived without a masking key (RFC 6455 §5.1).
    #[error("unmasked frame from a client")]
    UnmaskedFrame,
    /// A server frame arrived with a masking key (RFC 6455 §5.1).
    #[error("masked frame from a server")]
    MaskedFrame,
    /// A continuation frame arrived with no fragmented message to continue (RFC 6455 §5.4).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new data message started before the fragmented one finished (RFC 6455 §5.4).
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A text message or close reason was not valid UTF-8 (RFC 6455 §8.1).
    #[error("invalid UTF-8 in text")]
    InvalidUtf8,
    /// A close frame carried a code peers must not send (RFC 6455 §7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close frame's payload was one byte long (RFC 6455 §5.5.1).
    #[error("close payload of one byte")]
    InvalidClosePayloadLength,
    /// A reassembled message exceeded `Config::max_message_size`.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    MessageTooBig {
        /// Bytes the message had reached or announced.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A single frame exceeded `Config::max_frame_size`.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooBig {
        /// Bytes the frame header announced.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A negotiated extension could not decode a message.
    #[error("extension error: {0}")]
    Extension(#[from] crate::proto::extension::ExtensionError),
}

impl ProtocolError {
    /// The close code the connection is failed with for this error (RFC 6455 §7.4.1).
    #[must_use]
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Self::MessageTooBig { .. } | Self::FrameTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            Self::Extension(error) => error.close_code(),
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// The application asked the connection for something the protocol does not allow now.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SendError {
    /// The opening handshake has not completed.
    #[error("the opening handshake has not completed")]
    NotOpen,
    /// A step of the opening handshake that the connection is not at: a request on a
    /// server or after it was sent, a response before a request arrived or after one was
    /// sent.
    #[error("the opening handshake is not at that step")]
    HandshakeState,
    /// The connection is closing or closed: no more data may be sent (RFC 6455 §5.5.1).
    #[error("the connection is closing or closed")]
    Closed,
    /// A close code that may not be sent (1005, 1006, 1015 and codes outside the valid ranges).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A ping or pong payload longer than 125 bytes (RFC 6455 §5.5).
    #[error("control payload of {0} bytes exceeds 125")]
    ControlPayloadTooLong(usize),
    /// A continuation fragment with no fragmented message in progress.
    #[error("no fragmented message in progress")]
    NoMessageInProgress,
    /// A new message while a fragmented one is still in progress.
    #[error("a fragmented message is in progress")]
    MessageInProgress,
    /// A negotiated extension failed to encode the message.
    #[error("extension error: {0}")]
    Extension(#[from] crate::proto::extension::ExtensionError),
}
