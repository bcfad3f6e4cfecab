//! NATS as the broker between nodes (feature `nats`), on the `async-nats` crate.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::client::PublishErrorKind;
use async_nats::connection::State;
use async_nats::{ConnectOptions, Event, ServerAddr, Subscriber};
use bytes::Bytes;
use futures_core::Stream;
use tokio::sync::{mpsc, Notify};
use tokio::task::{AbortHandle, JoinSet};

use super::driver::{BoxError, Connector, Driver, Incoming, Outgoing, Session, Shared};
use super::{Broker, BrokerConfigError, BrokerStats, Inbound, DEFAULT_MAX_QUEUED};
use crate::uri::without_user_info;
use crate::Backoff;

/// The prefix of the subjects by default: topic `lobby` is subject `wsline.lobby`.
pub const DEFAULT_SUBJECT_PREFIX: &str = "wsline.";

/// The longest subject a topic may have, in bytes: a topic whose subject is longer is not
/// subscribed at the server (a warning is logged) and its publishes are dropped and
/// counted. NATS servers refuse a protocol line longer than 4 KiB by default.
pub const MAX_SUBJECT_LEN: usize = 1024;

/// Messages from the server waiting for the broker's task, for each topic; past it they
/// are lost and counted ([`BrokerStats::missed`]).
const SUBSCRIPTION_CAPACITY: usize = 1024;
/// Messages of all topics on their way from the subscriptions to the task.
const INBOUND_CAPACITY: usize = 1024;
/// Commands (publishes, mostly) the client buffers on their way to the socket, beyond the
/// driver's queue; the client's default, 2048, would hide the queue's limit.
const CLIENT_CAPACITY: usize = 128;
/// How long a connection may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the client pings the server (two pings unanswered end the connection).
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// How a [`NatsBroker`] connects and what it keeps.
///
/// ```
/// use wsline::topics::{BrokerState, NatsBroker, NatsBrokerConfig};
///
/// let config = NatsBrokerConfig {
///     subject_prefix: "chat.rooms.".into(),
///     ..NatsBrokerConfig::new("nats://127.0.0.1:4222")
/// };
/// let broker = NatsBroker::with_config(config)?;
/// // Started (and connected) by `Topics::with_broker`.
/// assert_eq!(broker.stats().state, BrokerState::Connecting);
/// # Ok::<(), wsline::topics::BrokerConfigError>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct NatsBrokerConfig {
    /// The server: `nats://[user:password@]host[:port]` (`tls://` for TLS). Default:
    /// `nats://127.0.0.1:4222`.
    pub url: String,
    /// The prefix of the subjects: empty, or tokens each followed by `.` (`"wsline."`,
    /// `"app.rooms."`). A topic's subject is the prefix followed by the topic encoded as
    /// [`NatsBroker`] says. Default: [`DEFAULT_SUBJECT_PREFIX`], `"wsline."`.
    pub subject_prefix: String,
    /// Publishes waiting to go out, at most (at least 1); past it a publish is dropped and
    /// counted in [`BrokerStats::dropped`]. The queue holds the messages themselves, so it
    /// takes up to `max_queued` times the largest message in memory; besides it, only the
    /// batch being written (at most 256 messages) and the up to 128 the NATS client
    /// buffers itself are in flight. Default:
    /// [`DEFAULT_MAX_QUEUED`], 10 000.
    pub max_queued: usize,
    /// How long to wait before connecting again after a failure. Default:
    /// [`Backoff::default`], 1 s growing to 60 s.
    pub backoff: Backoff,
}

impl NatsBrokerConfig {
    /// The defaults, with the server at `url`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl Default for NatsBrokerConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.into(),
            max_queued: DEFAULT_MAX_QUEUED,
            backoff: Backoff::default(),
        }
    }
}

/// Without the URL's password: debug output ends up in logs.
impl fmt::Debug for NatsBrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBrokerConfig")
            .field("url", &without_user_info(&self.url))
            .field("subject_prefix", &self.subject_prefix)
            .field("max_queued", &self.max_queued)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// A [`Broker`] over NATS core publish/subscribe.
