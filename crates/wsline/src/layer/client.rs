//! The client side of opening a connection, shared by the sync and tokio clients: the
//! handshake request each attempt sends, and whether a refused attempt is a redirect to
//! follow (as browsers and Python websockets do) or the error to report.
//!
//! No I/O: each layer connects (directly or through a proxy), runs TLS and moves the
//! handshake bytes its own way, then hands the outcome back here.

use std::time::Instant;

use crate::proto::{self, HandshakeError};
use crate::{ConnectConfig, Error, Result, WsUri};

/// The statuses that redirect (RFC 9110 §15.4).
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// A client connection to `uri` with its handshake request queued: the core's request
/// (RFC 6455 §4.1) with `config`'s `Origin` and extra headers added.
pub(crate) fn handshake_connection(
    uri: WsUri,
    config: &ConnectConfig,
    now: Instant,
) -> Result<proto::Connection, proto::SendError> {
    let mut conn = proto::Connection::client(uri, config.protocol.clone(), now);
    let mut request = conn.connect_request()?;
    config.apply_to(&mut request);
    conn.send_request(request)?;
    Ok(conn)
}

/// Refuses [`Http2Policy::Always`] on a client that cannot speak HTTP/2 (`client` names
/// it): every attempt would fail the same way, so none is made.
///
/// # Errors
/// [`Error::Unsupported`] when `config` asks for HTTP/2 always.
#[cfg(any(feature = "sync", not(feature = "http2")))]
pub(crate) fn refuse_http2(config: &ConnectConfig, client: &str) -> Result<()> {
    if config.http2 == crate::Http2Policy::Always {
        return Err(Error::Unsupported(format!(
            "Http2Policy::Always: {client} speaks HTTP/1.1 only (HTTP/2 needs the tokio \
             client and the `http2` feature)"
        )));
    }
    Ok(())
}

/// One client's way to an open connection across redirects: where the next attempt goes,
/// with which settings, and what a failed attempt means.
///
/// A layer drives it so:
///
/// ```text
/// let mut opening = Opening::new(uri, config);
/// loop {
///     match attempt(&opening) {        // attempt_uri(), connect, TLS, handshake
///         Ok(ws) => return Ok(ws),
///         Err(error) => opening.handle_failure(error)?,
///     }
/// }
/// ```
#[derive(Debug)]
pub(crate) struct Opening {
    uri: WsUri,
    config: ConnectConfig,
    /// Redirects followed so far.
    redirects: usize,
}

impl Opening {
    /// The opening of a connection to `uri` with `config`.
    pub(crate) fn new(uri: WsUri, config: ConnectConfig) -> Self {
        Self {
            uri,
            config,
            redirects: 0,
        }
    }

    /// The URI the next attempt connects to.
    ///
    /// # Errors
    /// [`Error::Tls`] for a `wss://` URI when the build has no TLS (feature `rustls`): no
    /// attempt could succeed, so none is made.
    pub(crate) fn attempt_uri(&self) -> Result<&WsUri> {
        if self.uri.is_secure() && cfg!(not(feature = "rustls")) {
            return Err(Error::no_tls(&self.uri));
        }
        Ok(&self.uri)
    }

    /// The settings of the next attempt: those given, less the extra headers once a
    /// redirect has left their origin.
    pub(crate) fn config(&self) -> &ConnectConfig {
        &self.config
    }

