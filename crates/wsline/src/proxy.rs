//! Connecting through an HTTP proxy with `CONNECT` (RFC 9110 §9.3.6), for both clients:
//! the request to send and the parsing of the proxy's answer, without I/O. The layers write
//! the request, read until [`Tunnel::handle_data`] reports the outcome, then run TLS and the
//! WebSocket handshake through the tunnel.

use base64::Engine as _;

use crate::{Error, ProxyError, Result, UriError, WsUri};

/// Most bytes of the proxy's response head read before giving up on it.
const MAX_RESPONSE_HEAD: usize = 16 << 10;
/// Most header fields in the proxy's response.
const MAX_RESPONSE_HEADERS: usize = 64;

/// An HTTP proxy: where it listens and the credentials it may want.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Proxy {
    host: String,
    port: u16,
    credentials: Option<String>,
}

impl Proxy {
    /// Parses `http://[user:password@]host[:port]` (port 80 by default).
    ///
    /// # Errors
    /// [`Error::Uri`] for anything else (HTTPS and SOCKS proxies are not supported).
    pub(crate) fn parse(text: &str) -> Result<Self> {
        // Never the password in an error message: it ends up in logs.
        let shown = crate::uri::without_user_info(text);
        let invalid = |why: &str| Error::Uri(UriError::Invalid(format!("proxy {shown:?}: {why}")));
        let url = url::Url::parse(text).map_err(|error| invalid(&error.to_string()))?;
        if url.scheme() != "http" {
            return Err(Error::Uri(UriError::UnsupportedScheme(format!(
                "{} (only http:// proxies are supported)",
                url.scheme()
            ))));
        }
        let host = url.host_str().ok_or_else(|| invalid("no host"))?;
        let credentials = (!url.username().is_empty()).then(|| {
            let user = crate::uri::percent_decode(url.username());
            let password = crate::uri::percent_decode(url.password().unwrap_or_default());
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        });
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url.port_or_known_default().unwrap_or(80),
            credentials,
        })
    }

    /// The proxy's host, for the TCP connection.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The `CONNECT` request for a tunnel to `uri`'s host and port.
    pub(crate) fn connect_request(&self, uri: &WsUri) -> Vec<u8> {
        let authority = uri.authority();
        let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(credentials) = &self.credentials {
            request.push_str(&format!("Proxy-Authorization: Basic {credentials}\r\n"));
        }
        request.push_str("\r\n");
        request.into_bytes()
    }
}

/// The proxy's answer to `CONNECT`, read incrementally.
#[derive(Debug, Default)]
pub(crate) struct Tunnel {
    head: Vec<u8>,
}

impl Tunnel {
    /// Takes bytes from the proxy: `Ok(true)` once a 2xx response head has been read (the
    /// tunnel is open), `Ok(false)` while more is needed.
    ///
    /// # Errors
    /// [`ProxyError::Refused`] for a refusal (its status and reason),
    /// [`ProxyError::InvalidResponse`] for a malformed or oversized response, or bytes
    /// after the head (the tunnel's peer does not speak first).
    pub(crate) fn handle_data(&mut self, data: &[u8]) -> Result<bool> {
        self.head.extend_from_slice(data);
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&self.head) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response.code.unwrap_or_default();
                if !(200..300).contains(&status) {
                    return Err(ProxyError::Refused {
                        status,
                        reason: response.reason.unwrap_or_default().to_owned(),
                    }
                    .into());
                }
                if len < self.head.len() {
                    return Err(
                        ProxyError::InvalidResponse("data after the response head".into()).into(),
                    );
                }
                Ok(true)
            }
            Ok(httparse::Status::Partial) if self.head.len() <= MAX_RESPONSE_HEAD => Ok(false),
            Ok(httparse::Status::Partial) => Err(ProxyError::InvalidResponse(format!(
                "a response head over {MAX_RESPONSE_HEAD} bytes"
            ))
            .into()),
            Err(error) => Err(ProxyError::InvalidResponse(error.to_string()).into()),
        }
    }
}

/// The end of the stream before the proxy answered.
pub(crate) fn closed_early() -> Error {
    ProxyError::ClosedEarly.into()
}

/// A transport failure while reaching the proxy or setting up the tunnel (refused, reset):
/// a proxy problem, not one of the server's. Timeouts stay the open timeout.
pub(crate) fn transport_error(proxy: &Proxy, error: Error) -> Error {
    match error {
        Error::Io(error) => ProxyError::Unreachable {
            proxy: format!("{}:{}", proxy.host, proxy.port),
            error,
        }
        .into(),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_proxies_with_and_without_credentials() {
        let proxy = Proxy::parse("http://proxy.example:3128").unwrap();
        assert_eq!((proxy.host(), proxy.port()), ("proxy.example", 3128));
        let uri: WsUri = "wss://example.com/chat".parse().unwrap();
        assert_eq!(
            proxy.connect_request(&uri),
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
        );
        let proxy = Proxy::parse("http://us%40er:pass@[::1]").unwrap();
        assert_eq!((proxy.host(), proxy.port()), ("::1", 80));
        let request = String::from_utf8(proxy.connect_request(&uri)).unwrap();
        // base64("us@er:pass")
        assert!(request.contains("Proxy-Authorization: Basic dXNAZXI6cGFzcw==\r\n"));
        assert!(Proxy::parse("socks5://proxy:1080").is_err());
        assert!(Proxy::parse("not a url").is_err());
    }

    #[test]
    fn a_2xx_head_opens_the_tunnel_however_it_is_split() {
        let response = b"HTTP/1.1 200 Connection established\r\nVia: test\r\n\r\n";
        for split in 1..response.len() {
            let mut tunnel = Tunnel::default();
            assert!(!tunnel.handle_data(&response[..split]).unwrap());
            assert!(tunnel.handle_data(&response[split..]).unwrap());
        }
    }

    #[test]
    fn refusals_bad_heads_and_early_data_are_errors() {
        let refused = Tunnel::default()
            .handle_data(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            .unwrap_err();
        assert!(refused.to_string().contains("407"), "{refused}");
        assert!(Tunnel::default().handle_data(b"garbage\r\n\r\n").is_err());
        assert!(Tunnel::default()
            .handle_data(b"HTTP/1.1 200 OK\r\n\r\nearly")
            .is_err());
        let mut tunnel = Tunnel::default();
        let line = [b'a'; 1024];
        let mut result = tunnel.handle_data(b"HTTP/1.1 200 OK\r\nX: ");
        while let Ok(false) = result {
            result = tunnel.handle_data(&line);
        }
        assert!(result.is_err(), "an endless head is refused");
    }
}
