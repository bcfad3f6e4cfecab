//! The write path over a vectored buffer: how the bytes a connection queued are offered to
//! a stream and consumed as it takes them, the same for a blocking, a non-blocking and an
//! async stream.

use std::io::{self, IoSlice};

use bytes::Buf;

/// Most slices offered to one vectored write.
pub(crate) const MAX_IOVECS: usize = 64;

/// Offers the queued bytes to a stream once and consumes what it takes.
///
/// `write` gets one slice when the first chunk is all that is queued or the stream does not
/// write vectored (`vectored` is false), else up to [`MAX_IOVECS`] slices in order. A
/// stream writes a single slice with a plain `write` (one `send`, the hot path of small
/// messages), several with `write_vectored`. `Interrupted` is retried.
///
/// Returns the `n > 0` bytes taken, or `0` when nothing was queued (then `write` is not
/// called). An async stream answers `Pending` as `WouldBlock`; an error consumes nothing.
///
/// # Errors
/// The stream's error (`WouldBlock` when it is full); `WriteZero` if it took nothing of a
/// non-empty offer.
pub(crate) fn write_queued(
    queued: &mut impl Buf,
    vectored: bool,
    mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
) -> io::Result<usize> {
    if !queued.has_remaining() {
        return Ok(0);
    }
    loop {
        let written = if !vectored || queued.chunk().len() == queued.remaining() {
            write(&[IoSlice::new(queued.chunk())])
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = queued.chunks_vectored(&mut slices);
            write(&slices[..count])
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                queued.advance(n);
                return Ok(n);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, IoSlice};

    use bytes::Buf;

    use super::write_queued;

    /// A stream that records the slices of each offer and answers with `answer(offered)`.
    struct Stream<F> {
        offers: Vec<Vec<Vec<u8>>>,
        answer: F,
    }

    impl<F: FnMut(usize) -> io::Result<usize>> Stream<F> {
        fn new(answer: F) -> Self {
            Self {
                offers: Vec::new(),
                answer,
            }
        }

        fn write(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
            self.offers
                .push(slices.iter().map(|slice| slice.to_vec()).collect());
            (self.answer)(slices.iter().map(|slice| slice.len()).sum())
        }
    }

    fn takes_all(offered: usize) -> io::Result<usize> {
        Ok(offered)
    }

    #[test]
    fn one_chunk_is_offered_as_one_slice_and_consumed_as_far_as_taken() {
        let mut queued: &[u8] = b"hello";
        let mut stream = Stream::new(|_| Ok(3));
        assert_eq!(
            (write_queued(&mut queued, true, |s| stream.write(s))).unwrap(),
            3
        );
        assert_eq!(stream.offers, [vec![b"hello".to_vec()]]);
        assert_eq!(queued, b"lo");
    }

    #[test]
    fn several_chunks_are_offered_together_to_a_vectored_stream() {
        let mut queued = (&b"head"[..]).chain(&b"payload"[..]);
        let mut stream = Stream::new(takes_all);
        assert_eq!(
            (write_queued(&mut queued, true, |s| stream.write(s))).unwrap(),
            11
        );
        assert_eq!(stream.offers, [vec![b"head".to_vec(), b"payload".to_vec()]]);
        assert!(!queued.has_remaining());
    }

    #[test]
    fn a_stream_that_does_not_write_vectored_gets_the_first_chunk_alone() {
        let mut queued = (&b"head"[..]).chain(&b"payload"[..]);
        let mut stream = Stream::new(takes_all);
        assert_eq!(
            (write_queued(&mut queued, false, |s| stream.write(s))).unwrap(),
            4
        );
        assert_eq!(stream.offers, [vec![b"head".to_vec()]]);
        assert_eq!(queued.remaining(), 7);
    }

    #[test]
    fn a_stream_that_takes_nothing_is_write_zero_and_consumes_nothing() {
        let mut queued: &[u8] = b"hello";
        let mut stream = Stream::new(|_| Ok(0));
        let result = write_queued(&mut queued, true, |s| stream.write(s));
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::WriteZero);
        assert_eq!(queued, b"hello");
    }

    #[test]
    fn an_interrupted_write_is_retried() {
        let mut queued: &[u8] = b"hello";
        let mut interrupted = false;
        let mut stream = Stream::new(|offered| {
            if interrupted {
                return Ok(offered);
            }
            interrupted = true;
            Err(io::ErrorKind::Interrupted.into())
        });
        assert_eq!(
            (write_queued(&mut queued, true, |s| stream.write(s))).unwrap(),
            5
        );
        assert_eq!(stream.offers.len(), 2);
        assert!(queued.is_empty());
    }

    #[test]
    fn a_full_stream_would_block_and_consumes_nothing() {
        let mut queued: &[u8] = b"hello";
        let mut stream = Stream::new(|_| Err(io::ErrorKind::WouldBlock.into()));
        let result = write_queued(&mut queued, true, |s| stream.write(s));
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(queued, b"hello");
    }

    #[test]
    fn nothing_queued_writes_nothing() {
        let mut queued: &[u8] = b"";
        let mut stream = Stream::new(takes_all);
        assert_eq!(
            (write_queued(&mut queued, true, |s| stream.write(s))).unwrap(),
            0
        );
        assert!(stream.offers.is_empty());
    }
}
