//! The layer core: what every I/O layer (the sync event loop, the thread-per-connection
//! server, tokio, and any later transport) does the same way, so that a transport file is
//! mostly "how to read and write this kind of socket". Nothing here does I/O.
//!
//! - [`server`]: the server's handshake answer with its hook, the handler-error policy,
//!   backpressure and its close reason.
//! - [`client`]: the client's request and the redirect loop.
//! - [`io`]: the write path over the core's vectored send buffer.
//! - [`budget`]: the server-wide budget of queued output.
//! - Here: close-if-open and the limits the layers share.

pub(crate) mod budget;
pub(crate) mod client;
pub(crate) mod io;
pub(crate) mod server;

use std::time::Duration;

use crate::proto::{CloseCode, Connection, SendError, State};

/// Received messages kept unread, by default, before a connection stops reading its socket
/// (receive backpressure: the peer's sends then wait in TCP).
pub const DEFAULT_MAX_UNREAD_MESSAGES: usize = 1024;
/// Bytes of received messages kept unread, by default, before a connection stops reading
/// its socket.
pub const DEFAULT_MAX_UNREAD_BYTES: usize = 16 << 20;
/// How long a ping waits for its pong when the configuration sets no `ping_timeout`.
pub(crate) const DEFAULT_PONG_WAIT: Duration = Duration::from_secs(20);

/// Starts the closing handshake (RFC 6455 §7.1.2) if the connection is open; a connection
/// that is still connecting, already closing or closed is left as it is. Returns whether a
/// close frame was queued.
///
/// # Errors
/// [`SendError`] for a code that may not be sent or a reason over 123 bytes; a layer that
/// passes one of its own constant codes may ignore it.
pub(crate) fn close_if_open(
    conn: &mut Connection,
    code: CloseCode,
    reason: &str,
) -> Result<bool, SendError> {
    if conn.state() != State::Open {
        return Ok(false);
    }
    conn.send_close(code, reason)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::proto::{Config, Side};

    fn open() -> Connection {
        Connection::after_handshake(Side::Server, Config::default(), Instant::now())
    }

    #[test]
    fn close_if_open_queues_one_close_frame_and_then_does_nothing() {
        let mut conn = open();
        assert_eq!(close_if_open(&mut conn, CloseCode::NORMAL, "bye"), Ok(true));
        assert_eq!(conn.state(), State::Closing);
        let queued = conn.pending_send();
        assert_eq!(
            close_if_open(&mut conn, CloseCode::GOING_AWAY, ""),
            Ok(false)
        );
        assert_eq!(conn.pending_send(), queued);
    }

    #[test]
    fn close_if_open_leaves_a_connecting_connection_alone() {
        let mut conn = Connection::server(Arc::new(Config::default()), Instant::now());
        assert_eq!(close_if_open(&mut conn, CloseCode::NORMAL, ""), Ok(false));
        assert_eq!(conn.state(), State::Connecting);
    }

    #[test]
    fn close_if_open_reports_a_code_that_may_not_be_sent() {
        let mut conn = open();
        assert_eq!(
            close_if_open(&mut conn, CloseCode::ABNORMAL, ""),
            Err(SendError::InvalidCloseCode(1006))
        );
        assert_eq!(conn.state(), State::Open);
    }
}
