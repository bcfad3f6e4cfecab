//! Messages: what the application sends and receives.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// Bytes known to be valid UTF-8: the payload of a text message, shared without copying.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps a static string without copying.
    #[must_use]
    pub const fn from_static(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }

    /// Wraps `bytes` after checking they are UTF-8.
    ///
    /// # Errors
    /// The UTF-8 error when they are not.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    /// Wraps bytes the caller has already validated as UTF-8.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }

    /// The text.
    #[must_use]
    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor either takes a `str`/`String` or checks the bytes with
        // `from_utf8` (or, in the connection, with the incremental validator), and the bytes
        // are immutable afterwards. Re-checking here would make each access O(n).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Unwraps the underlying bytes.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Self(Bytes::from(text))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.0
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A whole WebSocket message: text or binary (RFC 6455 §5.6).
///
/// ```
/// use wsline::Message;
/// let message = Message::text("Hello");
/// assert_eq!(message.as_text(), Some("Hello"));
/// assert_eq!(message.to_string(), "Hello");
/// assert_eq!(Message::binary(vec![1, 2, 3]).len(), 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    /// A text message: valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::Binary(data.into())
    }

    /// Whether this is a text message.
    #[must_use]
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text(_))
    }

    /// Whether this is a binary message.
    #[must_use]
    pub fn is_binary(&self) -> bool {
        matches!(self, Self::Binary(_))
    }

    /// The payload bytes, whatever the type.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Binary(data) => data,
        }
    }

    /// The text of a text message.
    #[must_use]
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text.as_str()),
            Self::Binary(_) => None,
        }
    }

    /// The payload length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// The payload, whatever the type.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        match self {
            Self::Text(text) => text.into_bytes(),
            Self::Binary(data) => data,
        }
    }

    /// Where the message is cut to send it in fragments of at most `size` bytes (at least 4,
    /// so that a text fragment, cut at a character boundary, always holds a character):
    /// each fragment's byte range and whether it is the last. An empty message is one empty
    /// fragment.
    #[cfg(any(feature = "sync", feature = "tokio"))]
    pub(crate) fn fragment_ranges(
        &self,
        size: usize,
    ) -> impl Iterator<Item = (std::ops::Range<usize>, bool)> + '_ {
        let size = size.max(4);
        let len = self.len();
        let mut next = Some(0);
        std::iter::from_fn(move || {
            let start = next?;
            let mut end = (start + size).min(len);
            if let Self::Text(text) = self {
                while !text.as_str().is_char_boundary(end) {
                    end -= 1;
                }
            }
            let fin = end == len;
            next = (!fin).then_some(end);
            Some((start..end, fin))
        })
    }
}

impl fmt::Display for Message {
    /// Text as is; binary as its length, since it may not be printable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            Self::Binary(data) => write!(f, "(binary, {} bytes)", data.len()),
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Self::text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Self::text(text)
    }
}

impl From<Utf8Bytes> for Message {
    fn from(text: Utf8Bytes) -> Self {
        Self::Text(text)
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Self::binary(data)
    }
}

impl From<&[u8]> for Message {
    fn from(data: &[u8]) -> Self {
        Self::binary(Bytes::copy_from_slice(data))
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Self {
        Self::Binary(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_bytes_rejects_invalid_text() {
        assert!(Utf8Bytes::try_from_bytes(Bytes::from_static(b"\xff")).is_err());
        let text = Utf8Bytes::try_from_bytes(Bytes::from_static("κόσμε".as_bytes())).unwrap();
        assert_eq!(text, "κόσμε");
    }

    #[test]
    #[cfg(any(feature = "sync", feature = "tokio"))]
    fn fragments_cut_text_at_character_boundaries_and_cover_the_message() {
        let text = Message::text("aé€😀b");
        let ranges: Vec<_> = text.fragment_ranges(4).collect();
        assert_eq!(
            ranges,
            vec![(0..3, false), (3..6, false), (6..10, false), (10..11, true)]
        );
        let binary = Message::binary(vec![0; 10]);
        let ranges: Vec<_> = binary.fragment_ranges(5).collect();
        assert_eq!(ranges, vec![(0..5, false), (5..10, true)]);
        assert_eq!(
            Message::binary(Vec::new())
                .fragment_ranges(8)
                .collect::<Vec<_>>(),
            vec![(0..0, true)]
        );
    }

    #[test]
    fn binary_displays_its_length() {
        assert_eq!(Message::binary(vec![0; 4]).to_string(), "(binary, 4 bytes)");
    }
}
