//! WebSocket URIs (RFC 6455 §3): `ws://host[:port]/resource` and `wss://…`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A parsed `ws://` or `wss://` URI. Hosts are normalized by the `url` crate: lowercase,
/// international names in their IDNA (punycode) form, IPv6 addresses in brackets.
///
/// ```
/// use wsline::WsUri;
/// let uri: WsUri = "ws://Example.COM/chat?room=1".parse().unwrap();
/// assert_eq!((uri.host(), uri.port(), uri.resource()), ("example.com", 80, "/chat?room=1"));
/// let idn: WsUri = "wss://bücher.example/".parse().unwrap();
/// assert_eq!((idn.host(), idn.port()), ("xn--bcher-kva.example", 443));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsUri {
    secure: bool,
    host: String,
    port: u16,
    resource: String,
    user_info: Option<(String, String)>,
}

/// Why a string is not a WebSocket URI.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UriError {
    /// Not a URI at all.
    #[error("invalid URI: {0}")]
    Invalid(String),
    /// A scheme other than `ws` or `wss`.
    #[error("scheme {0:?} is not ws or wss")]
    UnsupportedScheme(String),
    /// No host.
    #[error("URI has no host")]
    MissingHost,
    /// A fragment, which RFC 6455 §3 forbids.
    #[error("URI has a fragment")]
    Fragment,
}

impl WsUri {
    /// Whether the scheme is `wss` (TLS).
    #[must_use]
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The host: a domain name (ASCII), an IPv4 address, or an IPv6 address without brackets.
    #[must_use]
    pub fn host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The port, explicit or the scheme's default (80 or 443).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The resource name: path and query, at least `/`.
    #[must_use]
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The user name and password, if the URI has them (sent as HTTP Basic authentication).
    #[must_use]
    pub fn user_info(&self) -> Option<(&str, &str)> {
        self.user_info
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// The value of the `Host` header: the host, with the port unless it is the default.
    #[must_use]
    pub fn host_header(&self) -> String {
        let default_port = if self.secure { 443 } else { 80 };
        if self.port == default_port {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URI that `reference` (absolute, or relative to this URI, as in a redirect's
    /// `Location`) names. The user info is not carried over (redirects carry it within the
    /// origin).
    ///
    /// ```
    /// use wsline::WsUri;
    /// let uri: WsUri = "wss://example.com/chat/old?x=1".parse().unwrap();
    /// assert_eq!(uri.join("new").unwrap().to_string(), "wss://example.com/chat/new");
    /// assert_eq!(uri.join("ws://other/").unwrap().to_string(), "ws://other/");
    /// assert!(uri.join("https://example.com/").is_err());
    /// ```
    ///
    /// # Errors
    /// When the result is not a valid `ws://` or `wss://` URI.
    pub fn join(&self, reference: &str) -> Result<Self, UriError> {
        let base = url::Url::parse(&self.to_string())
            .map_err(|error| UriError::Invalid(error.to_string()))?;
        let joined = base
            .join(reference)
            .map_err(|error| UriError::Invalid(format!("{reference:?}: {error}")))?;
        joined.as_str().parse()
    }

    /// Whether `other` has the same origin: scheme, host and port.
    #[cfg(any(feature = "sync", feature = "tokio"))]
    pub(crate) fn same_origin(&self, other: &Self) -> bool {
        (self.secure, &self.host, self.port) == (other.secure, &other.host, other.port)
    }

    /// Takes `other`'s user info if this URI has none.
    #[cfg(any(feature = "sync", feature = "tokio"))]
    pub(crate) fn inherit_user_info(&mut self, other: &Self) {
        if self.user_info.is_none() {
            self.user_info.clone_from(&other.user_info);
        }
    }

    /// `host:port`, ready for `TcpStream::connect`.
    #[must_use]
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl FromStr for WsUri {
    type Err = UriError;

    fn from_str(text: &str) -> Result<Self, UriError> {
        let url = url::Url::parse(text).map_err(|error| UriError::Invalid(error.to_string()))?;
        let secure = match url.scheme() {
            "ws" => false,
            "wss" => true,
            other => return Err(UriError::UnsupportedScheme(other.to_owned())),
        };
        if url.fragment().is_some() {
            return Err(UriError::Fragment);
        }
        let host = url.host_str().ok_or(UriError::MissingHost)?.to_owned();
        let port = url
            .port_or_known_default()
            .unwrap_or(if secure { 443 } else { 80 });
        let mut resource = url.path().to_owned();
        if resource.is_empty() {
            resource.push('/');
        }
        if let Some(query) = url.query() {
            resource.push('?');
            resource.push_str(query);
        }
        let user_info = (!url.username().is_empty()).then(|| {
            (
                percent_decode(url.username()),
                percent_decode(url.password().unwrap_or_default()),
            )
        });
        Ok(Self {
            secure,
            host,
            port,
            resource,
            user_info,
        })
    }
}

impl TryFrom<&str> for WsUri {
    type Error = UriError;
    fn try_from(text: &str) -> Result<Self, UriError> {
        text.parse()
    }
}

impl fmt::Display for WsUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "wss" } else { "ws" };
        write!(f, "{scheme}://{}{}", self.host_header(), self.resource)
    }
}

/// `url` with its user info (a password) masked, for logs and debug output; other text as
/// is.
pub(crate) fn without_user_info(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |scheme_end| scheme_end + 3);
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |end| authority_start + end);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}***{}",
            &url[..authority_start],
            &url[authority_start + at..]
        ),
        None => url.to_owned(),
    }
}

/// Decodes `%XX` escapes of a URI's user info.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_and_resource() {
        let uri: WsUri = "ws://localhost".parse().unwrap();
        assert_eq!((uri.port(), uri.resource()), (80, "/"));
        assert_eq!(uri.host_header(), "localhost");
        let uri: WsUri = "wss://localhost:8443/a/b?c=d".parse().unwrap();
        assert!(uri.is_secure());
        assert_eq!(uri.host_header(), "localhost:8443");
        assert_eq!(uri.resource(), "/a/b?c=d");
    }

    #[test]
    fn ipv6_hosts_keep_brackets_in_headers_only() {
        let uri: WsUri = "ws://[::1]:9000/".parse().unwrap();
        assert_eq!(uri.host(), "::1");
        assert_eq!(uri.host_header(), "[::1]:9000");
        assert_eq!(uri.authority(), "[::1]:9000");
    }

    #[test]
    fn user_info_is_masked_for_logs() {
        assert_eq!(
            without_user_info("ws://alice:hunter2@host:80/p@th?q=@"),
            "ws://***@host:80/p@th?q=@"
        );
        assert_eq!(without_user_info("http://proxy:3128"), "http://proxy:3128");
        assert_eq!(without_user_info("not a url"), "not a url");
    }

    #[test]
    fn user_info_is_decoded() {
        let uri: WsUri = "ws://us%40er:p%3Ass@host/".parse().unwrap();
        assert_eq!(uri.user_info(), Some(("us@er", "p:ss")));
    }

    #[test]
    fn rejects_other_schemes_and_fragments() {
        assert_eq!(
            "http://host/".parse::<WsUri>(),
            Err(UriError::UnsupportedScheme("http".into()))
        );
        assert_eq!("ws://host/#frag".parse::<WsUri>(), Err(UriError::Fragment));
        assert!(matches!(
            "not a uri".parse::<WsUri>(),
            Err(UriError::Invalid(_))
        ));
    }
}
