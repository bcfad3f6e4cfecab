//! UTF-8 validation of text messages as their bytes arrive (RFC 6455 §8.1).

/// The bytes of `buf` from `from` on are not valid UTF-8 and no later byte can fix them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InvalidUtf8;

/// Text up to this long is first checked for plain ASCII.
const SHORT_TEXT: usize = 256;

/// Validates `buf[from..]`, where `buf[..from]` is already known to be valid UTF-8.
///
/// Returns how far `buf` is now known to be valid. When `complete` is false, a character cut
/// at the end of `buf` is not an error (its bytes will be validated with the next chunk);
/// anything that can never become valid is, so that invalid text fails fast, before the
/// message is complete.
pub(crate) fn validate_utf8(buf: &[u8], from: usize, complete: bool) -> Result<usize, InvalidUtf8> {
    let pending = &buf[from..];
    // Short ASCII text (most chat and JSON messages) is checked a word at a time, without
    // the set-up cost of the SIMD validator.
    if pending.len() <= SHORT_TEXT && pending.is_ascii() {
        return Ok(buf.len());
    }
    if simdutf8::basic::from_utf8(pending).is_ok() {
        return Ok(buf.len());
    }
    match simdutf8::compat::from_utf8(pending) {
        Ok(_) => Ok(buf.len()),
        Err(error) if error.error_len().is_none() && !complete => Ok(from + error.valid_up_to()),
        Err(_) => Err(InvalidUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cut_character_waits_for_the_next_chunk() {
        let euro = "€".as_bytes();
        assert_eq!(validate_utf8(&euro[..2], 0, false), Ok(0));
        assert_eq!(validate_utf8(euro, 0, true), Ok(3));
        assert_eq!(validate_utf8(&euro[..2], 0, true), Err(InvalidUtf8));
    }

    #[test]
    fn impossible_prefix_fails_fast() {
        // 0xF4 0x90 would encode a code point above U+10FFFF (Autobahn 6.4.2).
        assert_eq!(validate_utf8(&[0xF4, 0x90], 0, false), Err(InvalidUtf8));
        assert_eq!(validate_utf8(b"ab\xC0", 0, false), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn chunked_validation_agrees_with_std(data in proptest::collection::vec(any::<u8>(), 0..64), cut in 0usize..64) {
            let cut = cut.min(data.len());
            let whole = std::str::from_utf8(&data).is_ok();
            let chunked = validate_utf8(&data[..cut], 0, false)
                .and_then(|checked| validate_utf8(&data, checked, true))
                .is_ok();
            prop_assert_eq!(whole, chunked);
        }
    }
}
