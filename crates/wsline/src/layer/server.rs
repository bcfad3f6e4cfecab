//! The server half of the layer core: the handshake answer, the handler-error policy, and
//! backpressure with its close reason. Every server (the sync event loop, the
//! thread-per-connection server, tokio) calls these, so they behave alike.

use std::net::SocketAddr;
use std::time::Duration;

use crate::proto::{CloseCode, Connection, PreparedMessage, Request, Response, SendError, State};
use crate::{BackpressurePolicy, Error, Result};

/// The close reason sent with 1008 to a peer that reads too slowly
/// ([`BackpressurePolicy::Close`]).
pub(crate) const SLOW_READER_REASON: &str = "client reads too slowly";

/// The close reason sent with 1001 (going away) to every connection when a server shuts
/// down.
pub(crate) const SHUTDOWN_REASON: &str = "server shutting down";

/// How long an accept loop pauses after an accept error (the process ran out of file
/// descriptors, say) before trying again; the pending connections wait in the backlog.
pub(crate) const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How a server answered a handshake request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 101: the connection is open.
    Accepted,
    /// Any other status: the response is queued and the connection closes once it is
    /// written.
    Rejected {
        /// The response's status code.
        status: u16,
    },
}

/// Answers the handshake `request` on `conn`: accepts it (RFC 6455 §4.2.2, or the matching
/// HTTP error for an invalid request), lets `on_handshake` inspect it and alter or replace
/// the response, and queues the response. Logs a rejection with its status and path, or the
/// opened connection.
///
/// # Errors
/// [`SendError::HandshakeState`] when `conn` is not waiting for a response (no request
/// came).
pub(crate) fn answer_handshake(
    conn: &mut Connection,
    request: &Request,
    peer_addr: Option<SocketAddr>,
    on_handshake: impl FnOnce(&Request, &mut Response),
) -> std::result::Result<Answer, SendError> {
    let mut response = conn.accept(request)?;
    on_handshake(request, &mut response);
    let status = response.status;
    conn.send_response(response)?;
    if status != 101 {
        tracing::info!(?peer_addr, status, path = %request.path, "handshake rejected");
        return Ok(Answer::Rejected { status });
    }
    tracing::info!(?peer_addr, path = %request.path, "connection opened");
    Ok(Answer::Accepted)
}

/// The handler-error policy: the close code for an `Err` a handler returned, sent with an
/// empty reason. An internal fault closes the connection with 1011 (internal error) and
/// sends no details; the error is logged here, on the server's side. `None` when there is
/// nothing to tell the peer: the error is the end of the connection itself, or a full send
/// buffer, which [`apply_backpressure`] has dealt with (under
/// [`BackpressurePolicy::Close`] the connection is already failing with 1008).
#[must_use]
pub(crate) fn handler_error_close(error: &Error) -> Option<CloseCode> {
    if matches!(error, Error::SendBufferFull { .. }) || error.is_closed() {
        tracing::debug!(%error, "handler ended with the connection's own error");
        return None;
    }
    tracing::warn!(%error, "handler failed; closing the connection with 1011");
    Some(CloseCode::INTERNAL_ERROR)
}

/// Applies `policy` to a send that finds `pending` bytes queued against a high-water mark
/// of `limit`. At or below the mark the send may go ahead. Past it the send fails, and
/// under [`BackpressurePolicy::Close`] `fail` is called first with 1008 (policy violation)
/// and [`SLOW_READER_REASON`], for the layer to fail the connection with.
///
/// # Errors
/// [`Error::SendBufferFull`] past the mark.
pub(crate) fn apply_backpressure(
    policy: BackpressurePolicy,
    pending: usize,
    limit: usize,
    fail: impl FnOnce(CloseCode, &'static str),
) -> Result<()> {
    if pending <= limit {
        return Ok(());
    }
    if policy == BackpressurePolicy::Close {
        tracing::info!(pending, limit, "closing a connection that reads too slowly");
        fail(CloseCode::POLICY_VIOLATION, SLOW_READER_REASON);
    }
    Err(Error::SendBufferFull { pending, limit })
}

/// The bytes a peer is judged by before a send of a turn (a read's callbacks, a timer, a
/// batch of publications): what it had not taken when the turn began (`backlog`) — the
/// turn's own output is written when it ends, so a peer is not slow for what it was not
/// yet given — unless the turn's output passes the mark by what the turn received plus the
/// larger of the mark and `max_message_size`: that bounds a turn that floods, and each
/// connection's memory, to about twice the largest message past the mark.
pub(crate) fn judged_backlog(
    pending: usize,
    backlog: usize,
    received: usize,
    mark: usize,
    max_message_size: Option<usize>,
) -> usize {
    let largest = max_message_size.unwrap_or(mark).max(mark);
    let turn_limit = mark.saturating_add(received).saturating_add(largest);
    if pending > turn_limit {
        pending
    } else {
        backlog
    }
}

/// A subscriber's burst of publications: from the moment it is given some with its send
/// buffer not empty until the buffer is empty again (it caught up). Publications are judged
/// by what the subscriber had not taken when the burst began, however many batches the
/// burst arrives in: a reader that keeps reading is not slow for a burst larger than its
/// mark, while one that stops is judged by its whole backlog once that passes the mark by
/// the largest message ([`judged_backlog`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Burst {
    began_with: Option<usize>,
}