///
/// Give it to [`Topics::with_broker`](crate::topics::Topics::with_broker) on every node:
///
/// ```no_run
/// use wsline::topics::{NatsBroker, Topics};
///
/// let topics = Topics::with_broker(NatsBroker::new("nats://127.0.0.1:4222")?);
/// topics.publish("lobby", "to every node's subscribers of lobby");
/// # Ok::<(), wsline::topics::BrokerConfigError>(())
/// ```
///
/// One connection per node, owned by a task: on the tokio runtime that
/// [`Topics::with_broker`](crate::topics::Topics::with_broker) is called on, or, outside
/// of one (the sync server), on a thread of its own. The registry's calls never wait for
/// it. The task stops, closing the connection, once every clone of the
/// [`Topics`](crate::topics::Topics) is dropped. The connection asks the server not to
/// echo this node's own publishes. The task reconnects by itself (with
/// [`NatsBrokerConfig::backoff`]), not the client's reconnection.
///
/// # Subjects
///
/// A topic can be any string; a NATS subject is tokens separated by `.`, none empty, with
/// no whitespace, `*` or `>`. A topic maps to one subject, and two topics never to the
/// same: the prefix, then each `.`-separated part of the topic as one token — ASCII
/// letters, digits and `-` as they are, every other byte of its UTF-8 as `_` and two
/// uppercase hexadecimal digits, and an empty part as `_` alone. So `lobby` is
/// `wsline.lobby`, `room.42` is `wsline.room.42` (`wsline.room.>` matches every room, for
/// a tool that listens in), `a b` is `wsline.a_20b`, `snake_case` is `wsline.snake_5Fcase`,
/// the empty topic is `wsline._`. A subject longer than [`MAX_SUBJECT_LEN`] is not used.
///
/// # Guarantees
///
/// - **At most once** across nodes: a message lost by a failed connection is never sent
///   again; a node gets each message another published once, or not at all.
/// - **In order** per publisher and topic: one queue, one connection, and NATS keeps the
///   order of one connection's publishes to one subject.
/// - **Local delivery is unaffected** while NATS is down: the registry delivers to this
///   node's subscribers first, whatever the broker does.
/// - **Resubscribed** after every reconnection, to every topic this node has subscribers
///   of (counted in [`BrokerStats::reconnects`]).
/// - **Subscribed at NATS only while a local subscriber exists**: the first subscriber of
///   a topic on this node subscribes its subject, the last one leaving unsubscribes it.
/// - **Bounded**: at most [`NatsBrokerConfig::max_queued`] publishes wait to go out; a
///   publish made while the queue is full, or while the broker is not connected, is
///   dropped and counted in [`BrokerStats::dropped`], never buffered. So is one larger
///   than the server's `max_payload`.
///
/// A message on a topic's subject that is not a wsline node's (another program publishing
/// there) is ignored and counted in [`BrokerStats::ignored`].
///
/// Clones are handles to one broker: give one to one registry (a second
/// [`Broker::start`] is ignored, with a warning) and keep another to read
/// [`stats`](Self::stats).
#[derive(Clone)]
pub struct NatsBroker {
    driver: Arc<Driver<NatsConnector>>,
}

impl fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBroker")
            .field("stats", &self.driver.stats())
            .finish_non_exhaustive()
    }
}

impl NatsBroker {
    /// A broker to the server at `url`, with the defaults of [`NatsBrokerConfig`]. It
    /// connects once started by [`Topics::with_broker`](crate::topics::Topics::with_broker).
    ///
    /// # Errors
    ///
    /// [`BrokerConfigError::InvalidUrl`] if `url` is not a NATS server address.
    pub fn new(url: &str) -> Result<Self, BrokerConfigError> {
        Self::with_config(NatsBrokerConfig::new(url))
    }

