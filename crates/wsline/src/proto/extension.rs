//! Extensions (RFC 6455 §9): negotiation in the opening handshake and per-message
//! transforms marked with reserved bits.
//!
//! This is the core's half: the traits and their types, in [`proto`](crate::proto) so that
//! the core depends on nothing else in the crate; [`wsline::extension`](crate::extension)
//! re-exports them beside the implementations.
//!
//! An [`ExtensionFactory`] lives in [`Config::extensions`](crate::Config::extensions) and
//! negotiates: a client offers [`ExtensionParams`] and checks the server's answer; a server
//! picks among the client's offers. Each successful negotiation yields an [`Extension`], owned
//! by one connection, which transforms the payloads of the messages it marks with its
//! reserved bits. permessage-deflate (RFC 7692) is one implementation; a custom extension
//! implements the same two traits.

use std::fmt;

use bytes::BytesMut;
use thiserror::Error;

use super::{CloseCode, Rsv};

/// One element of a `Sec-WebSocket-Extensions` header: a name and its parameters
/// (RFC 6455 §9.1), such as `permessage-deflate; client_max_window_bits`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtensionParams {
    /// The extension name.
    pub name: String,
    /// Parameters in order: a name and an optional value (unquoted).
    pub params: Vec<(String, Option<String>)>,
}

impl ExtensionParams {
    /// An element with this name and no parameter.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter.
    #[must_use]
    pub fn param(mut self, name: impl Into<String>, value: Option<String>) -> Self {
        self.params.push((name.into(), value));
        self
    }
}

impl fmt::Display for ExtensionParams {
    /// The header syntax, quoting values that are not tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            write!(f, "; {name}")?;
            if let Some(value) = value {
                if super::is_token(value) {
                    write!(f, "={value}")?;
                } else {
                    write!(
                        f,
                        "=\"{}\"",
                        value.replace('\\', "\\\\").replace('"', "\\\"")
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Why negotiation of an extension failed on the client.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("extension {name}: {reason}")]
pub struct NegotiationError {
    /// The extension name.
    pub name: String,
    /// What was wrong with the server's answer.
    pub reason: String,
}

/// Negotiates one extension for the connections of a [`Config`](crate::Config).
pub trait ExtensionFactory: Send + Sync {
    /// The extension name, as in the header.
    fn name(&self) -> &str;

    /// Client: the offer to send, in order of preference (RFC 6455 §9.1 allows several
    /// offers of the same extension with different parameters).
    fn client_offers(&self) -> Vec<ExtensionParams>;

    /// Client: checks the server's answer and builds the extension.
    ///
    /// # Errors
    /// When the server answered with parameters the client did not offer or cannot accept;
    /// the handshake then fails.
    fn client_accept(
        &self,
        response: &ExtensionParams,
    ) -> Result<Box<dyn Extension>, NegotiationError>;

    /// Server: picks one of the client's offers of this extension (in the client's order of
    /// preference), returning the answer to put in the response and the extension. `None`
    /// declines: offers that are invalid or not acceptable are declined, not failed
    /// (RFC 7692 §5.1).
    fn server_accept(
        &self,
        offers: &[ExtensionParams],
    ) -> Option<(ExtensionParams, Box<dyn Extension>)>;

    /// Server: this factory as it should be when messages go to many connections at once,
    /// if that differs: one whose extensions can share their encoding of a message
    /// ([`Extension::shared_encoding`]). `None`, the default: use this one as it is.
    fn for_broadcast(&self) -> Option<std::sync::Arc<dyn ExtensionFactory>> {
        None
    }
}

/// What an extension reports when it cannot transform a payload.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ExtensionError {
    /// Decoded output would exceed the message size limit (closes with 1009).
    #[error("decoded message exceeds the limit of {limit} bytes")]
    TooBig {
        /// The limit in bytes.
        limit: usize,
    },
    /// The payload could not be decoded (closes with 1007).
    #[error("invalid payload: {0}")]
    InvalidData(String),
    /// The extension itself failed (closes with 1011).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ExtensionError {
    /// The close code for this error.
    #[must_use]
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::TooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            Self::InvalidData(_) => CloseCode::INVALID_PAYLOAD,
            Self::Internal(_) => CloseCode::INTERNAL_ERROR,
        }
    }
}

/// Where an outgoing frame sits in its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramePosition {
    /// Whether this is the first frame of the message.
    pub first: bool,
    /// Whether this is the last frame of the message.
    pub fin: bool,
}

/// A negotiated extension of one connection: transforms message payloads.
pub trait Extension: Send + fmt::Debug {
    /// The extension name.
    fn name(&self) -> &str;

    /// The reserved bits this extension sets on the first frame of a message it transformed.
    fn rsv(&self) -> Rsv;

    /// Decodes the next piece of an incoming message that was marked with [`Extension::rsv`],
    /// appending the result to `out` without letting `out` grow past `max_len` bytes.
    ///
    /// # Errors
    /// [`ExtensionError::TooBig`] when the output would pass `max_len`, and the other
    /// variants for payloads that cannot be decoded.
    fn decode(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), ExtensionError>;

    /// Finishes an incoming message after its last piece.
    ///
    /// # Errors
    /// As [`Extension::decode`].
    fn finish_decode(&mut self, out: &mut BytesMut, max_len: usize) -> Result<(), ExtensionError>;

    /// Encodes an outgoing frame's payload into `out`.
    ///
    /// On the first frame of a message the extension decides whether it transforms the
    /// message (returns `true`, and the frame carries [`Extension::rsv`]) or not (returns
    /// `false`, writes nothing, and the message goes out as is). `compress` is the caller's
    /// per-message wish, `None` for the extension's default. Later frames of a transformed
    /// message are always passed here and must be transformed.
    ///
    /// # Errors
    /// When the extension fails; the message is not sent.
    fn encode(
        &mut self,
        payload: &[u8],
        position: FramePosition,
        compress: Option<bool>,
        out: &mut BytesMut,
    ) -> Result<bool, ExtensionError>;

    /// Whether connections may share this one's encoding of a whole message (a broadcast
    /// encodes it once for all of them): `Some(key)` when what [`encode`](Self::encode)
    /// makes of a whole message, with the extension's default choice, depends only on the
    /// message and on the parameters `key` stands for — it keeps no context from one message
    /// to the next (permessage-deflate with `server_no_context_takeover` on a server) — so
    /// two connections with equal keys produce the same bytes. `None`, the default: every
    /// connection encodes the message itself.
    fn shared_encoding(&self) -> Option<u64> {
        None
    }
}
