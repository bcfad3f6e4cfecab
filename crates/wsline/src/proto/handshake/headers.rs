//! Header grammar of the handshake: tokens, comma-separated token lists (RFC 9110 §5.6),
//! extension lists (RFC 6455 §9.1), and the accept key (RFC 6455 §4.2.2).

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::proto::extension::ExtensionParams;

/// The GUID that RFC 6455 §1.3 appends to the key before hashing.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2):
/// base64(SHA-1(key + GUID)).
///
/// ```
/// // RFC 6455 §1.3
/// assert_eq!(
///     wsline::proto::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/// );
/// ```
#[must_use]
pub fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(WEBSOCKET_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha1.finalize())
}

/// Whether `text` is an HTTP token (RFC 9110 §5.6.2).
#[must_use]
pub fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_tchar)
}

fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The elements of comma-separated header values, trimmed, empty elements skipped
/// (RFC 9110 §5.6.1), across every field given.
///
/// ```
/// let tokens = wsline::proto::parse_token_list(["keep-alive, Upgrade", " ,x"]);
/// assert_eq!(tokens, ["keep-alive", "Upgrade", "x"]);
/// ```
pub fn parse_token_list<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(|item| item.trim_matches([' ', '\t']))
        .filter(|item| !item.is_empty())
        .collect()
}

/// Whether the comma-separated header values contain `token`, ignoring case.
pub(crate) fn has_token<'a>(values: impl IntoIterator<Item = &'a str>, token: &str) -> bool {
    parse_token_list(values)
        .iter()
        .any(|item| item.eq_ignore_ascii_case(token))
}

/// Parses `Sec-WebSocket-Extensions` values (RFC 6455 §9.1):
/// `extension = name *( ";" param )`, `param = token [ "=" (token | quoted-string) ]`.
///
/// # Errors
/// The offending text when the grammar is broken.
///
/// ```
/// let offers = wsline::proto::parse_extensions(
///     ["permessage-deflate; client_max_window_bits, permessage-deflate; server_max_window_bits=\"10\""],
/// ).unwrap();
/// assert_eq!(offers.len(), 2);
/// assert_eq!(offers[1].params[0], ("server_max_window_bits".into(), Some("10".into())));
/// ```
pub fn parse_extensions<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<ExtensionParams>, String> {
    let mut extensions = Vec::new();
    for value in values {
        let mut parser = Parser {
            text: value,
            pos: 0,
        };
        loop {
            parser.skip_whitespace();
            if parser.eat(b',') {
                continue;
            }
            if parser.at_end() {
                break;
            }
            extensions.push(parser.extension()?);
            parser.skip_whitespace();
            if !parser.at_end() && !parser.eat(b',') {
                return Err(parser.error());
            }
        }
    }
    Ok(extensions)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn error(&self) -> String {
        format!(
            "invalid extension list {:?} at byte {}",
            self.text, self.pos
        )
    }

    fn token(&mut self) -> Result<String, String> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error());
        }
        Ok(self.text[start..self.pos].to_owned())
    }

    fn quoted_string(&mut self) -> Result<String, String> {
        let mut value = String::new();
        loop {
            let Some(byte) = self.peek() else {
                return Err(self.error());
            };
            self.pos += 1;
            match byte {
                b'"' => return Ok(value),
                b'\\' => {
                    let Some(escaped) = self.peek() else {
                        return Err(self.error());
                    };
                    self.pos += 1;
                    value.push(char::from(escaped));
                }
                _ => {
                    // Continue a multi-byte character as a whole.
                    let start = self.pos - 1;
                    let mut end = self.pos;
                    while !self.text.is_char_boundary(end) {
                        end += 1;
                    }
                    value.push_str(&self.text[start..end]);
                    self.pos = end;
                }
            }
        }
    }

    fn extension(&mut self) -> Result<ExtensionParams, String> {
        let mut extension = ExtensionParams::new(self.token()?);
        loop {
            self.skip_whitespace();
            if !self.eat(b';') {
                return Ok(extension);
            }
            self.skip_whitespace();
            let name = self.token()?;
            self.skip_whitespace();
            let value = if self.eat(b'=') {
                self.skip_whitespace();
                let value = if self.eat(b'"') {
                    self.quoted_string()?
                } else {
                    self.token()?
                };
                // RFC 6455 §9.1: a quoted value must still be a token after unescaping.
                if !is_token(&value) {
                    return Err(self.error());
                }
                Some(value)
            } else {
                None
            };
            extension.params.push((name, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_1_3_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn token_lists_ignore_case_and_spacing() {
        assert!(has_token(["keep-alive,  UPGRADE "], "upgrade"));
        assert!(has_token(["keep-alive", "Upgrade"], "upgrade"));
        assert!(!has_token(["keep-alive, upgraded"], "upgrade"));
    }

    #[test]
    fn extension_lists_parse_params_and_quotes() {
        let parsed = parse_extensions([
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
            "x-custom;a=\"b\" , y",
        ])
        .unwrap();
        let names: Vec<_> = parsed.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["permessage-deflate", "x-custom", "y"]);
        assert_eq!(
            parsed[0].params,
            [
                ("client_no_context_takeover".to_owned(), None),
                ("server_max_window_bits".to_owned(), Some("10".to_owned()))
            ]
        );
        assert_eq!(parsed[1].params, [("a".to_owned(), Some("b".to_owned()))]);
    }

    #[test]
    fn broken_extension_lists_are_rejected() {
        for broken in [";", "a;", "a; b=", "a b", "a; b=\"c", "a; b=\"c d\"", "a=b"] {
            assert!(parse_extensions([broken]).is_err(), "{broken:?}");
        }
    }

    #[test]
    fn extension_params_display_round_trips() {
        let params = ExtensionParams::new("permessage-deflate")
            .param("client_max_window_bits", None)
            .param("server_max_window_bits", Some("10".into()));
        let text = params.to_string();
        assert_eq!(
            text,
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10"
        );
        assert_eq!(parse_extensions([text.as_str()]).unwrap(), [params]);
    }
}
