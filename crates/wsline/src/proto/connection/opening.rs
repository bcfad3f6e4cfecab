//! The opening handshake as a sub-machine of the connection (RFC 6455 §4): reads the HTTP
//! head of each side within its size limits, checks it with the pure functions of
//! [`handshake`](crate::proto::handshake), and reports what the connection must do next.

use bytes::BytesMut;

use crate::proto::error::SendError;
use crate::proto::extension::Extension;
use crate::proto::handshake::{
    self, HandshakeError, HeadLimits, HeadScanner, NegotiatedServer, Request, Response,
};
use crate::proto::{Config, WsUri};

/// Where the opening handshake stands.
#[derive(Debug)]
pub(super) enum Opening {
    /// Server: reading the request head.
    ReadRequest { buf: BytesMut, scanner: HeadScanner },
    /// Server: the request was delivered; waiting for the response. `buf` holds bytes that
    /// came after the head.
    AwaitResponse {
        buf: BytesMut,
        negotiated: Option<NegotiatedServer>,
        error: Option<HandshakeError>,
    },
    /// Client: waiting for the request to be sent; the key is made with the request.
    AwaitRequest { uri: WsUri, key: Option<String> },
    /// Client: reading the response head.
    ReadResponse {
        key: String,
        buf: BytesMut,
        scanner: HeadScanner,
    },
    /// Client: reading the body of a rejection; `remaining` is `None` until end of stream.
    ReadRejection {
        response: Box<Response>,
        body: BytesMut,
        remaining: Option<usize>,
    },
}

/// What the handshake's input brought.
#[derive(Debug)]
pub(super) enum Progress {
    /// Nothing yet: more input is needed.
    Pending,
    /// Server: the request arrived; the application answers it.
    Request(Request),
    /// Client: the server accepted; `rest` are the bytes after its head (frames).
    Accepted {
        response: Response,
        extensions: Vec<Box<dyn Extension>>,
        subprotocol: Option<String>,
        rest: BytesMut,
    },
    /// The handshake failed; a server answers with the error's status.
    Failed(HandshakeError),
}

/// What the server's response decided.
pub(super) enum Answer {
    /// 101: the connection opens with these extensions (`None`: none were negotiated here,
    /// keep those installed) and subprotocol; `rest` are the bytes that came after the
    /// request head.
    Open {
        extensions: Option<Vec<Box<dyn Extension>>>,
        subprotocol: Option<String>,
        rest: BytesMut,
    },
    /// Any other status: the connection ends once the response is written.
    Refused(HandshakeError),
}

impl Opening {
    pub(super) fn server() -> Self {
        Self::ReadRequest {
            buf: BytesMut::new(),
            scanner: HeadScanner::default(),
        }
    }

    pub(super) fn client(uri: WsUri) -> Self {
        Self::AwaitRequest { uri, key: None }
    }

    /// Client: the request to send, with a key from `random` (made once: asking again gives
    /// the same request).
    pub(super) fn request(
        &mut self,
        config: &Config,
        random: impl FnOnce(&mut [u8]),
    ) -> Result<Request, SendError> {
        let Self::AwaitRequest { uri, key } = self else {
            return Err(SendError::HandshakeState);
        };
        let key = key.get_or_insert_with(|| {
            let mut nonce = [0; 16];
            random(&mut nonce);
            handshake::generate_key(nonce)
        });
        Ok(handshake::build_request(uri, key, config))
    }

    /// Client: the request was queued; read the response to it.
    pub(super) fn request_sent(
        &mut self,
        config: &Config,
        random: impl FnOnce(&mut [u8]),
    ) -> Result<(), SendError> {
        // The request itself was built from the same key (or is being built now).
        self.request(config, random)?;
        let Self::AwaitRequest { key: Some(key), .. } = self else {
            return Err(SendError::HandshakeState);
        };
        *self = Self::ReadResponse {
            key: std::mem::take(key),
            buf: BytesMut::new(),
            scanner: HeadScanner::default(),
        };
        Ok(())
    }

    /// Server: checks the request (RFC 6455 §4.2.1) and negotiates; returns the 101 or the
    /// error response that says what is wrong.
    pub(super) fn accept(
        &mut self,
        request: &Request,
        config: &Config,
    ) -> Result<Response, SendError> {
        let Self::AwaitResponse {
            negotiated, error, ..
        } = self
        else {
            return Err(SendError::HandshakeState);
        };
        Ok(match handshake::check_request(request, config) {
            Ok(accepted) => {
                let response = handshake::accept_response(&accepted, config);
                *negotiated = Some(accepted);
                response
            }
            Err(rejection) => {
                let response = handshake::error_response(&rejection, config);
                *error = Some(rejection);
                response
            }
        })
    }

