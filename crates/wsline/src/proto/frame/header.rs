//! The frame header (RFC 6455 §5.2): parse and encode.

use std::ops::BitOr;

use bytes::BufMut;

use super::Opcode;
use crate::proto::error::ProtocolError;

/// The largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD_LEN: usize = 125;

/// The three reserved bits of a frame header, which only negotiated extensions may set
/// (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rsv(u8);

impl Rsv {
    /// No reserved bit.
    pub const NONE: Self = Self(0);
    /// RSV1 (`0x40` of the first byte); permessage-deflate marks compressed messages with it.
    pub const RSV1: Self = Self(0b100);
    /// RSV2 (`0x20` of the first byte).
    pub const RSV2: Self = Self(0b010);
    /// RSV3 (`0x10` of the first byte).
    pub const RSV3: Self = Self(0b001);

    /// Whether no bit is set.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every bit of `other` is set in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `self` and `other` share a bit.
    #[must_use]
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// The bits of `self` that are not in `other`.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The bits as they sit in the first header byte.
    const fn to_header_bits(self) -> u8 {
        self.0 << 4
    }

    pub(crate) const fn from_header_bits(byte: u8) -> Self {
        Self((byte >> 4) & 0b111)
    }
}

impl BitOr for Rsv {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// A parsed frame header (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether this is the final fragment of a message.
    pub fin: bool,
    /// The reserved bits.
    pub rsv: Rsv,
    /// What the payload means.
    pub opcode: Opcode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// The longest header: 2 bytes, an 8-byte length and a 4-byte masking key.
    pub const MAX_LEN: usize = 14;

    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a header, or the header and the
    /// number of bytes it took. Non-minimal length encodings are accepted (RFC 6455 §5.2 asks
    /// senders, not receivers, for the minimal one).
    ///
    /// # Errors
    /// A reserved opcode, a 64-bit length with its most significant bit set, a control frame
    /// longer than 125 bytes, or a fragmented control frame.
    ///
    /// ```
    /// use wsline::proto::{FrameHeader, Opcode};
    /// let (header, len) = FrameHeader::parse(b"\x81\x05Hello").unwrap().unwrap();
    /// assert_eq!((header.opcode, header.payload_len, len), (Opcode::Text, 5, 2));
    /// assert_eq!(FrameHeader::parse(b"\x81").unwrap(), None);
    /// ```
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [first, second, ..] = *buf else {
            return Ok(None);
        };
        let fin = first & 0x80 != 0;
        let rsv = Rsv::from_header_bits(first);
        let opcode =
            Opcode::from_u8(first & 0x0F).ok_or(ProtocolError::ReservedOpcode(first & 0x0F))?;
        let masked = second & 0x80 != 0;
        let (payload_len, len_bytes) = match second & 0x7F {
            126 => match buf.get(2..4) {
                Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 2),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(bytes) => {
                    let len = u64::from_be_bytes(bytes.try_into().expect("slice of 8"));
                    // RFC 6455 §5.2: "the most significant bit MUST be 0".
                    if len >> 63 != 0 {
                        return Err(ProtocolError::InvalidPayloadLength);
                    }
                    (len, 8)
                }
                None => return Ok(None),
            },
            len => (u64::from(len), 0),
        };
        if opcode.is_control() {
            // RFC 6455 §5.5: "All control frames MUST have a payload length of 125 bytes or
            // less and MUST NOT be fragmented."
            if payload_len > MAX_CONTROL_PAYLOAD_LEN as u64 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
        }
        let mut header_len = 2 + len_bytes;
        let mask = if masked {
            let Some(key) = buf.get(header_len..header_len + 4) else {
                return Ok(None);
            };
            header_len += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        let header = Self {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, header_len)))
    }

    /// How many bytes [`FrameHeader::encode`] writes.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        let mask_bytes = if self.mask.is_some() { 4 } else { 0 };
        2 + len_bytes + mask_bytes
    }

    /// Writes the header with the minimal length encoding (RFC 6455 §5.2).
    pub fn encode(&self, out: &mut impl BufMut) {
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let fin_bit = if self.fin { 0x80 } else { 0 };
        out.put_u8(fin_bit | self.rsv.to_header_bits() | self.opcode.as_u8());
        match self.payload_len {
            len @ 0..=125 => out.put_u8(mask_bit | len as u8),
            len @ 126..=0xFFFF => {
                out.put_u8(mask_bit | 126);
                out.put_u16(len as u16);
            }
            len => {
                out.put_u8(mask_bit | 127);
                out.put_u64(len);
            }
        }
        if let Some(key) = self.mask {
            out.put_slice(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(header: FrameHeader) -> Vec<u8> {
        let mut out = Vec::new();
        header.encode(&mut out);
        assert_eq!(out.len(), header.encoded_len());
        out
    }

    fn binary(payload_len: u64) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv: Rsv::NONE,
            opcode: Opcode::Binary,
            mask: None,
            payload_len,
        }
    }

    #[test]
    fn rfc6455_5_7_256_bytes_binary_uses_16_bit_length() {
        assert_eq!(encoded(binary(256)), [0x82, 0x7E, 0x01, 0x00]);
    }

    #[test]
    fn rfc6455_5_7_64_kib_binary_uses_64_bit_length() {
        assert_eq!(
            encoded(binary(65_536)),
            [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
    }

    #[test]
    fn length_encoding_is_minimal_at_the_boundaries() {
        assert_eq!(encoded(binary(125)).len(), 2);
        assert_eq!(encoded(binary(126)).len(), 4);
        assert_eq!(encoded(binary(65_535)).len(), 4);
        assert_eq!(encoded(binary(65_536)).len(), 10);
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        let (header, len) = FrameHeader::parse(&[0x82, 0x7E, 0x00, 0x05])
            .unwrap()
            .unwrap();
        assert_eq!((header.payload_len, len), (5, 4));
        let (header, len) = FrameHeader::parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 5])
            .unwrap()
            .unwrap();
        assert_eq!((header.payload_len, len), (5, 10));
    }

    #[test]
    fn length_with_most_significant_bit_is_rejected() {
        let header = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            FrameHeader::parse(&header),
            Err(ProtocolError::InvalidPayloadLength)
        );
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for opcode in [0x3u8, 0x7, 0xB, 0xF] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | opcode, 0x00]),
                Err(ProtocolError::ReservedOpcode(opcode))
            );
        }
    }

    #[test]
    fn control_frames_longer_than_125_bytes_are_rejected() {
        assert_eq!(
            FrameHeader::parse(&[0x89, 0x7E, 0x00, 0x7E]),
            Err(ProtocolError::ControlFrameTooLong)
        );
    }

    #[test]
    fn fragmented_control_frames_are_rejected() {
        assert_eq!(
            FrameHeader::parse(&[0x09, 0x00]),
            Err(ProtocolError::FragmentedControlFrame)
        );
    }

    #[test]
    fn partial_headers_wait_for_more_bytes() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..cut]).unwrap(), None, "cut {cut}");
        }
        let (header, len) = FrameHeader::parse(&full).unwrap().unwrap();
        assert_eq!(len, 14);
        assert_eq!(header.mask, Some([1, 2, 3, 4]));
        assert_eq!(header.payload_len, 65_536);
    }

    #[test]
    fn rsv_bits_are_reported() {
        let (header, _) = FrameHeader::parse(&[0xC1, 0x00]).unwrap().unwrap();
        assert_eq!(header.rsv, Rsv::RSV1);
        let (header, _) = FrameHeader::parse(&[0xB1, 0x00]).unwrap().unwrap();
        assert_eq!(header.rsv, Rsv::RSV2 | Rsv::RSV3);
    }
}
