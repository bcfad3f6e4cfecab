//! What a connection reports to the application.

use std::fmt;

use bytes::Bytes;

use super::error::ProtocolError;
use super::frame::{CloseCode, CloseFrame};
use super::handshake::{HandshakeError, Request, Response};
use super::message::Message;

/// Which end of the connection this is. Clients mask their frames; servers do not
/// (RFC 6455 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The end that sent the opening handshake request.
    Client,
    /// The end that answered it.
    Server,
}

/// The state of a connection (RFC 6455 §4, §7).
///
/// ```text
///              handshake done            close sent or received     TCP closed
/// Connecting ─────────────────▶ Open ───────────────────────▶ Closing ──────────▶ Closed
///      │                                                                           ▲
///      └──────────── handshake failed, timed out, or TCP closed ───────────────────┘
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// The opening handshake is in progress.
    Connecting,
    /// Messages flow both ways.
    Open,
    /// A close frame was sent or received; the connection is winding down.
    Closing,
    /// The connection is over: the TCP connection is, or should now be, closed.
    Closed,
}

/// Which end sent the first close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// This end.
    Local,
    /// The peer.
    Remote,
}

/// Why a connection ended badly, beyond what the close frames say.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The peer broke the protocol and this end failed the connection (RFC 6455 §7.1.7).
    Protocol(ProtocolError),
    /// The opening handshake failed.
    Handshake(HandshakeError),
    /// The opening handshake took longer than `Config::open_timeout`.
    OpenTimeout,
    /// The closing handshake took longer than `Config::close_timeout`.
    CloseTimeout,
    /// A keepalive ping got no pong within `Config::ping_timeout`.
    KeepaliveTimeout,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(error) => write!(f, "protocol error: {error}"),
            Self::Handshake(error) => write!(f, "handshake failed: {error}"),
            Self::OpenTimeout => f.write_str("opening handshake timed out"),
            Self::CloseTimeout => f.write_str("closing handshake timed out"),
            Self::KeepaliveTimeout => f.write_str("keepalive ping timed out"),
        }
    }
}

/// How a connection ended: the close frames sent and received, who closed first, whether the
/// closing handshake completed, and what failed if anything did.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConnectionClosed {
    /// The close frame this end sent.
    pub sent: Option<CloseFrame>,
    /// The close frame the peer sent.
    pub received: Option<CloseFrame>,
    /// Who sent the first close frame, if any was sent.
    pub initiator: Option<Initiator>,
    /// Whether the closing handshake completed: both close frames went through
    /// (a browser's `wasClean`).
    pub clean: bool,
    /// What failed, if the end was not an orderly close.
    pub failure: Option<Failure>,
}

impl ConnectionClosed {
    /// The code that describes the end best: the one received, else the one sent, else 1006
    /// (closed without a close frame).
    #[must_use]
    pub fn code(&self) -> CloseCode {
        self.received
            .as_ref()
            .or(self.sent.as_ref())
            .map_or(CloseCode::ABNORMAL, |close| close.code)
    }

    /// The reason that goes with [`ConnectionClosed::code`].
    #[must_use]
    pub fn reason(&self) -> &str {
        self.received
            .as_ref()
            .or(self.sent.as_ref())
            .map_or("", |close| close.reason.as_str())
    }
}

impl fmt::Display for ConnectionClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.sent, &self.received, self.initiator) {
            (_, Some(received), Some(Initiator::Remote)) => {
                write!(f, "received close {received}")?;
                if let Some(sent) = &self.sent {
                    write!(f, "; then sent {sent}")?;
                }
            }
            (Some(sent), received, _) => {
                write!(f, "sent close {sent}")?;
                if let Some(received) = received {
                    write!(f, "; then received {received}")?;
                }
            }
            (None, Some(received), _) => write!(f, "received close {received}")?,
            (None, None, _) => f.write_str("no close frame received or sent")?,
        }
        if let Some(failure) = &self.failure {
            write!(f, " ({failure})")?;
        }
        Ok(())
    }
}

/// Something that happened on a connection, drained with
/// [`Connection::poll_event`](crate::proto::Connection::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Server: a handshake request arrived. Answer it with
    /// [`Connection::accept`](crate::proto::Connection::accept) or
    /// [`Connection::reject`](crate::proto::Connection::reject), then
    /// [`Connection::send_response`](crate::proto::Connection::send_response).
    Request(Request),
    /// Client: the server accepted the handshake; the connection is open.
    Response(Response),
    /// A whole message arrived.
    Message(Message),
    /// A data frame arrived (only with `Config::deliver_fragments`).
    Fragment(Fragment),
    /// A ping arrived; the pong has already been queued.
    Ping(Bytes),
    /// A pong arrived.
    Pong(Bytes),
    /// The connection ended; this is the last event.
    Closed(ConnectionClosed),
}

/// A piece of a message, delivered frame by frame with `Config::deliver_fragments`.
///
/// Text pieces always hold whole characters: a character cut between frames is delivered
/// with the frame that completes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// The piece, typed like the message it belongs to.
    pub data: Message,
    /// Whether this is the first piece of the message.
    pub first: bool,
    /// Whether this is the last piece of the message.
    pub fin: bool,
}
