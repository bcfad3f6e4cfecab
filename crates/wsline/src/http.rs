//! WebSocket handshakes on the [`http`] crate's types, for servers whose HTTP stack is
//! hyper, axum or another that speaks them: [`accept`] turns the request's
//! [`Parts`](http::request::Parts) into the response to send and what it negotiated —
//! subprotocol and extensions (permessage-deflate with every RFC 7692 parameter), with the
//! same checks and statuses as wsline's own servers ([`proto::negotiate`]). Over HTTP/1.1
//! that is a `GET` with `Upgrade: websocket` answered with 101; over HTTP/2 an extended
//! CONNECT (RFC 8441: `:protocol` = `websocket`, which hyper hands over as
//! [`hyper::ext::Protocol`]) answered with 200.
//!
//! After the response, open the WebSocket on the upgraded stream with
//! [`Accepted::into_websocket`] (tokio) or [`Accepted::into_connection`] (sans-I/O): it
//! keeps what was negotiated, so compression works after an external upgrade.
//!
//! ```
//! use wsline::http::accept;
//! use wsline::ServerConfig;
//!
//! let request = http::Request::get("/chat")
//!     .header("Host", "example.com")
//!     .header("Upgrade", "websocket")
//!     .header("Connection", "Upgrade")
//!     .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
//!     .header("Sec-WebSocket-Version", "13")
//!     .header("Sec-WebSocket-Extensions", "permessage-deflate")
//!     .body(())?;
//! let (parts, ()) = request.into_parts();
//! // wsline's server defaults: permessage-deflate offered.
//! let accepted = accept(&parts, ServerConfig::default().protocol).expect("a valid handshake");
//! let response: http::Response<Vec<u8>> = accepted.response();
//! assert_eq!(response.status(), 101);
//! assert_eq!(response.headers()["Sec-WebSocket-Accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
//! assert_eq!(accepted.extension_names().collect::<Vec<_>>(), ["permessage-deflate"]);
//! # Ok::<(), http::Error>(())
//! ```

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{StatusCode, Version};

use crate::proto::{self, Config, Connection, HandshakeError, Headers};

/// A handshake request that [`accept`] took: send [`response`](Self::response), then open
/// the WebSocket on the upgraded stream.
#[derive(Debug)]
pub struct Accepted {
    negotiated: proto::Negotiated,
    config: Arc<Config>,
    version: Version,
    request: proto::Request,
}

impl Accepted {
    /// The response to send: 101 over HTTP/1.1, 200 over HTTP/2, with the headers that name
    /// what was negotiated (add others, such as `Set-Cookie`, if needed). `B` is the body
    /// type of your HTTP stack (`Full<Bytes>`, `axum::body::Body`, `Vec<u8>`, …); the body
    /// is empty.
    #[must_use]
    pub fn response<B: From<Bytes>>(&self) -> http::Response<B> {
        to_http(self.negotiated.response(), self.version)
    }

    /// The subprotocol selected (`Config::subprotocols` against the client's offer).
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        self.negotiated.subprotocol()
    }

    /// The names of the extensions accepted, such as `permessage-deflate`.
    pub fn extension_names(&self) -> impl Iterator<Item = &str> {
        self.negotiated.extension_names()
    }

    /// The HTTP version the handshake came over.
    #[must_use]
    pub fn http_version(&self) -> Version {
        self.version
    }

    /// The handshake request as the core saw it (method, target, `:protocol`, headers); the
    /// WebSocket keeps it ([`WebSocket::request`](crate::tokio::WebSocket::request)).
    #[must_use]
    pub fn request(&self) -> &proto::Request {
        &self.request
    }

    /// The sans-I/O connection, open, with what was negotiated in use; `now` starts its
    /// keepalive timers.
    #[must_use]
    pub fn into_connection(self, now: Instant) -> Connection {
        Connection::from_negotiated(self.negotiated, self.config, now)
    }

    /// The core's response, before it is mapped to `http` types.
    #[cfg(feature = "http2")]
    pub(crate) fn core_response(&self) -> &proto::Response {
        self.negotiated.response()
    }

    /// What was negotiated and the request, for a server that builds the WebSocket itself.
    #[cfg(feature = "http2")]
    pub(crate) fn into_parts(self) -> (proto::Negotiated, proto::Request) {
        (self.negotiated, self.request)
    }

    /// The tokio WebSocket over `stream`, the upgraded connection (hyper's
    /// `TokioIo<Upgraded>`, say, which also hands back any bytes hyper read past the
    /// request head), with what was negotiated in use and the request kept.
    #[cfg(feature = "tokio")]
    #[must_use]
    pub fn into_websocket<S>(self, stream: S) -> crate::tokio::WebSocket<S>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut ws =
            crate::tokio::WebSocket::from_negotiated(stream, self.negotiated, self.config, &[]);
        ws.set_request(self.request);
        ws
    }
}

