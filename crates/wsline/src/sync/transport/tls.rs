//! rustls driven by hand over a non-blocking socket: `rustls::Stream` assumes that a
//! `WouldBlock` from the socket can be retried by calling it again, which would let pending
//! records block reading, so reads and writes here move records explicitly.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::ops::DerefMut;
use std::time::Instant;

use rustls::{Connection, ConnectionCommon, SideData};

use super::{Blocking, Transport};
use crate::sync::{remaining, timeout_or};
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

#[cfg(test)]
mod tests {
    use std::io::{self, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    use super::{read, Session, Stream};
    use crate::proto::Failure;
    use crate::sync::transport::{Blocking, Transport};
    use crate::Error;

    fn deadline() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(5))
    }

    /// A server and a client configuration for one self-signed `localhost` certificate.
    fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = certified.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(key))
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A client session past its TLS handshake with a server session on a thread of its
    /// own, which `serve` then drives.
    fn connected(
        serve: impl FnOnce(Session<rustls::ServerConnection>) + Send + 'static,
    ) -> (Session<rustls::ClientConnection>, thread::JoinHandle<()>) {
        let (server_config, client_config) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(server_config).unwrap();
            let mut session = Session::new(conn, sock);
            session.handshake(deadline()).unwrap();
            serve(session);
        });
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(client_config, name).unwrap();
        let mut client = Session::new(conn, TcpStream::connect(addr).unwrap());
        client.handshake(deadline()).unwrap();
        (client, server)
    }

    /// The non-blocking stream of a blocking session.
    fn non_blocking(session: Session<rustls::ClientConnection>) -> Box<Stream> {
        match session.into_transport().unwrap() {
            Transport::Tls(stream) => stream,
            Transport::Tcp(_) => panic!("a TLS session became plain TCP"),
        }
    }

    /// [`read`], retried while the socket would block.
    fn read_ready(stream: &mut Stream, buf: &mut [u8]) -> io::Result<usize> {
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            match read(stream, buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < give_up, "nothing to read");
                    thread::sleep(Duration::from_millis(5));
                }
                result => return result,
            }
        }
    }

    #[test]
    fn blocking_sessions_carry_bytes_both_ways_after_the_handshake() {
        let (mut client, server) = connected(|mut session| {
            let mut buf = [0; 64];
            let n = session.receive(&mut buf, deadline()).unwrap();
            session.send(&buf[..n], deadline()).unwrap();
        });
        client.send(b"ping", deadline()).unwrap();
        let mut buf = [0; 64];
        let n = client.receive(&mut buf, deadline()).unwrap();
        assert_eq!(&buf[..n], b"ping");
        server.join().unwrap();
    }

    #[test]
    fn a_read_delivers_the_bytes_before_close_notify_then_the_end_of_the_stream() {
        let (client, server) = connected(|mut session| {
            session.send(b"last words", deadline()).unwrap();
            session.conn.send_close_notify();
            session.write_records(deadline()).unwrap();
        });
        // Everything the server wrote is in the client's socket before it reads.
        server.join().unwrap();
        let mut stream = non_blocking(client);
        let mut buf = [0; 64];
        assert_eq!(read_ready(&mut stream, &mut buf).unwrap(), 10);
        assert_eq!(&buf[..10], b"last words");
        assert!(
            stream.input_pending,
            "the end of the stream is still to be read"
        );
        assert_eq!(read_ready(&mut stream, &mut buf).unwrap(), 0);
        assert!(!stream.input_pending);
    }

    #[test]
    fn a_read_delivers_the_bytes_before_a_bad_record_then_the_failure() {
        let (client, server) = connected(|mut session| {
            session.send(b"good bytes", deadline()).unwrap();
            // An application-data record whose ciphertext does not decrypt.
            session
                .sock
                .write_all(b"\x17\x03\x03\x00\x05junk!")
                .unwrap();
        });
        server.join().unwrap();
        let mut stream = non_blocking(client);
        let mut buf = [0; 64];
        assert_eq!(read_ready(&mut stream, &mut buf).unwrap(), 10);
        assert_eq!(&buf[..10], b"good bytes");
        assert!(stream.input_pending, "the failure is still to be read");
        let error = read_ready(&mut stream, &mut buf).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_handshake_the_peer_never_answers_ends_at_the_deadline() {
        let (_, client_config) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(client_config, name).unwrap();
        let mut client = Session::new(conn, sock);
        let started = Instant::now();
        let result = client.handshake(Some(started + Duration::from_millis(100)));
        assert!(
            matches!(result, Err(Error::Timeout(Failure::OpenTimeout))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
