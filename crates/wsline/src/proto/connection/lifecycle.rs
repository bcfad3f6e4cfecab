//! The connection's lifecycle (RFC 6455 §4, §7): where it stands, what each phase holds, and
//! every transition between phases, in one place.

use bytes::BytesMut;

use super::opening::Opening;
use super::timers::Expired;
use super::Connection;
use crate::proto::error::{ProtocolError, SendError};
use crate::proto::event::{Event, Failure, Initiator, Side, State};
use crate::proto::frame::{truncate_utf8, CloseCode, CloseFrame, Opcode, Rsv};

/// Where the connection stands, with the data of each phase.
///
/// ```text
///                 open()                    send_close / peer's close / fail       end
/// Connecting ─────────────▶ Open { input } ─────────────────────────▶ Closing { input } ───▶ Closed
///      │                                                                                    ▲
///      └──────── handshake failed or refused, open timeout, end of stream ──────────────────┘
/// ```
///
/// `input` says what becomes of the peer's bytes: read as frames, held back while a peer's
/// close frame or protocol error waits for the events before it to be acknowledged, or
/// discarded (RFC 6455 §1.4: nothing after a close frame; §7.1.7: nothing after failing).
#[derive(Debug)]
pub(super) enum Lifecycle {
    /// The opening handshake, with its sub-machine.
    Connecting(Opening),
    /// Messages flow both ways.
    Open { input: Input },
    /// A close frame was sent or received, or the connection failed.
    Closing { input: Input },
    /// The connection is over.
    Closed,
}

/// What becomes of the peer's input.
#[derive(Debug)]
pub(super) enum Input {
    /// Frames are read.
    Read,
    /// The peer's close frame or a protocol error waits for the events before it to be
    /// acknowledged; nothing more is read.
    Waiting(Deferred),
    /// Nothing more is read.
    Discard,
}

/// What the peer's input calls for once the events before it have been acknowledged.
#[derive(Debug)]
pub(super) enum Deferred {
    /// Answer this close frame (with its raw payload).
    Close(CloseFrame, Vec<u8>),
    /// Fail the connection for this error.
    Failure(ProtocolError),
}

/// Whether the write half is to be shut down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shutdown {
    NotYet,
    Queued,
    Reported,
}

impl Lifecycle {
    pub(super) fn state(&self) -> State {
        match self {
            Self::Connecting(_) => State::Connecting,
            Self::Open { .. } => State::Open,
            Self::Closing { .. } => State::Closing,
            Self::Closed => State::Closed,
        }
    }

    /// Whether the peer's bytes are read as frames.
    pub(super) fn reads_frames(&self) -> bool {
        matches!(
            self,
            Self::Open { input: Input::Read } | Self::Closing { input: Input::Read }
        )
    }

    fn input_mut(&mut self) -> Option<&mut Input> {
        match self {
            Self::Open { input } | Self::Closing { input } => Some(input),
            Self::Connecting(_) | Self::Closed => None,
        }
    }
}

impl Connection {
    /// Connecting → Open: the handshake succeeded.
    pub(super) fn open(&mut self) {
        self.lifecycle = Lifecycle::Open { input: Input::Read };
        self.timers.stop(Expired::Open);
        self.timers.start(Expired::Ping, self.config.ping_interval);
    }

    /// Open → Closing: keepalive stops and the close timeout starts.
    pub(super) fn enter_closing(&mut self) {
        self.lifecycle = match std::mem::replace(&mut self.lifecycle, Lifecycle::Closed) {
            Lifecycle::Open { input } => Lifecycle::Closing { input },
            other => {
                self.lifecycle = other;
                return;
            }
        };
        self.timers.stop(Expired::Ping);
        self.timers.stop(Expired::Pong);
        self.timers.start(Expired::Close, self.config.close_timeout);
    }

    /// Any state → Closed: the last event is [`Event::Closed`].
    pub(super) fn set_closed(&mut self) {
        if matches!(self.lifecycle, Lifecycle::Closed) {
            return;
        }
        self.lifecycle = Lifecycle::Closed;
        self.timers = super::timers::Timers::default();
        self.reader = super::reader::Reader::default();
        tracing::debug!(side = ?self.side, closed = %self.closed, "connection closed");
        self.events.push_back(Event::Closed(self.closed.clone()));
    }

    pub(super) fn queue_shutdown(&mut self) {
        if self.shutdown == Shutdown::NotYet {
            self.shutdown = Shutdown::Queued;
        }
    }

    /// Sending needs an open connection.
    pub(super) fn check_can_send(&self) -> Result<(), SendError> {
        match self.lifecycle {
            Lifecycle::Open { .. } => Ok(()),
            Lifecycle::Connecting(_) => Err(SendError::NotOpen),
            Lifecycle::Closing { .. } | Lifecycle::Closed => Err(SendError::Closed),
        }
    }