    /// Server: what sending `response` means. With 101, the extensions are those that
    /// [`accept`](Self::accept) negotiated and that the response still names; the
    /// subprotocol is the one it names.
    pub(super) fn answer(&mut self, response: &Response) -> Result<Answer, SendError> {
        let Self::AwaitResponse {
            buf,
            negotiated,
            error,
        } = self
        else {
            return Err(SendError::HandshakeState);
        };
        if response.status != 101 {
            let error = error
                .take()
                .unwrap_or_else(|| HandshakeError::RejectedByServer {
                    status: response.status,
                    reason: response.reason.clone(),
                });
            return Ok(Answer::Refused(error));
        }
        let named =
            handshake::parse_extensions(response.headers.get_all("Sec-WebSocket-Extensions"))
                .unwrap_or_default();
        let extensions = negotiated.take().map(|negotiated| {
            negotiated
                .extensions
                .into_iter()
                .filter(|(_, extension)| named.iter().any(|n| n.name == extension.name()))
                .map(|(_, extension)| extension)
                .collect()
        });
        Ok(Answer::Open {
            extensions,
            subprotocol: response
                .headers
                .get("Sec-WebSocket-Protocol")
                .map(str::to_owned),
            rest: std::mem::take(buf),
        })
    }

    /// Feeds bytes of the handshake.
    pub(super) fn handle_data(&mut self, data: &[u8], config: &Config) -> Progress {
        let limits = HeadLimits {
            max_line_len: config.max_line_len,
            max_headers: config.max_headers,
            max_head_size: config.max_head_size,
        };
        match self {
            Self::ReadRequest { buf, scanner } => {
                let (head, rest) = match read_head(buf, scanner, data, limits) {
                    Ok(Some(parts)) => parts,
                    Ok(None) => return Progress::Pending,
                    Err(error) => return Progress::Failed(error),
                };
                match handshake::parse_request(&head, limits.max_headers) {
                    Ok(request) => {
                        *self = Self::AwaitResponse {
                            buf: rest,
                            negotiated: None,
                            error: None,
                        };
                        Progress::Request(request)
                    }
                    Err(error) => Progress::Failed(error),
                }
            }
            Self::AwaitResponse { buf, .. } => {
                if buf.len() + data.len() > limits.max_head_size {
                    return Progress::Failed(HandshakeError::HeadTooLarge {
                        limit: limits.max_head_size,
                    });
                }
                buf.extend_from_slice(data);
                Progress::Pending
            }
            Self::ReadResponse { key, buf, scanner } => {
                let (head, rest) = match read_head(buf, scanner, data, limits) {
                    Ok(Some(parts)) => parts,
                    Ok(None) => return Progress::Pending,
                    Err(error) => return Progress::Failed(error),
                };
                let key = std::mem::take(key);
                self.handle_response(&head, &key, rest, config)
            }
            Self::ReadRejection {
                body, remaining, ..
            } => {
                let take = remaining.map_or(data.len(), |left| left.min(data.len()));
                let room = config.max_response_body.saturating_sub(body.len());
                body.extend_from_slice(&data[..take.min(room)]);
                if let Some(left) = remaining {
                    *left -= take;
                    if *left == 0 {
                        return self
                            .finish_rejection()
                            .map_or(Progress::Pending, Progress::Failed);
                    }
                }
                Progress::Pending
            }
            Self::AwaitRequest { .. } => Progress::Pending,
        }
    }

    fn handle_response(
        &mut self,
        head: &[u8],
        key: &str,
        rest: BytesMut,
        config: &Config,
    ) -> Progress {
        let response = match handshake::parse_response(head, config.max_headers) {
            Ok(response) => response,
            Err(error) => return Progress::Failed(error),
        };
        match handshake::check_response(&response, Some(key), config) {
            Ok(negotiated) => Progress::Accepted {
                response,
                extensions: negotiated.extensions,
                subprotocol: negotiated.subprotocol,
                rest,
            },
            Err(HandshakeError::Rejected(response)) => {
                let remaining = response
                    .headers
                    .get("Content-Length")
                    .and_then(|len| len.trim().parse::<usize>().ok());
                *self = Self::ReadRejection {
                    response,
                    body: BytesMut::new(),
                    remaining,
                };
                if remaining == Some(0) {
                    return self
                        .finish_rejection()
                        .map_or(Progress::Pending, Progress::Failed);
                }
                if rest.is_empty() {
                    Progress::Pending
                } else {
                    self.handle_data(&rest, config)
                }
            }
            Err(error) => Progress::Failed(error),
        }
    }