    /// A broker with `config`.
    ///
    /// # Errors
    ///
    /// [`BrokerConfigError::InvalidUrl`] if `config.url` is not a NATS server address,
    /// [`BrokerConfigError::InvalidPrefix`] if `config.subject_prefix` is not empty or
    /// tokens each followed by `.`.
    pub fn with_config(config: NatsBrokerConfig) -> Result<Self, BrokerConfigError> {
        let server: ServerAddr =
            config
                .url
                .parse()
                .map_err(|error: std::io::Error| BrokerConfigError::InvalidUrl {
                    url: without_user_info(&config.url),
                    reason: error.to_string(),
                })?;
        check_prefix(&config.subject_prefix).map_err(|reason| {
            BrokerConfigError::InvalidPrefix {
                prefix: config.subject_prefix.clone(),
                reason,
            }
        })?;
        let connector = NatsConnector {
            server,
            prefix: config.subject_prefix,
        };
        Ok(Self {
            driver: Arc::new(Driver::new(connector, config.max_queued, config.backoff)),
        })
    }

    /// The broker's state and counters (also in
    /// [`TopicsStats::broker`](crate::topics::TopicsStats::broker)): a clone kept after
    /// handing the broker to the registry reads the same ones.
    #[must_use]
    pub fn stats(&self) -> BrokerStats {
        self.driver.stats()
    }
}

impl Broker for NatsBroker {
    fn start(&self, inbound: Inbound) {
        self.driver.start(inbound);
    }

    fn subscribe(&self, topic: &str) {
        self.driver.subscribe(topic);
    }

    fn unsubscribe(&self, topic: &str) {
        self.driver.unsubscribe(topic);
    }

    fn publish(&self, topic: &str, message: Bytes) {
        self.driver.publish(topic, message);
    }

    fn stats(&self) -> BrokerStats {
        self.driver.stats()
    }
}

/// Whether a byte may stand for itself in a subject token.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-'
}

/// Whether `token` may be one token of a subject.
fn is_valid_token(token: &str) -> bool {
    !token.is_empty()
        && !token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
}

/// Checks a subject prefix: empty, or tokens each followed by `.`.
fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Ok(());
    }
    let Some(tokens) = prefix.strip_suffix('.') else {
        return Err("it must end with '.'");
    };
    if tokens.split('.').all(is_valid_token) {
        Ok(())
    } else {
        Err("each token must be non-empty, without whitespace, '*' or '>'")
    }
}

/// The subject of `topic` (see [`NatsBroker`]).
fn subject(prefix: &str, topic: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut subject = String::with_capacity(prefix.len() + topic.len() + 1);
    subject.push_str(prefix);
    for (index, part) in topic.split('.').enumerate() {
        if index > 0 {
            subject.push('.');
        }
        if part.is_empty() {
            subject.push('_');
        }
        for &byte in part.as_bytes() {
            if is_plain(byte) {
                subject.push(char::from(byte));
            } else {
                subject.push('_');
                subject.push(char::from(HEX[usize::from(byte >> 4)]));
                subject.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
        }
    }
    subject
}

/// The topic of `subject`, if it is one that [`subject`] makes with `prefix`.
#[cfg(test)]
fn topic(prefix: &str, subject: &str) -> Option<String> {
    let encoded = subject.strip_prefix(prefix)?;
    let mut topic = Vec::with_capacity(encoded.len());
    for (index, token) in encoded.split('.').enumerate() {
        if index > 0 {
            topic.push(b'.');
        }
        if token == "_" {
            continue;
        }
        let mut bytes = token.bytes();
        let mut any = false;
        while let Some(byte) = bytes.next() {
            any = true;
            if is_plain(byte) {
                topic.push(byte);
                continue;
            }
            if byte != b'_' {
                return None;
            }
            let digit = |byte: Option<u8>| match byte? {
                digit @ b'0'..=b'9' => Some(digit - b'0'),
                digit @ b'A'..=b'F' => Some(digit - b'A' + 10),
                _ => None,
            };
            let (high, low) = (digit(bytes.next())?, digit(bytes.next())?);
            let decoded = high << 4 | low;
            if is_plain(decoded) {
                return None;
            }
            topic.push(decoded);
        }
        if !any {
            return None;
        }
    }
    String::from_utf8(topic).ok()
}

struct NatsConnector {
    server: ServerAddr,
    prefix: String,
}

impl Connector for NatsConnector {
    type Session = NatsSession;

    fn name(&self) -> &'static str {
        "nats"
    }

    async fn connect(&self, shared: &Arc<Shared>) -> Result<NatsSession, BoxError> {
        let lost = Arc::new(Notify::new());
        let events = (Arc::clone(&lost), Arc::clone(shared));
        let options = ConnectOptions::new()
            .name("wsline")
            .no_echo()
            .connection_timeout(CONNECTION_TIMEOUT)
            .ping_interval(PING_INTERVAL)
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .client_capacity(CLIENT_CAPACITY)
            // The client's own reconnection is cut short: its first retry comes at once and
            // its second fails, ending the client; the driver reconnects with its backoff,
            // since the `Disconnected` event told it the connection was lost.
            .max_reconnects(1)
            .reconnect_delay_callback(|_| Duration::ZERO)
            .event_callback(move |event| {
                let (lost, shared) = events.clone();
                async move {
                    match event {
                        Event::Disconnected | Event::Closed | Event::ClientError(_) => {
                            lost.notify_one();
                        }
                        Event::SlowConsumer(_) => shared.missed(1),
                        _ => {}
                    }
                }
            });
        let client = options.connect(self.server.clone()).await?;
        let (sender, receiver) = mpsc::channel(INBOUND_CAPACITY);
        Ok(NatsSession {
            client,
            prefix: self.prefix.clone(),
            lost,
            forwarders: JoinSet::new(),
            subscriptions: HashMap::new(),
            sender,
            receiver,
        })
    }
}