/// A handshake request that [`accept`] refused: why, and the response that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    rejected: proto::Rejected,
    version: Version,
}

impl Rejected {
    /// What is wrong with the request.
    #[must_use]
    pub fn error(&self) -> &HandshakeError {
        &self.rejected.error
    }

    /// The core's response, before it is mapped to `http` types.
    #[cfg(feature = "http2")]
    pub(crate) fn core_response(&self) -> &proto::Response {
        &self.rejected.response
    }

    /// The response to send: the status of [`HandshakeError::status`] (400, 405, 426, 505,
    /// …) with a plain-text body that names the problem.
    #[must_use]
    pub fn response<B: From<Bytes>>(&self) -> http::Response<B> {
        to_http(&self.rejected.response, self.version)
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.rejected.error.fmt(f)
    }
}

impl std::error::Error for Rejected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.rejected.error)
    }
}

/// Checks the request head `parts` as a WebSocket handshake and negotiates subprotocol and
/// extensions with `config`. `ServerConfig::default().protocol` is what wsline's servers
/// use, with permessage-deflate; `Config::default()` has no extension. Pass an
/// `Arc<Config>` to share one configuration between connections.
///
/// # Errors
/// [`Rejected`] for a request that is not a valid handshake, with its error response.
pub fn accept(
    parts: &http::request::Parts,
    config: impl Into<Arc<Config>>,
) -> Result<Accepted, Rejected> {
    accept_request(&to_request(parts), parts.version, config.into())
}

/// [`accept`] on the core's view of the request that came over `version`.
pub(crate) fn accept_request(
    request: &proto::Request,
    version: Version,
    config: Arc<Config>,
) -> Result<Accepted, Rejected> {
    let outcome = if version < Version::HTTP_11 {
        // RFC 6455 §4.1: "the HTTP version MUST be at least 1.1", as wsline's parser says.
        Err(reject(
            HandshakeError::UnsupportedHttpVersion,
            version,
            &config,
        ))
    } else if version >= Version::HTTP_2 && request.protocol.is_none() {
        // RFC 8441 §4: over HTTP/2 only an extended CONNECT opens a WebSocket; there is no
        // Upgrade and no 101 (RFC 9113 §8.6).
        let error = if request.method == "CONNECT" {
            HandshakeError::MissingHeader(":protocol")
        } else {
            HandshakeError::MethodNotAllowed(request.method.clone())
        };
        Err(reject(error, version, &config))
    } else {
        proto::negotiate(request, &config)
    };
    match outcome {
        Ok(negotiated) => Ok(Accepted {
            negotiated,
            config,
            version,
            request: request.clone(),
        }),
        Err(rejected) => Err(Rejected { rejected, version }),
    }
}

fn reject(error: HandshakeError, version: Version, config: &Config) -> proto::Rejected {
    let mut response = proto::error_response(&error, config);
    if version >= Version::HTTP_2 {
        proto::for_http2(&mut response);
    }
    proto::Rejected {
        error,
        response: Box::new(response),
    }
}

/// The core's view of the request: method, target, `:protocol`, headers; over HTTP/2 the
/// `:authority` becomes `Host` when there is none.
pub(crate) fn to_request(parts: &http::request::Parts) -> proto::Request {
    let mut headers = core_headers(&parts.headers);
    if parts.version >= Version::HTTP_2 && !parts.headers.contains_key(HOST) {
        if let Some(authority) = parts.uri.authority() {
            headers.append("Host", authority.as_str());
        }
    }
    proto::Request {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or("/", |target| target.as_str())
            .to_owned(),
        protocol: protocol(parts),
        headers,
    }
}

