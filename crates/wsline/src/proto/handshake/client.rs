//! The client's side of the opening handshake (RFC 6455 §4.1).

use base64::Engine as _;

use super::headers::{accept_key, has_token, parse_extensions, parse_token_list};
use super::{HandshakeError, Request, Response};
use crate::proto::extension::{Extension, NegotiationError};
use crate::proto::Config;
use crate::proto::WsUri;

/// What a valid 101 response negotiated.
#[derive(Debug)]
pub(crate) struct NegotiatedClient {
    pub subprotocol: Option<String>,
    pub extensions: Vec<Box<dyn Extension>>,
}

/// A `Sec-WebSocket-Key`: 16 random bytes, base64-encoded (RFC 6455 §4.1 item 7).
pub(crate) fn generate_key(random: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(random)
}

/// The opening handshake request for `uri` (RFC 6455 §4.1).
pub(crate) fn build_request(uri: &WsUri, key: &str, config: &Config) -> Request {
    let mut request = Request {
        method: "GET".into(),
        path: uri.resource().to_owned(),
        protocol: None,
        headers: super::Headers::new(),
    };
    let headers = &mut request.headers;
    headers.append("Host", uri.host_header());
    headers.append("Upgrade", "websocket");
    headers.append("Connection", "Upgrade");
    headers.append("Sec-WebSocket-Key", key);
    append_websocket_headers(&mut request, uri, config);
    request
}

#[cfg(feature = "http2")]
/// The extended CONNECT that opens a WebSocket on an HTTP/2 stream for `uri` (RFC 8441
/// §4–5): `:protocol` websocket, the authority in the URI (no `Host`), no key.
pub(crate) fn build_extended_connect(uri: &WsUri, config: &Config) -> Request {
    let mut request = Request {
        method: "CONNECT".into(),
        path: uri.resource().to_owned(),
        protocol: Some("websocket".into()),
        headers: super::Headers::new(),
    };
    append_websocket_headers(&mut request, uri, config);
    request
}

/// The header fields of both handshakes: version, extension offers, subprotocols,
/// credentials from the URI, `User-Agent`.
fn append_websocket_headers(request: &mut Request, uri: &WsUri, config: &Config) {
    let headers = &mut request.headers;
    headers.append("Sec-WebSocket-Version", "13");
    let offers: Vec<String> = config
        .extensions
        .iter()
        .flat_map(|factory| factory.client_offers())
        .map(|offer| offer.to_string())
        .collect();
    if !offers.is_empty() {
        headers.append("Sec-WebSocket-Extensions", offers.join(", "));
    }
    if !config.subprotocols.is_empty() {
        headers.append("Sec-WebSocket-Protocol", config.subprotocols.join(", "));
    }
    if let Some((user, password)) = uri.user_info() {
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers.append("Authorization", format!("Basic {credentials}"));
    }
    if let Some(user_agent) = &config.user_agent {
        headers.append("User-Agent", user_agent.clone());
    }
}

/// Checks the server's response (RFC 6455 §4.1, "the client MUST validate the server's
/// response as follows") and accepts what it negotiated. `key` is the request's
/// `Sec-WebSocket-Key`; `None` for an HTTP/2 extended CONNECT, answered with 200 and
/// neither `Upgrade`, `Connection` nor `Sec-WebSocket-Accept` (RFC 8441 §5).
pub(crate) fn check_response(
    response: &Response,
    key: Option<&str>,
    config: &Config,
) -> Result<NegotiatedClient, HandshakeError> {
    // Item 1: "If the status code received from the server is not 101, the client handles
    // the response per HTTP procedures."
    let opened = if key.is_some() { 101 } else { 200 };
    if response.status != opened {
        return Err(HandshakeError::Rejected(Box::new(response.clone())));
    }
    if let Some(key) = key {
        check_upgrade(response, key)?;
    }
    negotiated(response, config)
}

/// Items 2–4, over HTTP/1.1.
fn check_upgrade(response: &Response, key: &str) -> Result<(), HandshakeError> {
    let headers = &response.headers;
    // Items 2 and 3: Upgrade "websocket" and Connection "Upgrade", case-insensitive.
    if !has_token(headers.get_all("Upgrade"), "websocket") {
        return Err(missing_or_invalid(response, "Upgrade"));
    }
    if !has_token(headers.get_all("Connection"), "upgrade") {
        return Err(missing_or_invalid(response, "Connection"));
    }
    // Item 4: Sec-WebSocket-Accept must be base64(SHA-1(key + GUID)).
    let accept = headers
        .get("Sec-WebSocket-Accept")
        .ok_or(HandshakeError::MissingHeader("Sec-WebSocket-Accept"))?;
    if accept.trim() != accept_key(key) {
        return Err(HandshakeError::InvalidAccept);
    }
    Ok(())
}

/// Items 5 and 6: the subprotocol and extensions the server chose among the offers.
fn negotiated(response: &Response, config: &Config) -> Result<NegotiatedClient, HandshakeError> {
    let headers = &response.headers;
    // Item 6: the subprotocol must be one the client offered, and there is at most one.
    let chosen = parse_token_list(headers.get_all("Sec-WebSocket-Protocol"));
    let subprotocol = match chosen.as_slice() {
        [] => None,
        [one] if config.subprotocols.iter().any(|offered| offered == one) => {
            Some((*one).to_owned())
        }
        _ => {
            let value = chosen.join(", ");
            return Err(HandshakeError::InvalidSubprotocol(value));
        }
    };
    // Item 5: every extension in the answer must be one the client offered.
    let answers =
        parse_extensions(headers.get_all("Sec-WebSocket-Extensions")).map_err(|value| {
            HandshakeError::InvalidHeader {
                name: "Sec-WebSocket-Extensions",
                value,
            }
        })?;
    let mut extensions: Vec<Box<dyn Extension>> = Vec::new();
    for answer in &answers {
        let factory = config
            .extensions
            .iter()
            .find(|factory| factory.name() == answer.name)
            .ok_or_else(|| NegotiationError {
                name: answer.name.clone(),
                reason: "not offered".into(),
            })?;
        if extensions
            .iter()
            .any(|accepted| accepted.name() == answer.name)
        {
            return Err(NegotiationError {
                name: answer.name.clone(),
                reason: "accepted twice".into(),
            }
            .into());
        }
        let extension = factory.client_accept(answer)?;
        if extensions
            .iter()
            .any(|accepted| accepted.rsv().intersects(extension.rsv()))
        {
            return Err(NegotiationError {
                name: answer.name.clone(),
                reason: "reserved bits clash with another extension".into(),
            }
            .into());
        }
        extensions.push(extension);
    }
    Ok(NegotiatedClient {
        subprotocol,
        extensions,
    })
}

fn missing_or_invalid(response: &Response, name: &'static str) -> HandshakeError {
    match response.headers.get(name) {
        None => HandshakeError::MissingHeader(name),
        Some(value) => HandshakeError::InvalidHeader {
            name,
            value: value.to_owned(),
        },
    }
}
