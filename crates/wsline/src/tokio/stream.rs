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
/// hyper takes every write to it whole, whatever the flow-control window, so writes are cut
/// to 16 KiB: the WebSocket's send buffer (its high-water mark, the server's
/// send budget) holds the rest, as over TCP.
#[cfg(feature = "http2")]
pub struct Http2Stream {
    io: hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>,
    peer_addr: Option<SocketAddr>,
}

#[cfg(feature = "http2")]
impl Http2Stream {
    pub(crate) fn new(upgraded: hyper::upgrade::Upgraded, peer_addr: Option<SocketAddr>) -> Self {
        Self {
            io: hyper_util::rt::TokioIo::new(upgraded),
            peer_addr,
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

#[cfg(feature = "http2")]
impl AsyncRead for Http2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

#[cfg(feature = "http2")]
impl AsyncWrite for Http2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let buf = &buf[..buf.len().min(HTTP2_WRITE_CHUNK)];
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The most one write hands to an HTTP/2 stream (see [`Http2Stream`]).
#[cfg(feature = "http2")]
pub(crate) const HTTP2_WRITE_CHUNK: usize = 16 << 10;

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
            // One write at a time, each at most HTTP2_WRITE_CHUNK.
            #[cfg(feature = "http2")]
            Self::Http2(_) => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, stream => Pin::new(stream).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, stream => Pin::new(stream).poll_shutdown(cx))
    }
}