impl Burst {
    /// Before a batch of publications, with what the send buffer holds now (after writing
    /// what the socket takes).
    pub(crate) fn update(&mut self, pending: usize) {
        if pending == 0 {
            self.began_with = None;
        }
        self.began_with.get_or_insert(pending);
    }

    /// What the subscriber is judged by.
    pub(crate) fn backlog(self) -> usize {
        self.began_with.unwrap_or(0)
    }
}

/// Queues a published message for one subscriber: the rule both servers follow for
/// topics. The subscriber is judged as by [`judged_backlog`], `backlog` being what it had
/// not taken when its [`Burst`] began; past `mark` it gets `policy` (the
/// message is dropped for it, and under [`BackpressurePolicy::Close`] it is failed with
/// 1008); one that is no longer open gets nothing. Returns whether the message was queued.
pub(crate) fn deliver_published(
    core: &mut Connection,
    prepared: &PreparedMessage,
    backlog: usize,
    mark: usize,
    policy: BackpressurePolicy,
) -> bool {
    if core.state() != State::Open {
        return false;
    }
    let pending = core.pending_send();
    let judged = judged_backlog(pending, backlog, 0, mark, core.config().max_message_size);
    if judged > mark {
        let fail = |code, reason| core.fail(code, reason);
        // Past it: reported with what is queued now.
        if apply_backpressure(policy, judged.max(pending), mark, fail).is_err() {
            return false;
        }
    }
    core.send_prepared(prepared).is_ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use bytes::Buf;

    use super::*;
    use crate::proto::{Config, Event, State};

    /// A server connection that has read `request` and waits to answer it.
    fn received(request: &str) -> (Connection, Request) {
        let mut conn = Connection::server(Arc::new(Config::default()), Instant::now());
        conn.handle_data(request.as_bytes());
        match conn.poll_event() {
            Some(Event::Request(request)) => (conn, request),
            other => panic!("expected the request, got {other:?}"),
        }
    }

    // RFC 6455 §1.3: the sample handshake.
    const REQUEST: &str =
        "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn answer_handshake_accepts_a_valid_request_and_opens() {
        let (mut conn, request) = received(REQUEST);
        let answer = answer_handshake(&mut conn, &request, None, |_, _| {});
        assert_eq!(answer, Ok(Answer::Accepted));
        assert_eq!(conn.state(), State::Open);
    }

    #[test]
    fn answer_handshake_sends_the_response_the_hook_replaced() {
        let (mut conn, request) = received(REQUEST);
        let answer = answer_handshake(&mut conn, &request, None, |request, response| {
            assert_eq!(request.path, "/chat");
            *response = Response::text(403, "no");
        });
        assert_eq!(answer, Ok(Answer::Rejected { status: 403 }));
        let pending = conn.pending_send();
        let written = conn.send_buffer().copy_to_bytes(pending);
        assert!(written.starts_with(b"HTTP/1.1 403 "), "{written:?}");
    }

    #[test]
    fn answer_handshake_passes_an_invalid_request_on_as_its_http_error() {
        let (mut conn, request) = received(&REQUEST.replace("Version: 13", "Version: 8"));
        let mut seen = None;
        let answer = answer_handshake(&mut conn, &request, None, |_, response| {
            seen = Some(response.status);
        });
        assert_eq!(seen, Some(426));
        assert_eq!(answer, Ok(Answer::Rejected { status: 426 }));
    }

    #[test]
    fn handler_error_closes_with_1011_unless_it_is_the_connections_own_end() {
        let fault = Error::Io(std::io::Error::other("database down"));
        assert_eq!(handler_error_close(&fault), Some(CloseCode::INTERNAL_ERROR));
        let closed = Error::Send(SendError::Closed);
        assert_eq!(handler_error_close(&closed), None);
        let full = Error::SendBufferFull {
            pending: 2,
            limit: 1,
        };
        assert_eq!(handler_error_close(&full), None);
    }

    #[test]
    fn backpressure_lets_a_send_at_the_mark_go_ahead() {
        let mut failed = None;
        let result = apply_backpressure(BackpressurePolicy::Close, 10, 10, |code, reason| {
            failed = Some((code, reason));
        });
        assert!(result.is_ok());
        assert_eq!(failed, None);
    }

    #[test]
    fn backpressure_past_the_mark_fails_the_send_and_closes_only_under_close() {
        for (policy, closes) in [
            (BackpressurePolicy::Close, true),
            (BackpressurePolicy::Error, false),
        ] {
            let mut failed = None;
            let result = apply_backpressure(policy, 11, 10, |code, reason| {
                failed = Some((code, reason));
            });
            assert!(
                matches!(
                    result,
                    Err(Error::SendBufferFull {
                        pending: 11,
                        limit: 10
                    })
                ),
                "{result:?}"
            );
            let expected = closes.then_some((CloseCode::POLICY_VIOLATION, SLOW_READER_REASON));
            assert_eq!(failed, expected, "{policy:?}");
        }
    }
}
