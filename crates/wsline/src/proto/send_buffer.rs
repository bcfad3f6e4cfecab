//! The bytes a connection has queued for the network.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use super::frame::FrameHeader;

/// Payloads at least this long are queued by reference instead of copied.
pub(crate) const SHARE_THRESHOLD: usize = 16 << 10;

/// A piece of the queue that is not in the coalescing buffer.
#[derive(Debug)]
enum Segment {
    /// The next `len` bytes of the coalescing buffer.
    Copied(usize),
    /// A frame header kept inline (for a shared payload), from `start` on.
    Header {
        bytes: [u8; FrameHeader::MAX_LEN],
        start: usize,
        end: usize,
    },
    /// A payload queued by reference.
    Shared(Bytes),
}

impl Segment {
    fn len(&self) -> usize {
        match self {
            Self::Copied(len) => *len,
            Self::Header { start, end, .. } => end - start,
            Self::Shared(bytes) => bytes.len(),
        }
    }
}

/// The bytes to write, in order. Small frames are copied into one coalescing buffer; a large
/// payload is queued by reference after its header, which is kept inline, so queueing either
/// costs no allocation once the buffers have grown to their working size.
///
/// It implements [`Buf`], so an I/O layer can write it with vectored writes and advance by
/// what the socket took.
#[derive(Debug, Default)]
pub struct SendBuffer {
    /// Pieces before the open run at the end of `copied`.
    segments: VecDeque<Segment>,
    /// Copied bytes: those of the `Copied` segments in order, then the open run.
    copied: BytesMut,
    /// Bytes of `copied` not yet claimed by a `Copied` segment (the open run).
    open_run: usize,
    len: usize,
}

impl SendBuffer {
    /// Space to append small writes to; report what was appended with [`SendBuffer::grew`].
    pub(crate) fn tail(&mut self) -> &mut BytesMut {
        &mut self.copied
    }

    /// Records that `n` bytes were appended to [`SendBuffer::tail`].
    pub(crate) fn grew(&mut self, n: usize) {
        self.open_run += n;
        self.len += n;
    }

    /// Closes the open run of copied bytes so that a piece can follow it.
    fn close_run(&mut self) {
        if self.open_run > 0 {
            self.segments.push_back(Segment::Copied(self.open_run));
            self.open_run = 0;
        }
    }

    /// Queues `header` then `payload` without copying the payload.
    pub(crate) fn push_frame_shared(&mut self, header: &FrameHeader, payload: Bytes) {
        self.close_run();
        let mut bytes = [0; FrameHeader::MAX_LEN];
        let end = header.encoded_len();
        header.encode(&mut &mut bytes[..]);
        self.segments.push_back(Segment::Header {
            bytes,
            start: 0,
            end,
        });
        self.len += end + payload.len();
        self.segments.push_back(Segment::Shared(payload));
    }

    /// Queues already encoded bytes without copying them.
    pub(crate) fn push_shared(&mut self, bytes: Bytes) {
        self.close_run();
        self.len += bytes.len();
        self.segments.push_back(Segment::Shared(bytes));
    }

