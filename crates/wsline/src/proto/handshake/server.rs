//! The server's side of the opening handshake (RFC 6455 §4.2).

use base64::Engine as _;

use super::headers::{accept_key, has_token, parse_extensions, parse_token_list};
use super::{HandshakeError, Request, Response};
use crate::proto::extension::{Extension, ExtensionParams};
use crate::proto::Config;

/// Extensions a server accepted: its answer for the response and the extension itself.
pub(crate) type AcceptedExtensions = Vec<(ExtensionParams, Box<dyn Extension>)>;

/// What a valid request negotiated, to be sent in a 101 response (HTTP/1.1) or a 200
/// response (HTTP/2).
#[derive(Debug)]
pub(crate) struct NegotiatedServer {
    /// The `Sec-WebSocket-Accept` value; `None` over HTTP/2, which has no key (RFC 8441 §5).
    pub accept: Option<String>,
    pub subprotocol: Option<String>,
    pub extensions: AcceptedExtensions,
}

/// A handshake request a server accepted without a [`Connection`](crate::proto::Connection)
/// in its opening state: for servers whose HTTP stack is not wsline's (hyper, axum, h2;
/// `wsline::http` wraps this for the `http` crate's types). Send [`response`](Self::response)
/// (101 over HTTP/1.1, 200 over HTTP/2), then open the connection with
/// [`Connection::from_negotiated`](crate::proto::Connection::from_negotiated), which uses the
/// subprotocol and extensions negotiated here.
pub struct Negotiated {
    pub(crate) response: Response,
    pub(crate) subprotocol: Option<String>,
    pub(crate) extensions: Vec<Box<dyn Extension>>,
}

impl std::fmt::Debug for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extensions: Vec<&str> = self.extensions.iter().map(|e| e.name()).collect();
        f.debug_struct("Negotiated")
            .field("response", &self.response)
            .field("subprotocol", &self.subprotocol)
            .field("extensions", &extensions)
            .finish()
    }
}

impl Negotiated {
    /// The response to send: its status, and headers that name what was negotiated (add
    /// headers such as `Set-Cookie` if needed; keep the `Sec-WebSocket-*` ones).
    #[must_use]
    pub fn response(&self) -> &Response {
        &self.response
    }

    /// The subprotocol selected (`Config::subprotocols` against the client's offer).
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The names of the extensions accepted, such as `permessage-deflate`.
    pub fn extension_names(&self) -> impl Iterator<Item = &str> {
        self.extensions.iter().map(|extension| extension.name())
    }
}

/// A handshake request a server refuses: why, and the response that says so (the status
/// of [`HandshakeError::status`], a plain-text body, and `Allow` or `Sec-WebSocket-Version`
/// where RFC 9110 and RFC 6455 §4.4 ask for them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// What is wrong with the request.
    pub error: HandshakeError,
    /// The response to send.
    pub response: Box<Response>,
}

/// Checks `request` as a server and negotiates subprotocol and extensions — the same checks,
/// statuses and negotiation as wsline's own servers (RFC 6455 §4.2; for an HTTP/2 extended
/// CONNECT, [`Request::protocol`] set, RFC 8441 §5). The HTTP version is the caller's to
/// check (wsline's parser answers 505 below HTTP/1.1, and `wsline::http` does the same and
/// refuses an HTTP/2 request without `:protocol`). Over HTTP/2 the error responses carry no
/// connection-specific header (RFC 9113 §8.2.2), and a 405 allows `CONNECT`.
///
/// # Errors
/// [`Rejected`] with the error response for a request that is not a valid handshake.
pub fn negotiate(request: &Request, config: &Config) -> Result<Negotiated, Rejected> {
    match check_request(request, config) {
        Ok(negotiated) => Ok(Negotiated {
            response: accept_response(&negotiated, config),
            subprotocol: negotiated.subprotocol,
            extensions: negotiated
                .extensions
                .into_iter()
                .map(|(_, extension)| extension)
                .collect(),
        }),
        Err(error) => {
            let mut response = error_response(&error, config);
            if request.protocol.is_some() {
                for_http2(&mut response);
            }
            Err(Rejected {
                response: Box::new(response),
                error,
            })
        }
    }
}

