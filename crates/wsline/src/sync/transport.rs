//! The byte streams under the sync layer: plain TCP, or TLS over TCP (feature `rustls`),
//! blocking during the opening handshake and non-blocking after it.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use super::{remaining, timeout_or};

/// A stream the sync layer writes to without blocking.
pub(crate) trait NonBlocking: Read + Write {
    /// Writes out what the stream itself still holds (TLS records), as far as the socket
    /// takes it: `WouldBlock` while some is left.
    fn flush_held(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Whether the stream itself still holds output (TLS records) that the socket has not
    /// taken.
    fn holds_output(&self) -> bool {
        false
    }

    /// Whether a read shorter than its buffer left something to read all the same (the end
    /// of a TLS stream, or a failure, after the bytes it returned): edge-triggered readiness
    /// will not report it.
    fn input_pending(&self) -> bool {
        false
    }

    /// Ends the sending direction (after a TLS `close_notify`).
    fn shutdown_write(&mut self);
}

impl NonBlocking for mio::net::TcpStream {
    fn shutdown_write(&mut self) {
        // The peer may be gone already, and then there is nothing left to tell it.
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// A connected stream in blocking mode, for the opening handshake. Every socket read and
/// write waits at most until the deadline (the open timeout): a peer that trickles bytes
/// cannot stretch it.
pub(crate) trait Blocking {
    /// The TCP socket under it (for options).
    fn socket(&self) -> &TcpStream;

    /// Writes all of `bytes`, and whatever the stream holds, before `deadline`.
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) past the deadline, else the stream's error.
    fn send(&mut self, bytes: &[u8], deadline: Option<Instant>) -> crate::Result<()>;

    /// Reads some bytes before `deadline`; `Ok(0)` at the end of the stream.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    fn receive(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> crate::Result<usize>;

    /// The same stream, non-blocking, for the connection's driver.
    fn into_transport(self) -> io::Result<Transport>;
}

impl Blocking for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }

    fn send(&mut self, mut bytes: &[u8], deadline: Option<Instant>) -> crate::Result<()> {
        while !bytes.is_empty() {
            self.set_write_timeout(remaining(deadline)?)?;
            match self.write(bytes) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => bytes = &bytes[n..],
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(timeout_or(error)),
            }
        }
        Ok(())
    }

    fn receive(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> crate::Result<usize> {
        loop {
            self.set_read_timeout(remaining(deadline)?)?;
            match self.read(buf) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(timeout_or(error)),
            }
        }
    }

    fn into_transport(self) -> io::Result<Transport> {
        self.set_read_timeout(None)?;
        self.set_write_timeout(None)?;
        self.set_nonblocking(true)?;
        Ok(Transport::Tcp(mio::net::TcpStream::from_std(self)))
    }
}

/// An open connection's stream, non-blocking.
pub(crate) enum Transport {
    /// Plain TCP (`ws://`).
    Tcp(mio::net::TcpStream),
    /// TLS over TCP (`wss://`).
    #[cfg(feature = "rustls")]
    Tls(Box<tls::Stream>),
}

impl Transport {
    /// An accepted socket, wrapped in a TLS server session when `config` has TLS.
    pub(crate) fn accepted(
        stream: mio::net::TcpStream,
        config: &crate::ServerConfig,
    ) -> io::Result<Self> {
        #[cfg(feature = "rustls")]
        if let Some(tls) = &config.tls {
            let session = rustls::ServerConnection::new(std::sync::Arc::clone(tls))
                .map_err(io::Error::other)?;
            return Ok(Self::Tls(Box::new(tls::Stream::server(session, stream))));
        }
        let _ = config;
        Ok(Self::Tcp(stream))
    }

    /// The TCP socket, to register with a poll.
    pub(crate) fn socket_mut(&mut self) -> &mut mio::net::TcpStream {
        match self {
            Self::Tcp(stream) => stream,
            #[cfg(feature = "rustls")]
            Self::Tls(stream) => &mut stream.sock,
        }
    }

