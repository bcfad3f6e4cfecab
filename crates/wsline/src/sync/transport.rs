//! The byte streams under the sync layer: plain TCP, or TLS over TCP (feature `rustls`),
//! blocking during the opening handshake and non-blocking after it.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use super::{remaining, timeout_or};

#[cfg(feature = "rustls")]
pub(crate) mod tls;

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
