//! Frames (RFC 6455 §5): opcodes, headers, masking, close payloads, and a buffered codec.
//!
//! [`Connection`](crate::proto::Connection) parses frames incrementally on its own, payload
//! bytes streaming straight into the message being assembled; [`Frame`] is the standalone
//! codec for tools, tests and fuzzing that want whole frames.

mod close;
mod header;
mod mask;
mod opcode;

use bytes::{Buf, Bytes, BytesMut};

pub(crate) use close::truncate_utf8;
pub use close::{CloseCode, CloseFrame, MAX_CLOSE_REASON_LEN};
pub use header::{FrameHeader, Rsv, MAX_CONTROL_PAYLOAD_LEN};
pub use mask::{apply_mask, apply_mask_scalar};
pub use opcode::Opcode;

use crate::proto::error::ProtocolError;

/// The most payload capacity [`Frame::decode`] reserves ahead of the bytes received.
const MAX_RESERVE_AHEAD: usize = 64 << 10;

/// A whole frame: header fields and an unmasked payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Whether this is the final fragment of a message.
    pub fin: bool,
    /// The reserved bits.
    pub rsv: Rsv,
    /// What the payload means.
    pub opcode: Opcode,
    /// The payload, unmasked.
    pub payload: Bytes,
}

impl Frame {
    /// A final frame with no reserved bits.
    pub fn new(opcode: Opcode, payload: impl Into<Bytes>) -> Self {
        Self {
            fin: true,
            rsv: Rsv::NONE,
            opcode,
            payload: payload.into(),
        }
    }

