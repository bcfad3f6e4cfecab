//! [`MaybeTlsStream`]: TCP, TLS over TCP, or a stream of an HTTP/2 connection, for the
//! client and the server.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ::tokio::net::TcpStream;

/// The stream under the connections that [`connect`](super::connect) opens and
/// [`serve`](super::serve) accepts: TCP for `ws://`, TLS over TCP for `wss://`, or one
/// stream of an HTTP/2 connection (RFC 8441).
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP, client or server side (feature `rustls`).
    #[cfg(feature = "rustls")]
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// One stream of an HTTP/2 connection, over TCP or TLS, that an extended CONNECT opened
    /// (feature `http2`).
    #[cfg(feature = "http2")]
    Http2(Box<Http2Stream>),
}

impl MaybeTlsStream {
    /// The TCP stream under it (socket options); `None` for an HTTP/2 stream, which shares
    /// its connection with others.
    #[must_use]
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Self::Tcp(stream) => Some(stream),
            #[cfg(feature = "rustls")]
            Self::Tls(stream) => Some(stream.get_ref().0),
            #[cfg(feature = "http2")]
            Self::Http2(_) => None,
        }
    }

    /// The address of the other end of the connection (of the HTTP/2 connection, for one
    /// of its streams).
    #[must_use]
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            #[cfg(feature = "http2")]
            Self::Http2(stream) => stream.peer_addr,
            _ => self.tcp().and_then(|tcp| tcp.peer_addr().ok()),
        }
    }

    /// Whether the TLS handshake picked HTTP/2 (`h2`) by ALPN: the connection speaks HTTP/2
    /// from its first byte. `false` for plain TCP.
    #[cfg(feature = "http2")]
    pub(crate) fn negotiated_h2(&self) -> bool {
        match self {
            #[cfg(feature = "rustls")]
            Self::Tls(stream) => stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()),
            _ => false,
        }
    }

    /// Whether this is a stream of an HTTP/2 connection (RFC 8441), not a connection of its
    /// own.
    #[must_use]
    pub fn is_http2(&self) -> bool {
        match self {
            #[cfg(feature = "http2")]
            Self::Http2(_) => true,
            _ => false,
        }
    }
}

/// One stream of an HTTP/2 connection that carries a WebSocket (feature `http2`).
///
/// On the server, writes are gathered or cut to 16 KiB (a full DATA frame) and each waits
/// for HTTP/2 flow control to grant it room (the stream's and the connection's windows, and
/// the 64 KiB h2 may buffer for the stream), so the WebSocket's send buffer (its high-water
/// mark, the server's send budget) holds the rest, as over TCP; reading hands the window
/// back as the bytes are taken. On the client, over hyper's upgraded stream, writes are cut
/// to 16 KiB and hyper's send task holds one at a time.
#[cfg(feature = "http2")]
pub struct Http2Stream {
    io: Http2Io,
    peer_addr: Option<SocketAddr>,
}

/// How an [`Http2Stream`] reaches its h2 stream.
#[cfg(feature = "http2")]
enum Http2Io {
    /// Through hyper's upgraded connection (the client).
    Upgraded(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>),
    /// Its two halves, driven here (the server).
    Stream {
        send: h2::SendStream<bytes::Bytes>,
        recv: h2::RecvStream,
        /// Received and not yet read.
        unread: bytes::Bytes,
    },
}

#[cfg(feature = "http2")]
impl Http2Stream {
    pub(crate) fn new(upgraded: hyper::upgrade::Upgraded, peer_addr: Option<SocketAddr>) -> Self {
        Self {
            io: Http2Io::Upgraded(hyper_util::rt::TokioIo::new(upgraded)),
            peer_addr,
        }
    }

    /// The stream of an extended CONNECT the server answered.
    pub(crate) fn on_stream(
        send: h2::SendStream<bytes::Bytes>,
        recv: h2::RecvStream,
        peer_addr: SocketAddr,
    ) -> Self {
        Self {
            io: Http2Io::Stream {
                send,
                recv,
                unread: bytes::Bytes::new(),
            },
            peer_addr: Some(peer_addr),
        }
    }
}

#[cfg(feature = "http2")]
impl std::fmt::Debug for Http2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Stream")
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