/// Makes an error response fit for HTTP/2: no connection-specific header (RFC 9113
/// §8.2.2), and a 405 that allows the method WebSockets use there.
pub(crate) fn for_http2(response: &mut Response) {
    for name in ["Connection", "Upgrade", "Keep-Alive", "Transfer-Encoding"] {
        response.headers.remove(name);
    }
    if response.status == 405 {
        response.headers.insert("Allow", "CONNECT");
    }
}

/// The single value of a header that must appear at most once.
fn single<'a>(request: &'a Request, name: &'static str) -> Result<Option<&'a str>, HandshakeError> {
    let mut values = request.headers.get_all(name);
    let first = values.next();
    if values.next().is_some() {
        return Err(HandshakeError::InvalidHeader {
            name,
            value: "more than one".into(),
        });
    }
    Ok(first)
}

/// Checks a handshake request (RFC 6455 §4.2.1, or RFC 8441 §5 for an HTTP/2 extended
/// CONNECT) and negotiates subprotocol and extensions.
pub(crate) fn check_request(
    request: &Request,
    config: &Config,
) -> Result<NegotiatedServer, HandshakeError> {
    let accept = match &request.protocol {
        None => Some(check_upgrade(request)?),
        Some(protocol) => {
            check_extended_connect(request, protocol)?;
            None
        }
    };
    // Item 6: "A |Sec-WebSocket-Version| header field, with a value of 13." §4.4: otherwise
    // answer 426 with the versions we support. RFC 8441 §5 keeps it.
    let version = single(request, "Sec-WebSocket-Version")?.unwrap_or_default();
    if version.trim() != "13" {
        return Err(HandshakeError::UnsupportedVersion(version.to_owned()));
    }
    let subprotocol = select_subprotocol(request, config);
    let extensions = negotiate_extensions(request, config)?;
    Ok(NegotiatedServer {
        accept,
        subprotocol,
        extensions,
    })
}

/// RFC 8441 §4–5: a WebSocket over an HTTP/2 stream is a CONNECT with `:protocol` =
/// `websocket`; it has no `Upgrade`, `Connection` or `Sec-WebSocket-Key` (HTTP/2 forbids
/// the first two, and the stream itself proves the server understood).
fn check_extended_connect(request: &Request, protocol: &str) -> Result<(), HandshakeError> {
    if request.method != "CONNECT" {
        return Err(HandshakeError::MethodNotAllowed(request.method.clone()));
    }
    if !protocol.eq_ignore_ascii_case("websocket") {
        return Err(HandshakeError::InvalidHeader {
            name: ":protocol",
            value: protocol.to_owned(),
        });
    }
    // The authority (`:authority`, carried as `Host`) names the server, as over HTTP/1.1.
    if single(request, "Host")?.is_none() {
        return Err(HandshakeError::MissingHeader("Host"));
    }
    Ok(())
}

/// RFC 6455 §4.2.1 items 1–5, over HTTP/1.1; returns the `Sec-WebSocket-Accept` value.
fn check_upgrade(request: &Request) -> Result<String, HandshakeError> {
    // §4.2.1 item 1: "An HTTP/1.1 or higher GET request". The version is checked by the
    // parser (505).
    if request.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed(request.method.clone()));
    }
    // Item 2: "A |Host| header field containing the server's authority."
    if single(request, "Host")?.is_none() {
        return Err(HandshakeError::MissingHeader("Host"));
    }
    // Item 3: "An |Upgrade| header field containing the value "websocket", treated as an
    // ASCII case-insensitive value."
    let upgrade = request.headers.get_all("Upgrade");
    if !has_token(upgrade, "websocket") {
        return Err(match request.headers.get("Upgrade") {
            None => HandshakeError::MissingHeader("Upgrade"),
            Some(value) => HandshakeError::InvalidHeader {
                name: "Upgrade",
                value: value.to_owned(),
            },
        });
    }
    // Item 4: "A |Connection| header field that includes the token "Upgrade", treated as an
    // ASCII case-insensitive value."
    if !has_token(request.headers.get_all("Connection"), "upgrade") {
        return Err(match request.headers.get("Connection") {
            None => HandshakeError::MissingHeader("Connection"),
            Some(value) => HandshakeError::InvalidHeader {
                name: "Connection",
                value: value.to_owned(),
            },
        });
    }
    // Item 5: "A |Sec-WebSocket-Key| header field with a base64-encoded value that, when
    // decoded, is 16 bytes in length."
    let key = single(request, "Sec-WebSocket-Key")?
        .ok_or(HandshakeError::MissingHeader("Sec-WebSocket-Key"))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.trim());
    if decoded.map_or(true, |raw| raw.len() != 16) {
        return Err(HandshakeError::InvalidHeader {
            name: "Sec-WebSocket-Key",
            value: key.to_owned(),
        });
    }
    Ok(accept_key(key.trim()))
}

