//! The bytes a connection has queued for the network.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Payloads at least this long are queued by reference instead of copied.
pub(crate) const SHARE_THRESHOLD: usize = 16 << 10;

/// The bytes to write, in order: shared chunks (large payloads queued without a copy), then a
/// tail where small frames are coalesced. It implements [`Buf`], so an I/O layer can write it
/// with vectored writes and advance by what the socket took.
#[derive(Debug, Default)]
pub struct SendBuffer {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl SendBuffer {
    /// Space to append small writes to.
    pub(crate) fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Records that `n` bytes were appended to [`SendBuffer::tail`].
    pub(crate) fn grew(&mut self, n: usize) {
        self.len += n;
    }

    /// Queues `bytes` after everything else without copying them.
    pub(crate) fn push_shared(&mut self, bytes: Bytes) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.len += bytes.len();
        self.chunks.push_back(bytes);
    }

    /// Takes the next contiguous piece.
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        let piece = match self.chunks.pop_front() {
            Some(chunk) => chunk,
            None if !self.tail.is_empty() => self.tail.split().freeze(),
            None => return None,
        };
        self.len -= piece.len();
        Some(piece)
    }

    /// Whether nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes queued.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Buf for SendBuffer {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.chunks
            .front()
            .map_or(&self.tail[..], |chunk| &chunk[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of the send buffer");
        self.len -= cnt;
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                self.tail.advance(cnt);
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let pieces = self
            .chunks
            .iter()
            .map(|chunk| &chunk[..])
            .chain(std::iter::once(&self.tail[..]))
            .filter(|piece| !piece.is_empty());
        let mut n = 0;
        for (slot, piece) in dst.iter_mut().zip(pieces) {
            *slot = IoSlice::new(piece);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer_with(pieces: &[&'static [u8]]) -> SendBuffer {
        let mut buffer = SendBuffer::default();
        for piece in pieces {
            if piece.len() > 3 {
                buffer.push_shared(Bytes::from_static(piece));
            } else {
                buffer.tail().extend_from_slice(piece);
                buffer.grew(piece.len());
            }
        }
        buffer
    }

    #[test]
    fn keeps_order_across_shared_and_copied_pieces() {
        let mut buffer = buffer_with(&[b"ab", b"cdefg", b"hi", b"j"]);
        assert_eq!(buffer.len(), 10);
        let mut out = Vec::new();
        while let Some(piece) = buffer.pop() {
            out.extend_from_slice(&piece);
        }
        assert_eq!(out, b"abcdefghij");
        assert!(buffer.is_empty());
    }

    #[test]
    fn partial_advances_match_a_flat_copy() {
        let mut buffer = buffer_with(&[b"ab", b"cdefg", b"hi"]);
        let mut out = Vec::new();
        while buffer.has_remaining() {
            let take = buffer.chunk().len().min(3);
            out.extend_from_slice(&buffer.chunk()[..take]);
            buffer.advance(take);
        }
        assert_eq!(out, b"abcdefghi");
    }

    #[test]
    fn vectored_chunks_cover_everything() {
        let buffer = buffer_with(&[b"ab", b"cdefg", b"hi"]);
        let mut slices = [IoSlice::new(&[]); 8];
        let n = buffer.chunks_vectored(&mut slices);
        let flat: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(flat, b"abcdefghi");
    }
}
