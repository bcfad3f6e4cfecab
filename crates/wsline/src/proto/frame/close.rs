//! Close codes and close frame payloads (RFC 6455 §5.5.1, §7.4).

use std::fmt;

use crate::proto::error::ProtocolError;

/// A close status code (RFC 6455 §7.4), as an open code space: any `u16` can be held, and
/// [`CloseCode::is_valid`] says whether a peer may send it.
///
/// ```
/// use wsline::CloseCode;
/// assert_eq!(CloseCode::NORMAL.as_u16(), 1000);
/// assert!(CloseCode::from(4000).is_valid());
/// assert!(!CloseCode::from(1005).is_valid());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutting down, page navigated away).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: the endpoint received a type of data it cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS_RECEIVED: Self = Self(1005);
    /// 1006: the connection closed without a close frame (never sent on the wire).
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: a message's data was inconsistent with its type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected the server to negotiate an extension.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: a gateway got an invalid response upstream.
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: the TLS handshake failed (never sent on the wire).
    pub const TLS_HANDSHAKE: Self = Self(1015);

    /// The numeric code.
    #[must_use]
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether the code may appear in a close frame: 1000–1003, 1007–1014 and 3000–4999.
    ///
    /// RFC 6455 §7.4.1 reserves 1004, 1005, 1006 and 1015; §7.4.2 leaves 0–999 unused and
    /// 1016–2999 for future revisions of the protocol.
    #[must_use]
    pub const fn is_valid(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The largest close reason in bytes: a control payload holds 125 bytes, two of them the code.
pub const MAX_CLOSE_REASON_LEN: usize = 123;

/// The content of a close frame: a code and a UTF-8 reason (RFC 6455 §5.5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code; [`CloseCode::NO_STATUS_RECEIVED`] when the frame had no payload.
    pub code: CloseCode,
    /// Why the endpoint closed; at most [`MAX_CLOSE_REASON_LEN`] bytes.
    pub reason: String,
}

impl CloseFrame {
    /// A close frame with this code and reason.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// Parses a received close payload.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidClosePayloadLength`] for a 1-byte payload,
    /// [`ProtocolError::InvalidCloseCode`] for a code peers must not send, and
    /// [`ProtocolError::InvalidUtf8`] for a reason that is not UTF-8.
    pub fn parse(payload: &[u8]) -> Result<Self, ProtocolError> {
        match payload {
            // RFC 6455 §5.5.1: "If there is a body, the first two bytes of the body MUST be a
            // 2-byte unsigned integer (in network byte order) representing a status code".
            [] => Ok(Self::new(CloseCode::NO_STATUS_RECEIVED, "")),
            [_] => Err(ProtocolError::InvalidClosePayloadLength),
            [high, low, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*high, *low]));
                if !code.is_valid() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = simdutf8::basic::from_utf8(reason)
                    .map_err(|_| ProtocolError::InvalidUtf8)?
                    .to_owned();
                Ok(Self { code, reason })
            }
        }
    }

    /// The payload of this close frame: empty for [`CloseCode::NO_STATUS_RECEIVED`], else the
    /// code and reason. The reason is cut at a character boundary to fit 123 bytes.
    #[must_use]
    pub fn payload(&self) -> Vec<u8> {
        if self.code == CloseCode::NO_STATUS_RECEIVED {
            return Vec::new();
        }
        let reason = truncate_utf8(&self.reason, MAX_CLOSE_REASON_LEN);
        let mut payload = Vec::with_capacity(2 + reason.len());
        payload.extend_from_slice(&self.code.0.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
        payload
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} ({})", self.code, self.reason)
        }
    }
}

/// The longest prefix of `text` that fits `max` bytes without splitting a character.
pub(crate) fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_validity_follows_rfc6455_7_4() {
        for code in 0..=u16::MAX {
            let expected = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode(code).is_valid(), expected, "code {code}");
        }
    }

    #[test]
    fn empty_payload_means_no_status() {
        let close = CloseFrame::parse(b"").unwrap();
        assert_eq!(close.code, CloseCode::NO_STATUS_RECEIVED);
        assert!(close.payload().is_empty());
    }

    #[test]
    fn one_byte_payload_is_a_protocol_error() {
        assert_eq!(
            CloseFrame::parse(&[0x03]),
            Err(ProtocolError::InvalidClosePayloadLength)
        );
    }

    #[test]
    fn reserved_codes_are_rejected() {
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let payload = code.to_be_bytes();
            assert_eq!(
                CloseFrame::parse(&payload),
                Err(ProtocolError::InvalidCloseCode(code))
            );
        }
    }

    #[test]
    fn invalid_utf8_reason_is_rejected() {
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xe8, 0xff]),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn payload_round_trips() {
        let close = CloseFrame::new(CloseCode::GOING_AWAY, "server restart");
        assert_eq!(CloseFrame::parse(&close.payload()).unwrap(), close);
    }

    #[test]
    fn long_reason_is_cut_at_a_character_boundary() {
        let close = CloseFrame::new(CloseCode::NORMAL, "é".repeat(100));
        let payload = close.payload();
        assert_eq!(payload.len(), 2 + 122);
        assert!(CloseFrame::parse(&payload).is_ok());
    }
}