/// `map` as the core's header fields, every value kept (a value that is not UTF-8, which
/// no WebSocket header may have, arrives lossily, as from wsline's own parser).
pub(crate) fn core_headers(map: &http::HeaderMap) -> Headers {
    let mut headers = Headers::new();
    for (name, value) in map {
        headers.append(
            name.as_str(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
    }
    headers
}

/// The `:protocol` of an HTTP/2 extended CONNECT, as hyper (and axum) or the `h2` crate
/// hand it over.
fn protocol(parts: &http::request::Parts) -> Option<String> {
    if parts.version < Version::HTTP_2 {
        return None;
    }
    let extensions = &parts.extensions;
    extensions
        .get::<hyper::ext::Protocol>()
        .map(|protocol| protocol.as_str().to_owned())
        .or_else(|| {
            extensions
                .get::<h2::ext::Protocol>()
                .map(|protocol| protocol.as_str().to_owned())
        })
}

/// The core's response as an `http` one. Connection management is the HTTP stack's, so
/// `Connection` goes, except on a 101, whose `Connection: Upgrade` is the upgrade itself;
/// over HTTP/2 every connection-specific header goes (RFC 9113 §8.2.2), whatever a hook
/// added.
pub(crate) fn to_http<B: From<Bytes>>(
    response: &proto::Response,
    version: Version,
) -> http::Response<B> {
    let mut out = http::Response::new(B::from(response.body.clone()));
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_REQUEST);
    *out.version_mut() = version;
    for (name, value) in response.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            tracing::debug!(name, value, "header not representable in http; left out");
            continue;
        };
        if (name == CONNECTION && response.status != 101)
            || (version >= Version::HTTP_2 && is_connection_specific(&name))
        {
            continue;
        }
        out.headers_mut().append(name, value);
    }
    out
}