    /// The header this frame is sent with, masked with `mask` if given.
    #[must_use]
    pub fn header(&self, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: self.fin,
            rsv: self.rsv,
            opcode: self.opcode,
            mask,
            payload_len: self.payload.len() as u64,
        }
    }

    /// Appends the frame to `out`, masking the payload with `mask` if given.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use wsline::proto::{Frame, Opcode};
    /// let mut out = BytesMut::new();
    /// Frame::new(Opcode::Text, "Hello").encode(Some([0x37, 0xfa, 0x21, 0x3d]), &mut out);
    /// // RFC 6455 §5.7: a masked text message containing "Hello".
    /// assert_eq!(&out[..], b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
    /// ```
    pub fn encode(&self, mask: Option<[u8; 4]>, out: &mut BytesMut) {
        let header = self.header(mask);
        out.reserve(header.encoded_len() + self.payload.len());
        header.encode(out);
        let start = out.len();
        out.extend_from_slice(&self.payload);
        if let Some(key) = mask {
            apply_mask(&mut out[start..], key, 0);
        }
    }

    /// Takes one whole frame off the front of `buf`, unmasking its payload in place: a
    /// frame-level decoder for tools, tests and fuzzing. A [`Connection`](crate::proto::Connection)
    /// does not use it: it reads incrementally (payloads stream into the message being
    /// reassembled, through the extension that decodes it); both parse headers with
    /// [`FrameHeader::parse`], which is where the RFC's header rules live.
    ///
    /// Returns `Ok(None)` and leaves `buf` untouched until the whole frame is there.
    ///
    /// # Errors
    /// Whatever [`FrameHeader::parse`] rejects, and
    /// [`ProtocolError::FrameTooBig`] for a payload longer than `max_payload_len` (or than
    /// memory can hold), reported as soon as the header arrives so that a huge length claim
    /// costs nothing. While waiting for a payload, at most 64 KiB are reserved ahead of the
    /// bytes received.
    pub fn decode(buf: &mut BytesMut, max_payload_len: u64) -> Result<Option<Self>, ProtocolError> {
        let Some((header, header_len)) = FrameHeader::parse(buf)? else {
            return Ok(None);
        };
        if header.payload_len > max_payload_len {
            return Err(ProtocolError::FrameTooBig {
                size: header.payload_len,
                limit: max_payload_len,
            });
        }
        let Ok(payload_len) = usize::try_from(header.payload_len) else {
            return Err(ProtocolError::FrameTooBig {
                size: header.payload_len,
                limit: usize::MAX as u64,
            });
        };
        let received = buf.len() - header_len;
        if received < payload_len {
            // Room for the rest, but never more than a bounded step ahead of the bytes that
            // arrived: a length claim alone allocates nothing large.
            buf.reserve((payload_len - received).min(MAX_RESERVE_AHEAD));
            return Ok(None);
        }
        // Advancing, unlike splitting off the header, touches no reference count.
        buf.advance(header_len);
        let mut payload = buf.split_to(payload_len);
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        Ok(Some(Self {
            fin: header.fin,
            rsv: header.rsv,
            opcode: header.opcode,
            payload: payload.freeze(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn encoded(frame: &Frame, mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame.encode(mask, &mut out);
        out.to_vec()
    }

    #[test]
    fn rfc6455_5_7_unmasked_text() {
        let frame = Frame::new(Opcode::Text, "Hello");
        assert_eq!(encoded(&frame, None), b"\x81\x05Hello");
    }

    #[test]
    fn rfc6455_5_7_masked_text() {
        let frame = Frame::new(Opcode::Text, "Hello");
        assert_eq!(
            encoded(&frame, Some(KEY)),
            b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
        );
    }

    #[test]
    fn rfc6455_5_7_fragmented_text() {
        let first = Frame {
            fin: false,
            ..Frame::new(Opcode::Text, "Hel")
        };
        let last = Frame::new(Opcode::Continuation, "lo");
        assert_eq!(encoded(&first, None), b"\x01\x03Hel");
        assert_eq!(encoded(&last, None), b"\x80\x02lo");
    }

    #[test]
    fn rfc6455_5_7_ping_and_masked_pong() {
        let ping = Frame::new(Opcode::Ping, "Hello");
        assert_eq!(encoded(&ping, None), b"\x89\x05Hello");
        let pong = Frame::new(Opcode::Pong, "Hello");
        assert_eq!(
            encoded(&pong, Some(KEY)),
            b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
        );
    }

    #[test]
    fn rfc6455_5_7_256_byte_and_64_kib_binary() {
        let frame = Frame::new(Opcode::Binary, vec![0u8; 256]);
        assert_eq!(encoded(&frame, None)[..4], [0x82, 0x7E, 0x01, 0x00]);
        let frame = Frame::new(Opcode::Binary, vec![0u8; 65_536]);
        assert_eq!(
            encoded(&frame, None)[..10],
            [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0, 0]
        );
    }

    #[test]
    fn decode_waits_for_the_whole_payload() {
        let mut buf = BytesMut::from(&b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f"[..]);
        assert_eq!(Frame::decode(&mut buf, 1 << 20).unwrap(), None);
        assert_eq!(buf.len(), 8);
        buf.extend_from_slice(b"\x4d\x51\x58\x89\x00");
        let frame = Frame::decode(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(frame, Frame::new(Opcode::Text, "Hello"));
        let ping = Frame::decode(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(ping, Frame::new(Opcode::Ping, ""));
        assert!(buf.is_empty());
    }

    #[test]
    fn decode_rejects_a_huge_length_claim_at_once() {
        let mut buf = BytesMut::from(&[0x82, 0x7F, 0x40, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(
            Frame::decode(&mut buf, 1 << 20),
            Err(ProtocolError::FrameTooBig {
                size: 1 << 62,
                limit: 1 << 20
            })
        );
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        let data = (
            any::<bool>(),
            0u8..8,
            prop_oneof![
                Just(Opcode::Continuation),
                Just(Opcode::Text),
                Just(Opcode::Binary)
            ],
            proptest::collection::vec(any::<u8>(), 0..70_000),
        );
        let control = (
            0u8..8,
            prop_oneof![Just(Opcode::Close), Just(Opcode::Ping), Just(Opcode::Pong)],
            proptest::collection::vec(any::<u8>(), 0..=125),
        );
        prop_oneof![
            data.prop_map(|(fin, rsv, opcode, payload)| Frame {
                fin,
                rsv: Rsv::from_header_bits(rsv << 4),
                opcode,
                payload: payload.into(),
            }),
            control.prop_map(|(rsv, opcode, payload)| Frame {
                fin: true,
                rsv: Rsv::from_header_bits(rsv << 4),
                opcode,
                payload: payload.into(),
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn encode_then_decode_round_trips(frame in any_frame(), mask: Option<[u8; 4]>) {
            let mut buf = BytesMut::new();
            frame.encode(mask, &mut buf);
            let decoded = Frame::decode(&mut buf, u64::MAX).unwrap().unwrap();
            prop_assert_eq!(decoded, frame);
            prop_assert!(buf.is_empty());
        }
    }
}