/// An h2 error as an I/O error when writing, where even the stream's clean end is one: a
/// stream ended or closed (or a write after that, h2's user error) is a broken pipe, a reset
/// with an error code a reset connection.
#[cfg(feature = "http2")]
fn broken(error: h2::Error) -> io::Error {
    match error.reason() {
        Some(h2::Reason::NO_ERROR | h2::Reason::CANCEL | h2::Reason::STREAM_CLOSED) => {
            io::Error::new(io::ErrorKind::BrokenPipe, error)
        }
        Some(_) => io::Error::new(io::ErrorKind::ConnectionReset, error),
        None if error.is_io() => error
            .into_io()
            .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into()),
        None => io::Error::new(io::ErrorKind::BrokenPipe, error),
    }
}

/// An h2 error when reading: a reset or GOAWAY with `NO_ERROR` or `CANCEL` is the end of
/// the stream (`None`), as hyper reads it; anything else as [`broken`].
#[cfg(feature = "http2")]
fn h2_io_error(error: h2::Error) -> Option<io::Error> {
    match error.reason() {
        Some(h2::Reason::NO_ERROR | h2::Reason::CANCEL) => None,
        _ => Some(broken(error)),
    }
}

#[cfg(feature = "http2")]
impl AsyncRead for Http2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (recv, unread) = match &mut self.io {
            Http2Io::Upgraded(io) => return Pin::new(io).poll_read(cx, buf),
            Http2Io::Stream { recv, unread, .. } => (recv, unread),
        };
        while unread.is_empty() {
            match std::task::ready!(recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => *unread = data,
                Some(Err(error)) => {
                    return Poll::Ready(h2_io_error(error).map_or(Ok(()), Err));
                }
            }
        }
        let n = unread.len().min(buf.remaining());
        buf.put_slice(&unread.split_to(n));
        // The window is the peer's to fill again; an error here means the stream is gone,
        // which the next read reports.
        let _ = recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "http2")]
impl AsyncWrite for Http2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Gathers up to 16 KiB of `bufs` into one DATA frame's worth:
    /// the bytes are copied for h2 anyway, and a frame header (or a small message) sent on
    /// its own would be a DATA frame, and a `writev`, of its own.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let send = match &mut self.io {
            Http2Io::Upgraded(io) => {
                let buf = bufs
                    .iter()
                    .find(|buf| !buf.is_empty())
                    .map_or(&[][..], |buf| &buf[..]);
                let buf = &buf[..buf.len().min(HTTP2_WRITE_CHUNK)];
                return Pin::new(io).poll_write(cx, buf);
            }
            Http2Io::Stream { send, .. } => send,
        };
        let len = bufs
            .iter()
            .map(|buf| buf.len())
            .sum::<usize>()
            .min(HTTP2_WRITE_CHUNK);
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        // Room is asked for only with bytes to send: capacity reserved while idle would
        // hold part of the connection's window from the other streams.
        if send.capacity() == 0 {
            send.reserve_capacity(len);
            loop {
                match send.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(0))) => {}
                    Poll::Ready(Some(Ok(_))) => break,
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(broken(error))),
                    Poll::Ready(None) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                    Poll::Pending => {
                        // Waiting for the window: a reset must still wake the writer.
                        if let Poll::Ready(reset) = send.poll_reset(cx) {
                            let error =
                                reset.map_or_else(broken, |reason| broken(h2::Error::from(reason)));
                            return Poll::Ready(Err(error));
                        }
                        return Poll::Pending;
                    }
                }
            }
        }
        let n = send.capacity().min(len);
        let mut data = bytes::BytesMut::with_capacity(n);
        for buf in bufs {
            let take = buf.len().min(n - data.len());
            data.extend_from_slice(&buf[..take]);
            if data.len() == n {
                break;
            }
        }
        send.send_data(data.freeze(), false).map_err(broken)?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        matches!(self.io, Http2Io::Stream { .. })
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Http2Io::Upgraded(io) => Pin::new(io).poll_flush(cx),
            // The connection writes what h2 holds, in its own time.
            Http2Io::Stream { .. } => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Http2Io::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
            Http2Io::Stream { send, .. } => {
                // END_STREAM; a stream already ended or reset has nothing left to end.
                let _ = send.send_data(bytes::Bytes::new(), true);
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// The most one write hands to an HTTP/2 stream (see [`Http2Stream`]).
#[cfg(feature = "http2")]
pub(crate) const HTTP2_WRITE_CHUNK: usize = 16 << 10;

/// The least that [`ReadAhead`] asks of the socket at a time: a 16 KiB message in two
/// HTTP/2 DATA frames, with their headers, in one read.
#[cfg(feature = "http2")]
const READ_AHEAD: usize = 32 << 10;

/// The socket under an HTTP/2 connection, read ahead: h2 reads into whatever room its
/// buffer has left (often under 8 KiB), which would cost two or three `recv`s per 16 KiB
/// WebSocket message. Reads smaller than [`READ_AHEAD`] go through a buffer of that size
/// (allocated for the connection's life); larger ones straight to the caller. It starts
/// with the bytes read before h2 took over (the preface's start), if any.
#[cfg(feature = "http2")]
pub(crate) struct ReadAhead<S> {
    stream: S,
    buf: Vec<u8>,
    /// `buf[at..end]` is read and not yet handed on.
    at: usize,
    end: usize,
}

#[cfg(feature = "http2")]
impl<S> ReadAhead<S> {
    pub(crate) fn new(stream: S, prefix: Vec<u8>) -> Self {
        let end = prefix.len();
        Self {
            stream,
            buf: prefix,
            at: 0,
            end,
        }
    }
}

#[cfg(feature = "http2")]
impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at == this.end {
            if out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.stream).poll_read(cx, out);
            }
            if this.buf.len() < READ_AHEAD {
                this.buf = vec![0; READ_AHEAD];
            }
            let mut ahead = ReadBuf::new(&mut this.buf);
            std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, &mut ahead))?;
            (this.at, this.end) = (0, ahead.filled().len());
        }
        let n = (this.end - this.at).min(out.remaining());
        out.put_slice(&this.buf[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "http2")]
impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Forwards a method call to the stream in either variant.
macro_rules! either {
    ($self:ident, $stream:ident => $call:expr) => {
        match $self.get_mut() {
            MaybeTlsStream::Tcp($stream) => $call,
            #[cfg(feature = "rustls")]
            MaybeTlsStream::Tls($stream) => $call,
            #[cfg(feature = "http2")]
            MaybeTlsStream::Http2($stream) => $call,
        }
    };
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either!(self, stream => Pin::new(stream).poll_read(cx, buf))
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either!(self, stream => Pin::new(stream).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either!(self, stream => Pin::new(stream).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(stream) => stream.is_write_vectored(),
            #[cfg(feature = "rustls")]
            Self::Tls(stream) => stream.is_write_vectored(),
            #[cfg(feature = "http2")]
            Self::Http2(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, stream => Pin::new(stream).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, stream => Pin::new(stream).poll_shutdown(cx))
    }
}

#[cfg(all(test, feature = "http2"))]
mod tests {
    use ::tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[::tokio::test]
    async fn read_ahead_hands_on_the_prefix_then_reads_the_socket_in_big_pieces() {
        let (mut peer, stream) = ::tokio::io::duplex(1 << 20);
        let mut ahead = ReadAhead::new(stream, b"PRI ".to_vec());
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&sent).await.unwrap();
        drop(peer);
        let mut small = [0; 3];
        ahead.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"PRI");
        let mut received = Vec::new();
        let mut piece = [0; 7000];
        loop {
            let n = ahead.read(&mut piece).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&piece[..n]);
            // A small read is served from one big read of the socket.
            assert!(ahead.end <= READ_AHEAD);
        }
        assert_eq!(received[0], b' ');
        assert_eq!(&received[1..], &sent[..]);

        let (mut peer, stream) = ::tokio::io::duplex(1 << 20);
        let mut ahead = ReadAhead::new(stream, Vec::new());
        peer.write_all(&sent).await.unwrap();
        let mut big = vec![0; READ_AHEAD];
        let n = ahead.read(&mut big).await.unwrap();
        assert_eq!(&big[..n], &sent[..n]);
        assert!(
            ahead.buf.is_empty(),
            "a big read goes straight to the caller"
        );
    }
}