struct NatsSession {
    client: async_nats::Client,
    prefix: String,
    lost: Arc<Notify>,
    /// A task per subscribed topic, handing its messages to `receiver` tagged with the
    /// topic; aborted (which unsubscribes) when the topic is, all of them when the session
    /// ends.
    forwarders: JoinSet<()>,
    subscriptions: HashMap<Arc<str>, AbortHandle>,
    sender: mpsc::Sender<(Arc<str>, Bytes)>,
    receiver: mpsc::Receiver<(Arc<str>, Bytes)>,
}

/// Hands what `subscriber` receives to the session, tagged with its topic; stops when the
/// session is gone or the subscription ends.
async fn forward(
    topic: Arc<str>,
    mut subscriber: Subscriber,
    sender: mpsc::Sender<(Arc<str>, Bytes)>,
) {
    while let Some(message) =
        std::future::poll_fn(|cx| Pin::new(&mut subscriber).poll_next(cx)).await
    {
        if sender
            .send((Arc::clone(&topic), message.payload))
            .await
            .is_err()
        {
            return;
        }
    }
}

impl Session for NatsSession {
    /// Only a look at the client's state: the client pings the server itself.
    const KEEPALIVE: Duration = Duration::from_secs(1);

    fn transport(&self) -> &'static str {
        "nats"
    }

    async fn subscribe(&mut self, topics: &[Arc<str>]) -> Result<(), BoxError> {
        for topic in topics {
            let subject = subject(&self.prefix, topic);
            if subject.len() > MAX_SUBJECT_LEN {
                tracing::warn!(
                    broker = "nats",
                    len = subject.len(),
                    max = MAX_SUBJECT_LEN,
                    "topic not subscribed at the broker: its subject is too long"
                );
                continue;
            }
            let subscriber = self.client.subscribe(subject).await?;
            let forwarder = forward(Arc::clone(topic), subscriber, self.sender.clone());
            let handle = self.forwarders.spawn(forwarder);
            self.subscriptions.insert(Arc::clone(topic), handle);
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, topics: &[Arc<str>]) -> Result<(), BoxError> {
        for topic in topics {
            // Dropping the subscriber, with its task, unsubscribes it.
            if let Some(handle) = self.subscriptions.remove(topic) {
                handle.abort();
            }
        }
        // Reap the aborted tasks, so that the set does not grow.
        while self.forwarders.try_join_next().is_some() {}
        Ok(())
    }

    async fn publish(&mut self, batch: &[Outgoing]) -> Result<u64, BoxError> {
        let mut sent = 0;
        for outgoing in batch {
            let subject = subject(&self.prefix, &outgoing.topic);
            if subject.len() > MAX_SUBJECT_LEN {
                continue;
            }
            match self.client.publish(subject, outgoing.message.clone()).await {
                Ok(()) => sent += 1,
                Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    tracing::debug!(broker = "nats", %error, "publish refused");
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(sent)
    }

    async fn recv(&mut self) -> Result<Incoming, BoxError> {
        tokio::select! {
            // What arrived before the connection ended is delivered first.
            biased;
            forwarded = self.receiver.recv() => match forwarded {
                Some((topic, payload)) => Ok(Incoming { topic: Some(topic), payload }),
                // The session keeps a sender: never.
                None => Err("the subscriptions stopped".into()),
            },
            () = self.lost.notified() => Err("the connection to the server was lost".into()),
        }
    }

    async fn keepalive(&mut self) -> Result<(), BoxError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(format!("the client is {state}").into()),
        }
    }

    /// Stops the forwarders and drops their subscribers here (each one's drop spawns its
    /// unsubscribe); the client's own task ends when the last of its handles is gone.
    async fn close(mut self) {
        self.forwarders.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{check_prefix, subject, topic, DEFAULT_SUBJECT_PREFIX};

    proptest! {
        /// Decoding inverts encoding, so no two topics share a subject; and every subject
        /// is tokens of letters, digits, `-` and `_`.
        #[test]
        fn every_topic_has_a_valid_subject_of_its_own(name in any::<String>()) {
            let encoded = subject(DEFAULT_SUBJECT_PREFIX, &name);
            prop_assert!(encoded.split('.').all(|token| !token.is_empty()
                && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')));
            prop_assert_eq!(topic(DEFAULT_SUBJECT_PREFIX, &encoded), Some(name.clone()));
            // At most three bytes of subject per byte of topic.
            prop_assert!(encoded.len() <= DEFAULT_SUBJECT_PREFIX.len() + 3 * name.len().max(1));
        }
    }

    #[test]
    fn topics_map_to_valid_subjects_and_back() {
        let prefix = DEFAULT_SUBJECT_PREFIX;
        for (name, expected) in [
            ("lobby", "wsline.lobby"),
            ("room.42", "wsline.room.42"),
            ("a b", "wsline.a_20b"),
            ("snake_case", "wsline.snake_5Fcase"),
            ("", "wsline._"),
            (".", "wsline._._"),
            ("a..b", "wsline.a._.b"),
            ("*", "wsline._2A"),
            (">", "wsline._3E"),
            ("café", "wsline.caf_C3_A9"),
            ("tab\there", "wsline.tab_09here"),
        ] {
            let encoded = subject(prefix, name);
            assert_eq!(encoded, expected, "{name:?}");
            let tokens = encoded.split('.');
            assert!(
                tokens.clone().all(|token| !token.is_empty()
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')),
                "{encoded:?}"
            );
            assert_eq!(topic(prefix, &encoded).as_deref(), Some(name));
        }
    }

    #[test]
    fn subjects_that_no_topic_maps_to_do_not_decode() {
        for subject in [
            "wsline.",
            "wsline.a__",
            "wsline._41",
            "wsline._2a",
            "wsline.a%20",
            "other.a",
        ] {
            assert_eq!(topic(DEFAULT_SUBJECT_PREFIX, subject), None, "{subject:?}");
        }
    }

    #[test]
    fn prefix_is_empty_or_tokens_followed_by_dots() {
        for valid in ["", "wsline.", "app.rooms.", "a-b_c."] {
            assert_eq!(check_prefix(valid), Ok(()), "{valid:?}");
        }
        for invalid in ["wsline", ".", "a..", "a b.", "a*.", "a>.", "a.b"] {
            assert!(check_prefix(invalid).is_err(), "{invalid:?}");
        }
    }
}
