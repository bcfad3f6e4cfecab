//! Frame opcodes (RFC 6455 §5.2, §11.8).

use std::fmt;

/// The opcode of a frame: what its payload means (RFC 6455 §5.2).
///
/// Reserved opcodes (`0x3`–`0x7`, `0xB`–`0xF`) have no variant: a frame that carries one
/// fails the connection with 1002.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// `0x0`: a continuation of a fragmented data message.
    Continuation,
    /// `0x1`: the first frame of a text message (UTF-8).
    Text,
    /// `0x2`: the first frame of a binary message.
    Binary,
    /// `0x8`: a close frame.
    Close,
    /// `0x9`: a ping frame.
    Ping,
    /// `0xA`: a pong frame.
    Pong,
}

impl Opcode {
    /// Decodes the low four bits of a frame's first byte; `None` for reserved opcodes.
    ///
    /// ```
    /// use wsline::proto::Opcode;
    /// assert_eq!(Opcode::from_u8(0x1), Some(Opcode::Text));
    /// assert_eq!(Opcode::from_u8(0x3), None);
    /// ```
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// The four-bit wire value.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong: RFC 6455 §5.5).
    #[must_use]
    pub const fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Continuation => "continuation",
            Self::Text => "text",
            Self::Binary => "binary",
            Self::Close => "close",
            Self::Ping => "ping",
            Self::Pong => "pong",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nibble_round_trips_or_is_reserved() {
        for value in 0u8..16 {
            match Opcode::from_u8(value) {
                Some(opcode) => assert_eq!(opcode.as_u8(), value),
                None => assert!(matches!(value, 0x3..=0x7 | 0xB..=0xF)),
            }
        }
    }

    #[test]
    fn control_opcodes_have_the_high_bit() {
        assert!(Opcode::Close.is_control());
        assert!(Opcode::Ping.is_control());
        assert!(Opcode::Pong.is_control());
        assert!(!Opcode::Text.is_control());
        assert!(!Opcode::Continuation.is_control());
    }
}