/// The fields HTTP/2 forbids (RFC 9113 §8.2.2).
fn is_connection_specific(name: &HeaderName) -> bool {
    [CONNECTION, UPGRADE, TRANSFER_ENCODING].contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request() -> http::request::Builder {
        http::Request::get("/chat?room=1")
            .header("Host", "example.com")
            .header("Upgrade", "websocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13")
    }

    fn deflate() -> Config {
        crate::ServerConfig::default().protocol
    }

    fn parts(builder: http::request::Builder) -> http::request::Parts {
        builder.body(()).unwrap().into_parts().0
    }

    /// An HTTP/2 extended CONNECT as hyper hands it over (RFC 8441 §5).
    fn connect_request() -> http::request::Builder {
        http::Request::connect("https://example.com/chat")
            .version(Version::HTTP_2)
            .extension(hyper::ext::Protocol::from_static("websocket"))
            .header("Sec-WebSocket-Version", "13")
    }

    #[test]
    fn an_http1_upgrade_is_answered_with_101_and_the_rfc_accept_value() {
        let accepted = accept(&parts(upgrade_request()), Config::default()).unwrap();
        let response: http::Response<Vec<u8>> = accepted.response();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let headers = response.headers();
        assert_eq!(headers["Upgrade"], "websocket");
        assert_eq!(headers["Connection"], "Upgrade");
        // RFC 6455 §1.3.
        assert_eq!(
            headers["Sec-WebSocket-Accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(!headers.contains_key("Sec-WebSocket-Extensions"));
        assert_eq!(accepted.http_version(), Version::HTTP_11);
    }

    #[test]
    fn deflate_is_negotiated_with_its_parameters_and_subprotocols_selected() {
        let mut config = deflate();
        config.subprotocols = vec!["chat".into(), "superchat".into()];
        let request = upgrade_request()
            .header(
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits; server_no_context_takeover",
            )
            .header("Sec-WebSocket-Protocol", "superchat, chat");
        let accepted = accept(&parts(request), config).unwrap();
        let response: http::Response<Vec<u8>> = accepted.response();
        let extensions = response.headers()["Sec-WebSocket-Extensions"]
            .to_str()
            .unwrap();
        assert!(
            extensions.starts_with("permessage-deflate")
                && extensions.contains("server_no_context_takeover"),
            "{extensions}"
        );
        assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "chat");
        assert_eq!(accepted.subprotocol(), Some("chat"));
        let connection = accepted.into_connection(Instant::now());
        assert_eq!(connection.state(), proto::State::Open);
        assert_eq!(connection.extensions()[0].name(), "permessage-deflate");
        assert_eq!(connection.subprotocol(), Some("chat"));
    }

    #[test]
    fn an_http2_extended_connect_is_answered_with_200_and_no_key() {
        let request = connect_request().header("Sec-WebSocket-Extensions", "permessage-deflate");
        let accepted = accept(&parts(request), deflate()).unwrap();
        let response: http::Response<Vec<u8>> = accepted.response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_2);
        let headers = response.headers();
        for forbidden in ["Upgrade", "Connection", "Sec-WebSocket-Accept"] {
            assert!(!headers.contains_key(forbidden), "{forbidden} over HTTP/2");
        }
        assert!(headers["Sec-WebSocket-Extensions"]
            .to_str()
            .unwrap()
            .starts_with("permessage-deflate"));
        assert_eq!(accepted.http_version(), Version::HTTP_2);
    }

    #[test]
    fn an_http2_connect_for_another_protocol_or_without_version_is_refused() {
        let other = connect_request().extension(hyper::ext::Protocol::from_static("webtransport"));
        let rejected = accept(&parts(other), Config::default()).unwrap_err();
        assert_eq!(rejected.response::<Vec<u8>>().status(), 400);
        assert!(
            matches!(
                rejected.error(),
                HandshakeError::InvalidHeader {
                    name: ":protocol",
                    ..
                }
            ),
            "{rejected}"
        );
        let no_version = http::Request::connect("https://example.com/chat")
            .version(Version::HTTP_2)
            .extension(hyper::ext::Protocol::from_static("websocket"));
        let rejected = accept(&parts(no_version), Config::default()).unwrap_err();
        let response = rejected.response::<Vec<u8>>();
        assert_eq!(response.status(), 426);
        assert_eq!(response.headers()["Sec-WebSocket-Version"], "13");
        for forbidden in ["Connection", "Upgrade"] {
            assert!(
                !response.headers().contains_key(forbidden),
                "{forbidden} over HTTP/2"
            );
        }
    }

    /// Regression (review): an HTTP/2 request with HTTP/1.1's upgrade headers got a 101.
    #[test]
    fn over_http2_only_an_extended_connect_opens_a_websocket() {
        let get = upgrade_request().version(Version::HTTP_2);
        let rejected = accept(&parts(get), Config::default()).unwrap_err();
        let response = rejected.response::<Vec<u8>>();
        assert_eq!(response.status(), 405, "{rejected}");
        assert_eq!(response.headers()["Allow"], "CONNECT");
        let connect = http::Request::connect("https://example.com/chat")
            .version(Version::HTTP_2)
            .header("Sec-WebSocket-Version", "13");
        let rejected = accept(&parts(connect), Config::default()).unwrap_err();
        assert_eq!(
            rejected.error(),
            &HandshakeError::MissingHeader(":protocol")
        );
    }

    #[test]
    fn the_h2_crates_protocol_extension_is_read_too() {
        let request = http::Request::connect("https://example.com/chat")
            .version(Version::HTTP_2)
            .extension(h2::ext::Protocol::from("websocket"))
            .header("Sec-WebSocket-Version", "13");
        let accepted = accept(&parts(request), Config::default()).unwrap();
        assert_eq!(accepted.response::<Vec<u8>>().status(), StatusCode::OK);
        assert_eq!(accepted.request().protocol.as_deref(), Some("websocket"));
    }

    #[test]
    fn an_http1_request_without_host_is_refused_even_in_absolute_form() {
        let request = http::Request::get("http://example.com/chat")
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13");
        let rejected = accept(&parts(request), Config::default()).unwrap_err();
        assert_eq!(rejected.error(), &HandshakeError::MissingHeader("Host"));
    }

    #[test]
    fn invalid_http1_requests_get_the_statuses_of_the_builtin_servers() {
        let cases = [
            (upgrade_request().method("POST"), 405),
            (upgrade_request().header("Sec-WebSocket-Version", "8"), 400),
            (
                http::Request::get("/chat")
                    .header("Host", "example.com")
                    .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
                    .header("Sec-WebSocket-Version", "13"),
                400,
            ),
            (upgrade_request().version(Version::HTTP_10), 505),
        ];
        for (request, status) in cases {
            let rejected = accept(&parts(request), Config::default()).unwrap_err();
            let response: http::Response<Vec<u8>> = rejected.response();
            assert_eq!(response.status(), status, "{rejected}");
            assert!(String::from_utf8(response.into_body())
                .unwrap()
                .starts_with("Failed to open a WebSocket connection"));
        }
    }
}
