//! Following the redirects a server may answer the opening handshake with, for both
//! clients (as browsers and Python websockets do).

use crate::proto::HandshakeError;
use crate::{ConnectConfig, Error, Result, WsUri};

/// The statuses that redirect (RFC 9110 §15.4).
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// Where `error`, the outcome of a handshake with `uri`, sends the client next: the
/// `Location` of a redirect, resolved against `uri`. `None` when it is not a redirect.
///
/// Credentials stay with their origin: a redirect within the origin (scheme, host, port)
/// keeps the URI's user info, and one to another origin drops the configuration's extra
/// headers (`Authorization`, cookies…) for the rest of the connection attempt.
///
/// # Errors
/// [`Error::Uri`] for a `Location` that is not a WebSocket URI, [`Error::Tls`] for a
/// redirect from `wss://` to `ws://` (it would drop TLS).
pub(crate) fn follow(
    uri: &WsUri,
    config: &mut ConnectConfig,
    error: &Error,
) -> Result<Option<WsUri>> {
    let Error::Handshake(HandshakeError::Rejected(response)) = error else {
        return Ok(None);
    };
    if !REDIRECT_STATUSES.contains(&response.status) {
        return Ok(None);
    }
    let Some(location) = response.headers.get("Location") else {
        return Ok(None);
    };
    let mut next = uri.join(location)?;
    if uri.is_secure() && !next.is_secure() {
        return Err(Error::Tls(format!(
            "refusing the redirect from {uri} to {next}: it would drop TLS"
        )));
    }
    if uri.same_origin(&next) {
        next.inherit_user_info(uri);
    } else {
        config.headers.clear();
    }
    tracing::debug!(status = response.status, from = %uri, to = %next, "following a redirect");
    Ok(Some(next))
}