/// The first of the server's subprotocols that the client offered (RFC 6455 §4.2.2 item 4).
fn select_subprotocol(request: &Request, config: &Config) -> Option<String> {
    let offered = parse_token_list(request.headers.get_all("Sec-WebSocket-Protocol"));
    config
        .subprotocols
        .iter()
        .find(|supported| offered.contains(&supported.as_str()))
        .cloned()
}

/// Lets each configured extension, in the server's order of preference, pick among the
/// client's offers of it; an extension whose reserved bits clash with one already accepted
/// is skipped.
fn negotiate_extensions(
    request: &Request,
    config: &Config,
) -> Result<AcceptedExtensions, HandshakeError> {
    if config.extensions.is_empty() {
        return Ok(Vec::new());
    }
    let offers =
        parse_extensions(request.headers.get_all("Sec-WebSocket-Extensions")).map_err(|value| {
            HandshakeError::InvalidHeader {
                name: "Sec-WebSocket-Extensions",
                value,
            }
        })?;
    let mut accepted: AcceptedExtensions = Vec::new();
    for factory in &config.extensions {
        let offers: Vec<ExtensionParams> = offers
            .iter()
            .filter(|offer| offer.name == factory.name())
            .cloned()
            .collect();
        if offers.is_empty() {
            continue;
        }
        let Some((answer, extension)) = factory.server_accept(&offers) else {
            continue;
        };
        let clashes = accepted
            .iter()
            .any(|(_, other)| other.rsv().intersects(extension.rsv()));
        if !clashes {
            accepted.push((answer, extension));
        }
    }
    Ok(accepted)
}

/// The response for a negotiated request: 101 over HTTP/1.1 (RFC 6455 §4.2.2 item 5), 200
/// over HTTP/2 (RFC 8441 §5).
pub(crate) fn accept_response(negotiated: &NegotiatedServer, config: &Config) -> Response {
    let mut response = Response::new(if negotiated.accept.is_some() {
        101
    } else {
        200
    });
    let headers = &mut response.headers;
    if let Some(accept) = &negotiated.accept {
        headers.append("Upgrade", "websocket");
        headers.append("Connection", "Upgrade");
        headers.append("Sec-WebSocket-Accept", accept.clone());
    }
    if !negotiated.extensions.is_empty() {
        let answers: Vec<String> = negotiated
            .extensions
            .iter()
            .map(|(answer, _)| answer.to_string())
            .collect();
        headers.append("Sec-WebSocket-Extensions", answers.join(", "));
    }
    if let Some(subprotocol) = &negotiated.subprotocol {
        headers.append("Sec-WebSocket-Protocol", subprotocol.clone());
    }
    if let Some(server) = &config.server_header {
        headers.append("Server", server.clone());
    }
    response
}

/// The response that reports a handshake `error`: its status (400 when it has none) and a
/// text that names it.
pub(crate) fn error_response(error: &HandshakeError, config: &Config) -> Response {
    let status = error.status().unwrap_or(400);
    let text = format!("Failed to open a WebSocket connection: {error}.");
    reject_response(status, &text, config)
}

/// An error response with a short plain-text body, closing the connection.
pub(crate) fn reject_response(status: u16, text: &str, config: &Config) -> Response {
    let mut response = Response::text(status, text);
    let headers = &mut response.headers;
    match status {
        405 => headers.append("Allow", "GET"),
        // RFC 6455 §4.4: tell the client which versions we speak.
        426 => {
            headers.append("Upgrade", "websocket");
            headers.append("Sec-WebSocket-Version", "13");
        }
        _ => {}
    }
    if let Some(server) = &config.server_header {
        headers.append("Server", server.clone());
    }
    response
}