    /// Takes the failure of the last attempt: `Ok` when it was a redirect to follow (the
    /// next attempt goes to its `Location`, resolved against the URI), else the error to
    /// report (also the last redirect, once [`ConnectConfig::max_redirects`] have been
    /// followed).
    ///
    /// Credentials stay with their origin: a redirect within the origin (scheme, host,
    /// port) keeps the URI's user info, and one to another origin drops the configuration's
    /// extra headers (`Authorization`, cookies…) for the attempts that follow.
    ///
    /// # Errors
    /// `error` itself when it is not a redirect to follow; [`Error::Uri`] for a `Location`
    /// that is not a WebSocket URI; [`Error::Tls`] for a redirect from `wss://` to `ws://`
    /// (it would drop TLS).
    pub(crate) fn handle_failure(&mut self, error: Error) -> Result<()> {
        if self.redirects >= self.config.max_redirects {
            return Err(error);
        }
        let Error::Handshake(HandshakeError::Rejected(response)) = &error else {
            return Err(error);
        };
        let location = match response.headers.get("Location") {
            Some(location) if REDIRECT_STATUSES.contains(&response.status) => location,
            _ => return Err(error),
        };
        let mut next = self.uri.join(location)?;
        if self.uri.is_secure() && !next.is_secure() {
            return Err(Error::Tls(format!(
                "refusing the redirect from {} to {next}: it would drop TLS",
                self.uri
            )));
        }
        if self.uri.same_origin(&next) {
            next.inherit_user_info(&self.uri);
        } else {
            self.config.headers.clear();
        }
        tracing::debug!(status = response.status, from = %self.uri, to = %next, "following a redirect");
        self.uri = next;
        self.redirects += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::{handshake_connection, Opening};
    use crate::proto::{HandshakeError, Response, Transmit};
    use crate::{ConnectConfig, Error, WsUri};

    fn uri(text: &str) -> WsUri {
        text.parse().unwrap()
    }

    fn refusal(status: u16, location: Option<&str>) -> Error {
        let mut response = Response::new(status);
        if let Some(location) = location {
            response.headers.insert("Location", location);
        }
        Error::Handshake(HandshakeError::Rejected(Box::new(response)))
    }

    fn refused_status(result: crate::Result<()>) -> u16 {
        match result {
            Err(Error::Handshake(HandshakeError::Rejected(response))) => response.status,
            other => panic!("expected the refusal back, got {other:?}"),
        }
    }

    fn with_secret_header() -> ConnectConfig {
        ConnectConfig {
            headers: vec![("Authorization".into(), "Bearer secret".into())],
            ..ConnectConfig::default()
        }
    }

    #[test]
    fn the_request_carries_the_configured_origin_and_extra_headers() {
        let config = ConnectConfig {
            origin: Some("https://example.com".into()),
            headers: vec![("X-Token".into(), "t".into())],
            ..ConnectConfig::default()
        };
        let mut conn = handshake_connection(uri("ws://example.com/chat"), &config, Instant::now())
            .expect("a new client connection builds its request");
        let Some(Transmit::Bytes(request)) = conn.poll_transmit() else {
            panic!("no request queued");
        };
        let request = String::from_utf8(request.to_vec()).unwrap();
        assert!(request.starts_with("GET /chat HTTP/1.1\r\n"), "{request}");
        assert!(
            request.contains("\r\nOrigin: https://example.com\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nX-Token: t\r\n"), "{request}");
    }

    #[test]
    fn a_redirect_is_followed_to_its_location_resolved_against_the_uri() {
        for status in [301, 302, 303, 307, 308] {
            let mut opening = Opening::new(uri("ws://example.com/a/b"), ConnectConfig::default());
            opening
                .handle_failure(refusal(status, Some("c?x=1")))
                .unwrap();
            assert_eq!(
                opening.attempt_uri().unwrap(),
                &uri("ws://example.com/a/c?x=1")
            );
        }
    }

    #[test]
    fn a_refusal_that_is_not_a_redirect_is_reported() {
        let mut opening = Opening::new(uri("ws://example.com/"), ConnectConfig::default());
        assert_eq!(
            refused_status(opening.handle_failure(refusal(403, Some("/x")))),
            403
        );
        assert_eq!(
            refused_status(opening.handle_failure(refusal(302, None))),
            302
        );
        let io = Error::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert!(matches!(opening.handle_failure(io), Err(Error::Io(_))));
        assert_eq!(opening.attempt_uri().unwrap(), &uri("ws://example.com/"));
    }

    #[test]
    fn the_redirect_past_max_redirects_is_reported() {
        let config = ConnectConfig {
            max_redirects: 2,
            ..ConnectConfig::default()
        };
        let mut opening = Opening::new(uri("ws://example.com/0"), config);
        opening.handle_failure(refusal(302, Some("/1"))).unwrap();
        opening.handle_failure(refusal(302, Some("/2"))).unwrap();
        assert_eq!(
            refused_status(opening.handle_failure(refusal(302, Some("/3")))),
            302
        );
        assert_eq!(opening.attempt_uri().unwrap(), &uri("ws://example.com/2"));
    }

    #[test]
    fn a_redirect_within_the_origin_keeps_credentials() {
        let mut opening = Opening::new(uri("ws://user:pw@example.com/"), with_secret_header());
        opening
            .handle_failure(refusal(307, Some("/moved")))
            .unwrap();
        let next = opening.attempt_uri().unwrap();
        assert_eq!(next.user_info(), Some(("user", "pw")));
        assert_eq!(opening.config().headers.len(), 1);
    }

    #[test]
    fn a_redirect_to_another_origin_drops_the_extra_headers_and_user_info() {
        let mut opening = Opening::new(uri("ws://user:pw@example.com/"), with_secret_header());
        opening
            .handle_failure(refusal(307, Some("ws://example.com:8080/")))
            .unwrap();
        assert_eq!(opening.attempt_uri().unwrap().user_info(), None);
        assert!(opening.config().headers.is_empty());
    }

    #[test]
    fn a_redirect_from_wss_to_ws_is_refused_as_a_tls_error() {
        let mut opening = Opening::new(uri("wss://example.com/"), ConnectConfig::default());
        let result = opening.handle_failure(refusal(301, Some("ws://example.com/")));
        assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
    }

    #[test]
    fn a_location_that_is_not_a_websocket_uri_is_a_uri_error() {
        let mut opening = Opening::new(uri("ws://example.com/"), ConnectConfig::default());
        let result = opening.handle_failure(refusal(302, Some("ftp://example.com/")));
        assert!(matches!(result, Err(Error::Uri(_))), "{result:?}");
    }
}