    /// Takes the next contiguous piece.
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        let piece = match self.segments.pop_front() {
            Some(Segment::Copied(len)) => self.copied.split_to(len).freeze(),
            Some(Segment::Header { bytes, start, end }) => {
                Bytes::copy_from_slice(&bytes[start..end])
            }
            Some(Segment::Shared(bytes)) => bytes,
            None if self.open_run > 0 => {
                self.open_run = 0;
                self.copied.split().freeze()
            }
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

    fn segment_bytes<'a>(&'a self, segment: &'a Segment, copied_offset: usize) -> &'a [u8] {
        match segment {
            Segment::Copied(len) => &self.copied[copied_offset..copied_offset + len],
            Segment::Header { bytes, start, end } => &bytes[*start..*end],
            Segment::Shared(bytes) => bytes,
        }
    }
}

impl Buf for SendBuffer {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.segments.front() {
            Some(segment) => self.segment_bytes(segment, 0),
            None => &self.copied[..self.open_run],
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of the send buffer");
        self.len -= cnt;
        while cnt > 0 {
            let Some(front) = self.segments.front_mut() else {
                self.copied.advance(cnt);
                self.open_run -= cnt;
                break;
            };
            let take = cnt.min(front.len());
            match front {
                Segment::Copied(len) => {
                    self.copied.advance(take);
                    *len -= take;
                }
                Segment::Header { start, .. } => *start += take,
                Segment::Shared(bytes) => bytes.advance(take),
            }
            if front.len() == 0 {
                self.segments.pop_front();
            }
            cnt -= take;
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let mut copied_offset = 0;
        for segment in &self.segments {
            if n == dst.len() {
                return n;
            }
            let bytes = self.segment_bytes(segment, copied_offset);
            if let Segment::Copied(len) = segment {
                copied_offset += len;
            }
            if !bytes.is_empty() {
                dst[n] = IoSlice::new(bytes);
                n += 1;
            }
        }
        if n < dst.len() && self.open_run > 0 {
            dst[n] = IoSlice::new(&self.copied[copied_offset..copied_offset + self.open_run]);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Opcode, Rsv};

    /// Queues `pieces`: short ones copied, long ones shared behind a 2-byte header.
    fn buffer_with(pieces: &[&'static [u8]]) -> (SendBuffer, Vec<u8>) {
        let mut buffer = SendBuffer::default();
        let mut expected = Vec::new();
        for piece in pieces {
            if piece.len() > 3 {
                let header = FrameHeader {
                    fin: true,
                    rsv: Rsv::NONE,
                    opcode: Opcode::Binary,
                    mask: None,
                    payload_len: piece.len() as u64,
                };
                header.encode(&mut expected);
                buffer.push_frame_shared(&header, Bytes::from_static(piece));
            } else {
                buffer.tail().extend_from_slice(piece);
                buffer.grew(piece.len());
            }
            expected.extend_from_slice(piece);
        }
        (buffer, expected)
    }

    #[test]
    fn pop_keeps_order_across_shared_and_copied_pieces() {
        let (mut buffer, expected) = buffer_with(&[b"ab", b"cdefg", b"hi", b"j", b"klmnop"]);
        assert_eq!(buffer.len(), expected.len());
        let mut out = Vec::new();
        while let Some(piece) = buffer.pop() {
            out.extend_from_slice(&piece);
        }
        assert_eq!(out, expected);
        assert!(buffer.is_empty());
    }

    #[test]
    fn partial_advances_match_a_flat_copy() {
        let (mut buffer, expected) = buffer_with(&[b"ab", b"cdefg", b"hi", b"klmnop", b"q"]);
        let mut out = Vec::new();
        while buffer.has_remaining() {
            let take = buffer.chunk().len().min(3);
            out.extend_from_slice(&buffer.chunk()[..take]);
            buffer.advance(take);
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn vectored_chunks_cover_everything_and_advance_across_them() {
        let (mut buffer, expected) = buffer_with(&[b"ab", b"cdefg", b"hi", b"klmnop", b"q"]);
        let mut slices = [IoSlice::new(&[]); 16];
        let n = buffer.chunks_vectored(&mut slices);
        let flat: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(flat, expected);
        buffer.advance(5);
        let mut rest = Vec::new();
        while let Some(piece) = buffer.pop() {
            rest.extend_from_slice(&piece);
        }
        assert_eq!(rest, expected[5..]);
    }

    #[test]
    fn vectored_chunks_stop_at_the_slots_given() {
        let (buffer, _) = buffer_with(&[b"ab", b"cdefg", b"hi"]);
        let mut slices = [IoSlice::new(&[]); 2];
        assert_eq!(buffer.chunks_vectored(&mut slices), 2);
        assert_eq!(&*slices[0], b"ab");
    }
}