    /// Client: the end of the stream. While reading a rejection's body, that ends it (the
    /// rejection is the outcome); otherwise the server closed too early.
    pub(super) fn handle_eof(&mut self) -> Option<HandshakeError> {
        match self {
            Self::ReadRejection { .. } => self.finish_rejection(),
            Self::AwaitRequest { .. } | Self::ReadResponse { .. } => {
                Some(HandshakeError::ClosedEarly)
            }
            Self::ReadRequest { .. } | Self::AwaitResponse { .. } => None,
        }
    }

    /// The rejection with its body, once the body is complete.
    fn finish_rejection(&mut self) -> Option<HandshakeError> {
        let Self::ReadRejection { response, body, .. } = self else {
            return None;
        };
        let mut response = std::mem::replace(response, Box::new(Response::new(0)));
        response.body = std::mem::take(body).freeze();
        Some(HandshakeError::Rejected(response))
    }
}

/// Buffers `data` until the HTTP head in `buf` is complete, never holding more than the head
/// size limit. Returns the head and the bytes that came after it, once it is complete.
fn read_head(
    buf: &mut BytesMut,
    scanner: &mut HeadScanner,
    data: &[u8],
    limits: HeadLimits,
) -> Result<Option<(BytesMut, BytesMut)>, HandshakeError> {
    let room = limits.max_head_size.saturating_sub(buf.len()).max(1);
    let (buffered, beyond) = data.split_at(data.len().min(room));
    buf.extend_from_slice(buffered);
    let Some(end) = scanner.scan(buf, limits)? else {
        return Ok(None);
    };
    let head = buf.split_to(end);
    let mut rest = std::mem::take(buf);
    rest.extend_from_slice(beyond);
    Ok(Some((head, rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_split_across_reads_arrives_whole_with_the_bytes_after_it() {
        let mut opening = Opening::server();
        let config = Config::default();
        let head = "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    Sec-WebSocket-Version: 13\r\n\r\n";
        let (first, second) = head.split_at(20);
        assert!(matches!(
            opening.handle_data(first.as_bytes(), &config),
            Progress::Pending
        ));
        let mut rest = second.as_bytes().to_vec();
        rest.extend_from_slice(b"\x81");
        let Progress::Request(request) = opening.handle_data(&rest, &config) else {
            panic!("the request is complete");
        };
        assert_eq!(request.path, "/chat");
        // RFC 6455 §1.3: the accept key of the sample nonce.
        let response = opening.accept(&request, &config).unwrap();
        assert_eq!(
            response.headers.get("Sec-WebSocket-Accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        let Ok(Answer::Open { rest, .. }) = opening.answer(&response) else {
            panic!("101 opens");
        };
        assert_eq!(&rest[..], b"\x81");
    }

    #[test]
    fn a_head_past_the_limit_fails_with_431() {
        let mut opening = Opening::server();
        let config = Config {
            max_head_size: 64,
            ..Config::default()
        };
        let head = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(100));
        let Progress::Failed(error) = opening.handle_data(head.as_bytes(), &config) else {
            panic!("too large");
        };
        assert_eq!(error.status(), Some(431));
    }

    fn request(path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            protocol: None,
            headers: handshake::Headers::new(),
        }
    }

    #[test]
    fn answering_before_a_request_is_a_state_error() {
        let mut opening = Opening::server();
        assert!(matches!(
            opening.answer(&Response::new(101)),
            Err(SendError::HandshakeState)
        ));
        let mut client = Opening::client("ws://example.com/".parse().unwrap());
        assert!(matches!(
            client.accept(&request("/"), &Config::default()),
            Err(SendError::HandshakeState)
        ));
    }

    #[test]
    fn a_client_builds_one_request_with_one_key() {
        let mut opening = Opening::client("ws://example.com/".parse().unwrap());
        let config = Config::default();
        let first = opening.request(&config, |bytes| bytes.fill(1)).unwrap();
        let again = opening.request(&config, |bytes| bytes.fill(2)).unwrap();
        assert_eq!(
            first.headers.get("Sec-WebSocket-Key"),
            again.headers.get("Sec-WebSocket-Key")
        );
        opening.request_sent(&config, |_| {}).unwrap();
        assert!(matches!(
            opening.request(&config, |_| {}),
            Err(SendError::HandshakeState)
        ));
    }
}
