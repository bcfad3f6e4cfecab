//! The server's side of the opening handshake (RFC 6455 §4.2).

use base64::Engine as _;

use super::headers::{accept_key, has_token, parse_extensions, parse_token_list};
use super::{HandshakeError, Request, Response};
use crate::proto::extension::{Extension, ExtensionParams};
use crate::proto::Config;

/// Extensions a server accepted: its answer for the response and the extension itself.
pub(crate) type AcceptedExtensions = Vec<(ExtensionParams, Box<dyn Extension>)>;

/// What a valid request negotiated, to be sent in a 101 response.
#[derive(Debug)]
pub(crate) struct NegotiatedServer {
    pub accept: String,
    pub subprotocol: Option<String>,
    pub extensions: AcceptedExtensions,
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

/// Checks a handshake request (RFC 6455 §4.2.1) and negotiates subprotocol and extensions.
pub(crate) fn check_request(
    request: &Request,
    config: &Config,
) -> Result<NegotiatedServer, HandshakeError> {
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
    // Item 6: "A |Sec-WebSocket-Version| header field, with a value of 13." §4.4: otherwise
    // answer 426 with the versions we support.
    let version = single(request, "Sec-WebSocket-Version")?.unwrap_or_default();
    if version.trim() != "13" {
        return Err(HandshakeError::UnsupportedVersion(version.to_owned()));
    }
    let subprotocol = select_subprotocol(request, config);
    let extensions = negotiate_extensions(request, config)?;
    Ok(NegotiatedServer {
        accept: accept_key(key.trim()),
        subprotocol,
        extensions,
    })
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

/// The 101 response for a negotiated request (RFC 6455 §4.2.2 item 5).
pub(crate) fn accept_response(negotiated: &NegotiatedServer, config: &Config) -> Response {
    let mut response = Response::new(101);
    let headers = &mut response.headers;
    headers.append("Upgrade", "websocket");
    headers.append("Connection", "Upgrade");
    headers.append("Sec-WebSocket-Accept", negotiated.accept.clone());
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