    /// Sends a close frame and starts closing (RFC 6455 §7.1.2).
    pub(super) fn write_close(&mut self, code: CloseCode, reason: &str) {
        let close = CloseFrame::new(code, truncate_utf8(reason, 123));
        self.writer
            .frame(true, Rsv::NONE, Opcode::Close, &close.payload());
        self.closed.initiator.get_or_insert(Initiator::Local);
        self.closed.sent = Some(close);
        self.enter_closing();
    }

    /// Acts on the peer's close frame or protocol error at once if every event before it
    /// has been acknowledged, else holds it until then, so that replies to those messages
    /// go out before the close frame. The acknowledge timeout runs from when the last of
    /// those events is taken (see [`events_taken`](Self::events_taken)).
    pub(super) fn defer(&mut self, deferred: Deferred) {
        if let Some(input) = self.lifecycle.input_mut() {
            *input = Input::Waiting(deferred);
        }
        if self.events.is_empty() && !self.unacknowledged {
            self.run_deferred();
        } else if self.events.is_empty() {
            self.events_taken();
        }
    }

    /// Every event before a held close frame or protocol error has been taken: the
    /// application has `acknowledge_timeout` to handle them.
    #[cold]
    pub(super) fn events_taken(&mut self) {
        if self.awaits_acknowledgement() {
            self.timers
                .start(Expired::Acknowledge, self.config.acknowledge_timeout);
        }
    }

    /// Acts on what [`defer`](Self::defer) held.
    pub(super) fn run_deferred(&mut self) {
        let Some(input @ Input::Waiting(_)) = self.lifecycle.input_mut() else {
            return;
        };
        let Input::Waiting(deferred) = std::mem::replace(input, Input::Discard) else {
            return;
        };
        self.timers.stop(Expired::Acknowledge);
        match deferred {
            Deferred::Close(close, payload) => self.answer_close(close, &payload),
            Deferred::Failure(error) => {
                tracing::debug!(side = ?self.side, %error, code = %error.close_code(), "failing the connection");
                let code = error.close_code();
                let reason = error.to_string();
                self.fail_connection(Some(Failure::Protocol(error)), code, &reason);
            }
        }
    }

    /// Answers a received close frame.
    fn answer_close(&mut self, close: CloseFrame, payload: &[u8]) {
        if self.closed.sent.is_none() {
            // RFC 6455 §5.5.1: "If an endpoint receives a Close frame and did not previously
            // send a Close frame, the endpoint MUST send a Close frame in response. (When
            // sending a Close frame in response, the endpoint typically echos the status code
            // it received.)"
            self.closed.initiator = Some(Initiator::Remote);
            self.writer.frame(true, Rsv::NONE, Opcode::Close, payload);
            self.closed.sent = Some(close.clone());
        }
        self.closed.received = Some(close);
        self.closed.clean = true;
        self.enter_closing();
        // RFC 6455 §7.1.1: "the server [...] SHOULD close the underlying TCP connection
        // first"; the client waits for it (within the close timeout).
        if self.side == Side::Server {
            self.queue_shutdown();
        }
    }

    /// The one way a connection fails (RFC 6455 §7.1.7), for the peer's protocol error, a
    /// timeout, a failed handshake or the application: records `failure`, sends a close
    /// frame with `code` if the connection is open (none for [`CloseCode::ABNORMAL`]),
    /// stops reading, and — on a server — shuts the TCP connection down without waiting
    /// for the peer's close frame. During the handshake the connection ends at once.
    pub(super) fn fail_connection(
        &mut self,
        failure: Option<Failure>,
        code: CloseCode,
        reason: &str,
    ) {
        if matches!(self.lifecycle, Lifecycle::Closed) {
            return;
        }
        if let Some(failure) = failure {
            self.closed.failure.get_or_insert(failure);
        }
        match self.lifecycle {
            Lifecycle::Closed => return,
            Lifecycle::Connecting(_) => {
                self.queue_shutdown();
                self.set_closed();
                return;
            }
            Lifecycle::Open { .. } if code != CloseCode::ABNORMAL && self.closed.sent.is_none() => {
                // RFC 6455 §7.1.7: "the endpoint SHOULD send a Close frame with an
                // appropriate status code".
                let code = if code.is_valid() {
                    code
                } else {
                    CloseCode::INTERNAL_ERROR
                };
                self.write_close(code, reason);
            }
            _ => self.enter_closing(),
        }
        // "An endpoint MUST NOT continue to attempt to process data (including a responding
        // Close frame) from the remote endpoint after being instructed to _Fail the WebSocket
        // Connection_." A close frame that had arrived is still what the peer said.
        if let Some(input) = self.lifecycle.input_mut() {
            if let Input::Waiting(Deferred::Close(close, _)) =
                std::mem::replace(input, Input::Discard)
            {
                self.closed.received = Some(close);
                self.closed.clean = true;
            }
        }
        self.timers.stop(Expired::Acknowledge);
        if self.side == Side::Server {
            self.queue_shutdown();
        }
    }

    /// Connecting → Open for a server whose response was 101, reading the frames that came
    /// with the request.
    pub(super) fn open_with(&mut self, rest: &BytesMut) {
        self.open();
        if !rest.is_empty() {
            self.handle_frames(rest);
        }
    }
}
