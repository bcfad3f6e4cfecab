//! The blocking layer: a multi-threaded event-loop server with per-message callbacks, a
//! thread-per-connection server for code that wants to block, and a client.
//!
//! - [`server::serve`] runs one `mio` event loop per core; handlers run inline, no thread
//!   per connection. It holds tens of thousands of idle connections in little memory.
//! - [`server::serve_blocking`] gives each connection a thread and a [`WebSocket`] to loop
//!   over, like Python websockets' sync server.
//! - [`client::connect`] opens a [`WebSocket`] (`ws://`, or `wss://` with the `rustls`
//!   feature; through an HTTP proxy if configured; following redirects), and
//!   [`client::reconnecting`] opens one after another with backoff.
//!
//! Every server serves `wss://` when [`ServerConfig::tls`](crate::ServerConfig) is set.

pub mod client;
pub mod server;
mod transport;
mod websocket;

pub use websocket::WebSocket;

use std::io::{self, IoSlice};

use bytes::Buf;
use std::time::{Duration, Instant};

use transport::{Blocking, NonBlocking};

use crate::layer::MAX_IOVECS;
use crate::proto::{self, Event, Failure, Request, Transmit};
use crate::{Error, Result};

/// Writes what a non-blocking stream takes of the connection's queued bytes (one `send` for
/// a single piece, a vectored write for several), then shuts the write half down if the
/// connection asks and `shut_down` says it has not been yet.
///
/// # Errors
/// The stream's error; `WriteZero` if it took nothing.
fn flush_nonblocking(
    stream: &mut impl NonBlocking,
    conn: &mut proto::Connection,
    shut_down: &mut bool,
) -> io::Result<()> {
    loop {
        let buffer = conn.send_buffer();
        if buffer.is_empty() {
            break;
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let written = match buffer.chunks_vectored(&mut slices) {
            1 => stream.write(&slices[0]),
            count => stream.write_vectored(&slices[..count]),
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => conn.send_buffer().advance(written),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    match stream.flush_held() {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
        result => result?,
    }
    if conn.poll_shutdown() && !*shut_down {
        *shut_down = true;
        // RFC 6455 §7.1.1: a server closes the TCP connection first.
        stream.shutdown_write();
    }
    Ok(())
}

/// Time left until `deadline`; the open timeout once it has passed.
fn remaining(deadline: Option<Instant>) -> Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(Error::Timeout(Failure::OpenTimeout)),
        },
    }
}

/// Runs an opening handshake over a blocking stream until the connection opens: writes what
/// the core queues, reads until it reports the outcome, every step before `deadline`. A
/// server answers the request in `on_request` (accept or reject, then `send_response`).
fn open_blocking(
    stream: &mut impl Blocking,
    mut conn: proto::Connection,
    deadline: Option<Instant>,
    read_buffer_size: usize,
    mut on_request: impl FnMut(&mut proto::Connection, Request),
) -> Result<proto::Connection> {
    let mut buf = vec![0; read_buffer_size.clamp(1024, 64 << 10)];
    loop {
        // Handshake events only: messages that came with the head stay queued in the core.
        while conn.state() == proto::State::Connecting {
            match conn.poll_event() {
                Some(Event::Request(request)) => on_request(&mut conn, request),
                Some(_) => {}
                None => break,
            }
        }
        while let Some(transmit) = conn.poll_transmit() {
            match transmit {
                Transmit::Bytes(bytes) => stream.send(&bytes, deadline)?,
                Transmit::Shutdown => stream.socket().shutdown(std::net::Shutdown::Write)?,
            }
        }
        match conn.state() {
            proto::State::Connecting => {}
            proto::State::Closed => return Err(Error::from_closed(conn.close_status().clone())),
            proto::State::Open | proto::State::Closing => return Ok(conn),
        }
        match stream.receive(&mut buf, deadline)? {
            0 => conn.handle_eof(),
            n => conn.handle_data(&buf[..n]),
        }
    }
}

/// A socket timeout during the handshake is the open timeout; a TLS failure is
/// [`Error::Tls`].
fn timeout_or(error: io::Error) -> Error {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout(Failure::OpenTimeout),
        #[cfg(feature = "rustls")]
        _ => crate::tls::io_error(error),
        #[cfg(not(feature = "rustls"))]
        _ => Error::Io(error),
    }
}
