//! Reconnecting clients: the policy that `sync::client::reconnecting` and
//! `tokio::reconnecting` share — which failures are worth another attempt, and how long to
//! wait before it.

use std::time::Duration;

use crate::proto::HandshakeError;
use crate::uri::without_user_info;
use crate::{ConnectConfig, Error, ProxyError, Result};

/// The shortest wait between attempts, whatever the configuration says.
const MIN_DELAY: Duration = Duration::from_millis(1);

/// How long a reconnecting client waits between failed attempts: `min` after the first
/// failure, then `factor` times longer after each one, up to `max`; each wait is randomized
/// between half and the whole of it, so that clients a server dropped together do not come
/// back together. A successful connection starts over from `min`.
///
/// ```
/// use std::time::Duration;
/// use wsline::Backoff;
/// let backoff = Backoff { min: Duration::from_millis(100), ..Backoff::default() };
/// assert_eq!(backoff.max, Duration::from_secs(60));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// The wait after the first failure. Default: 1 s.
    pub min: Duration,
    /// The longest wait. Default: 60 s.
    pub max: Duration,
    /// How much longer each wait is than the one before. Default: 1.618.
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            factor: 1.618,
        }
    }
}

/// Where a reconnecting client is in its backoff.
#[derive(Debug)]
pub(crate) struct Retry {
    backoff: Backoff,
    next: Duration,
}

impl Retry {
    pub(crate) fn new(backoff: Backoff) -> Self {
        let next = Self::first(&backoff);
        Self { backoff, next }
    }

    /// The first wait: `min`, but never zero (a tight retry loop), and at most `max`.
    fn first(backoff: &Backoff) -> Duration {
        backoff.min.max(MIN_DELAY).min(backoff.max.max(MIN_DELAY))
    }

    /// The wait before the next attempt, after a failed one.
    pub(crate) fn delay(&mut self) -> Duration {
        let max = self.backoff.max.max(MIN_DELAY);
        let delay = self.next.min(max);
        // Whatever the factor (infinite, NaN) and the max (Duration::MAX), no overflow.
        let grown = delay.as_secs_f64() * self.backoff.factor.max(1.0);
        self.next = Duration::try_from_secs_f64(grown).map_or(max, |grown| grown.min(max));
        Duration::try_from_secs_f64(delay.as_secs_f64() * rand::random_range(0.5..=1.0))
            .unwrap_or(delay)
    }

    /// After a successful connection: the next failure waits `min` again.
    pub(crate) fn reset(&mut self) {
        self.next = Self::first(&self.backoff);
    }
}

/// What both reconnecting clients keep: where and how to connect, and where they are in
/// the backoff.
pub(crate) struct Attempts {
    pub(crate) uri: String,
    pub(crate) config: ConnectConfig,
    retry: Retry,
    done: bool,
}

impl Attempts {
    pub(crate) fn new(uri: &str, config: ConnectConfig) -> Self {
        Self {
            uri: uri.to_owned(),
            retry: Retry::new(config.backoff.clone()),
            config,
            done: false,
        }
    }

    /// Whether a failure that would repeat ended the connections.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// What an attempt's `result` means: `Ok` to hand over (a connection, or the failure
    /// that ends the connections), `Err(delay)` to wait that long and try again.
    pub(crate) fn outcome<T>(
        &mut self,
        result: Result<T>,
    ) -> std::result::Result<Result<T>, Duration> {
        match result {
            Ok(connection) => {
                self.retry.reset();
                Ok(Ok(connection))
            }
            Err(error) if is_transient(&error) => {
                let delay = self.retry.delay();
                tracing::info!(%error, ?delay, uri = %without_user_info(&self.uri), "connection failed; retrying");
                Err(delay)
            }
            Err(error) => {
                self.done = true;
                Ok(Err(error))
            }
        }
    }
}

/// Without the URI's password: debug output ends up in logs.
impl std::fmt::Debug for Attempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempts")
            .field("uri", &without_user_info(&self.uri))
            .field("config", &self.config)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Whether another attempt may succeed where this one failed: transport failures
/// (refused, reset, closed during a handshake), timeouts, an unreachable proxy, and 5xx or
/// 429 answers from the server or the proxy (busy, restarting). Not an invalid URI, a TLS
/// failure (an untrusted certificate stays untrusted), another refusal (401, 403, 407…) or
/// a peer that breaks the protocol.
fn is_transient(error: &Error) -> bool {
    let retry_status = |status: u16| status >= 500 || status == 429;
    match error {
        Error::Io(_)
        | Error::Timeout(_)
        | Error::Handshake(HandshakeError::ClosedEarly)
        | Error::Proxy(ProxyError::ClosedEarly | ProxyError::Unreachable { .. }) => true,
        Error::Handshake(HandshakeError::Rejected(response)) => retry_status(response.status),
        Error::Proxy(ProxyError::Refused { status, .. }) => retry_status(*status),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Response;

    #[test]
    fn waits_grow_by_the_factor_up_to_the_max_and_reset() {
        let mut retry = Retry::new(Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(300),
            factor: 2.0,
        });
        let bounds = [100, 200, 300, 300];
        for bound in bounds {
            let delay = retry.delay();
            let bound = Duration::from_millis(bound);
            assert!(
                delay <= bound && delay >= bound / 2,
                "{delay:?} for {bound:?}"
            );
        }
        retry.reset();
        assert!(retry.delay() <= Duration::from_millis(100));
    }

    #[test]
    fn extreme_settings_neither_overflow_nor_spin() {
        let mut uncapped = Retry::new(Backoff {
            min: Duration::from_secs(1),
            max: Duration::MAX,
            factor: f64::INFINITY,
        });
        for _ in 0..100 {
            uncapped.delay();
        }
        let mut zero = Retry::new(Backoff {
            min: Duration::ZERO,
            max: Duration::ZERO,
            factor: f64::NAN,
        });
        assert!(zero.delay() >= MIN_DELAY / 2);
    }

    #[test]
    fn only_failures_that_may_pass_are_retried() {
        let rejected =
            |status| Error::Handshake(HandshakeError::Rejected(Box::new(Response::new(status))));
        assert!(is_transient(&Error::Io(
            std::io::ErrorKind::ConnectionRefused.into()
        )));
        assert!(is_transient(&rejected(503)));
        assert!(is_transient(&rejected(429)));
        assert!(!is_transient(&rejected(403)));
        assert!(!is_transient(&Error::Tls("UnknownIssuer".into())));
        assert!(!is_transient(&Error::Uri(crate::UriError::MissingHost)));
    }
}