    /// Closes the socket in both directions.
    pub(crate) fn shutdown(&mut self) {
        // The peer may have closed it already: nothing to report.
        let _ = self.socket_mut().shutdown(Shutdown::Both);
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(stream) => stream.read(buf),
            #[cfg(feature = "rustls")]
            Self::Tls(stream) => tls::read(stream, buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            // One piece: `send`, not `writev` (the hot path of small replies).
            Self::Tcp(stream) => stream.write(buf),
            #[cfg(feature = "rustls")]
            Self::Tls(stream) => tls::write_vectored(stream, &[IoSlice::new(buf)]),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Tcp(stream) => stream.write_vectored(bufs),
            #[cfg(feature = "rustls")]
            Self::Tls(stream) => tls::write_vectored(stream, bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_held()
    }
}

impl NonBlocking for Transport {
    fn flush_held(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(_) => Ok(()),
            #[cfg(feature = "rustls")]
            Self::Tls(stream) => tls::flush_records(stream),
        }
    }

    fn holds_output(&self) -> bool {
        match self {
            Self::Tcp(_) => false,
            #[cfg(feature = "rustls")]
            Self::Tls(stream) => stream.session.wants_write(),
        }
    }

    fn input_pending(&self) -> bool {
        match self {
            Self::Tcp(_) => false,
            #[cfg(feature = "rustls")]
            Self::Tls(stream) => stream.input_pending,
        }
    }

    fn shutdown_write(&mut self) {
        match self {
            Self::Tcp(stream) => stream.shutdown_write(),
            #[cfg(feature = "rustls")]
            Self::Tls(stream) => {
                tls::close_notify(stream);
                let _ = stream.sock.shutdown(Shutdown::Write);
            }
        }
    }
}

/// rustls driven by hand over a non-blocking socket: `rustls::Stream` assumes that a
/// `WouldBlock` from the socket can be retried by calling it again, which would let pending
/// records block reading, so reads and writes here move records explicitly.
#[cfg(feature = "rustls")]
pub(crate) mod tls {
    use std::io::{self, IoSlice, Read, Write};
    use std::net::TcpStream;
    use std::ops::DerefMut;
    use std::time::Instant;

    use rustls::{Connection, ConnectionCommon, SideData};

    use super::{remaining, timeout_or, Blocking, Transport};
    use crate::{Error, Result};

    /// A TLS session, client or server, with its socket.
    pub(crate) struct Stream {
        pub(super) session: Connection,
        pub(super) sock: mio::net::TcpStream,
        /// Whether the last read returned less than it could because the end of the stream
        /// or a failure comes next: there is more to read, though the socket may be drained.
        pub(super) input_pending: bool,
        /// A failure that came after bytes the last read delivered; the next read reports it.
        failure: Option<io::Error>,
    }

    impl Stream {
        fn new(session: Connection, sock: mio::net::TcpStream) -> Self {
            Self {
                session,
                sock,
                input_pending: false,
                failure: None,
            }
        }

        /// A server session on an accepted socket; the TLS handshake happens as it is read
        /// and written.
        pub(crate) fn server(session: rustls::ServerConnection, sock: mio::net::TcpStream) -> Self {
            Self::new(session.into(), sock)
        }

        /// The read's outcome at the end of the stream: what was read, then `Ok(0)`.
        fn ended(&mut self, filled: usize) -> io::Result<usize> {
            self.input_pending = filled > 0;
            Ok(filled)
        }

        /// The read's outcome on a failure: what was read, then the failure.
        fn failed(&mut self, filled: usize, error: io::Error) -> io::Result<usize> {
            if filled == 0 {
                return Err(error);
            }
            self.failure = Some(error);
            self.input_pending = true;
            Ok(filled)
        }
    }

    /// A TLS session, client or server, over a blocking socket, for the opening
    /// handshakes: each socket read or write waits at most until the deadline, so a peer
    /// that trickles records cannot stretch the open timeout (as `rustls::Stream`, which
    /// reads until a record is whole, would let it).
    pub(crate) struct Session<C> {
        conn: C,
        sock: TcpStream,
    }

    impl<C, D> Session<C>
    where
        C: DerefMut<Target = ConnectionCommon<D>> + Into<Connection>,
        D: SideData,
    {
        pub(crate) fn new(conn: C, sock: TcpStream) -> Self {
            Self { conn, sock }
        }

        /// Runs the TLS handshake before `deadline`. A certificate the configuration does
        /// not trust, or a peer that does not speak TLS, is [`Error::Tls`]; a transport
        /// failure (the peer closed, reset) stays [`Error::Io`].
        pub(crate) fn handshake(&mut self, deadline: Option<Instant>) -> Result<()> {
            while self.conn.is_handshaking() {
                if self.conn.wants_write() {
                    self.write_records(deadline)?;
                } else if self.read_records(deadline)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    )
                    .into());
                }
            }
            self.write_records(deadline)
        }

        /// Writes every record the session holds.
        fn write_records(&mut self, deadline: Option<Instant>) -> Result<()> {
            while self.conn.wants_write() {
                self.sock.set_write_timeout(remaining(deadline)?)?;
                match self.conn.write_tls(&mut self.sock) {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(timeout_or(error)),
                }
            }
            Ok(())
        }

        /// Reads from the socket once and processes the records that came; the bytes read
        /// (`0` at the end of the stream).
        fn read_records(&mut self, deadline: Option<Instant>) -> Result<usize> {
            self.sock.set_read_timeout(remaining(deadline)?)?;
            let read = loop {
                match self.conn.read_tls(&mut self.sock) {
                    Ok(read) => break read,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(timeout_or(error)),
                }
            };
            if let Err(error) = self.conn.process_new_packets() {
                // The alert that says why, if the peer still listens.
                let _ = self.write_records(deadline);
                return Err(Error::Tls(error.to_string()));
            }
            Ok(read)
        }
    }

    impl<C, D> Blocking for Session<C>
    where
        C: DerefMut<Target = ConnectionCommon<D>> + Into<Connection>,
        D: SideData,
    {
        fn socket(&self) -> &TcpStream {
            &self.sock
        }

        fn send(&mut self, mut bytes: &[u8], deadline: Option<Instant>) -> Result<()> {
            while !bytes.is_empty() {
                // The session buffers a bounded amount of plaintext: write records out
                // whenever it is full.
                match self.conn.writer().write(bytes)? {
                    0 => self.write_records(deadline)?,
                    n => bytes = &bytes[n..],
                }
            }
            self.write_records(deadline)
        }

        fn receive(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> Result<usize> {
            loop {
                match self.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(error.into()),
                }
                // At the end of the stream, the reader reports it next time round.
                self.read_records(deadline)?;
            }
        }

        fn into_transport(self) -> io::Result<Transport> {
            let Self { conn, sock } = self;
            sock.set_read_timeout(None)?;
            sock.set_write_timeout(None)?;
            sock.set_nonblocking(true)?;
            let sock = mio::net::TcpStream::from_std(sock);
            Ok(Transport::Tls(Box::new(Stream::new(conn.into(), sock))))
        }
    }

    /// Reads decrypted bytes: those rustls holds, then records from the socket, until `buf`
    /// is full or the socket would block. So, as with plain TCP, a read shorter than `buf`
    /// means the socket is drained — unless [`Stream::input_pending`] says the end of the
    /// stream or a failure comes next: bytes decrypted before either are delivered first.
    /// `Ok(0)` at the end of the stream, with or without the peer's `close_notify` (the
    /// WebSocket closing handshake, not TLS, says whether the connection ended cleanly).
    pub(super) fn read(stream: &mut Stream, buf: &mut [u8]) -> io::Result<usize> {
        stream.input_pending = false;
        if stream.failure.is_some() {
            // What was decrypted before the failure comes first, however many reads it takes.
            let filled = drain_plaintext(stream, buf);
            return match stream.failure.take() {
                Some(error) if filled == 0 => Err(error),
                failure => {
                    stream.failure = failure;
                    stream.input_pending = true;
                    Ok(filled)
                }
            };
        }
        let mut filled = 0;
        loop {
            match stream.session.reader().read(&mut buf[filled..]) {
                Ok(0) => return stream.ended(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                    return stream.ended(filled);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return stream.failed(filled, error),
            }
            match stream.session.read_tls(&mut stream.sock) {
                // At the end of the stream, the reader reports it next time round.
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock && filled > 0 => {
                    return Ok(filled);
                }
                Err(error) => return stream.failed(filled, error),
            }
            let processed = stream.session.process_new_packets();
            // Handshake messages and alerts that processing queued (also for a failure).
            match flush_records(stream) {
                Err(error) if error.kind() != io::ErrorKind::WouldBlock => {
                    return stream.failed(filled, error);
                }
                _ => {}
            }
            if let Err(error) = processed {
                // Records decrypted before the bad one are the peer's words: deliver them.
                filled += drain_plaintext(stream, &mut buf[filled..]);
                let error = io::Error::new(io::ErrorKind::InvalidData, error);
                return stream.failed(filled, error);
            }
        }
    }

    /// Moves the plaintext rustls holds into `buf`, as much as fits; how much.
    fn drain_plaintext(stream: &mut Stream, buf: &mut [u8]) -> usize {
        let mut filled = 0;
        while filled < buf.len() {
            match stream.session.reader().read(&mut buf[filled..]) {
                Ok(n) if n > 0 => filled += n,
                _ => break,
            }
        }
        filled
    }

    /// Encrypts what fits in rustls' bounded buffer once earlier records are out, then
    /// writes records as far as the socket takes them.
    pub(super) fn write_vectored(stream: &mut Stream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        flush_records(stream)?;
        let written = stream.session.writer().write_vectored(bufs)?;
        match flush_records(stream) {
            Err(error) if error.kind() != io::ErrorKind::WouldBlock => Err(error),
            _ => Ok(written),
        }
    }

    /// Writes the records rustls holds; `WouldBlock` while some are left.
    pub(super) fn flush_records(stream: &mut Stream) -> io::Result<()> {
        while stream.session.wants_write() {
            if stream.session.write_tls(&mut stream.sock)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Sends `close_notify` and what the socket takes of it.
    pub(super) fn close_notify(stream: &mut Stream) {
        stream.session.send_close_notify();
        // Best effort: a peer that stopped reading does not get the alert.
        let _ = flush_records(stream);
    }
}
