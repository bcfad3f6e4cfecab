//! Redis pub/sub as the broker between nodes (feature `redis`), on the `redis` crate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::{
    AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Notify};

use super::driver::{BoxError, Connector, Driver, Incoming, Outgoing, Session, Shared};
use super::{Broker, BrokerConfigError, BrokerStats, Inbound, DEFAULT_MAX_QUEUED};
use crate::uri::without_user_info;
use crate::Backoff;

/// The prefix of the channel names by default: topic `lobby` is channel `wsline:lobby`.
pub const DEFAULT_CHANNEL_PREFIX: &str = "wsline:";

/// Messages from the server waiting for the broker's task; past it they are lost and
/// counted ([`BrokerStats::missed`]).
const INBOUND_CAPACITY: usize = 4096;
/// How long the server has to answer a command (a publish, a subscribe, a ping).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TCP connection (and TLS, with a `rediss://` URL) may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Which pub/sub commands a [`RedisBroker`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisPubSub {
    /// Sharded pub/sub if the server is Redis 7 or later (by the `redis_version` of its
    /// `INFO server`, which Valkey reports too), classic pub/sub otherwise. Decided again
    /// on each connection.
    #[default]
    Auto,
    /// Sharded pub/sub, `SPUBLISH` and `SSUBSCRIBE` (Redis 7 and later): in a Redis
    /// Cluster a message goes only to the shard that owns its channel, not to every
    /// node. (wsline connects to one server; it does not follow cluster redirections.)
    /// With an older server every connection fails at its first subscription (logged).
    Sharded,
    /// Classic pub/sub, `PUBLISH` and `SUBSCRIBE`.
    Classic,
}

/// How a [`RedisBroker`] connects and what it keeps.
///
/// ```
/// use wsline::topics::{BrokerState, RedisBroker, RedisBrokerConfig};
///
/// let config = RedisBrokerConfig {
///     channel_prefix: "chat:".into(),
///     ..RedisBrokerConfig::new("redis://127.0.0.1:6379")
/// };
/// let broker = RedisBroker::with_config(config)?;
/// // Started (and connected) by `Topics::with_broker`.
/// assert_eq!(broker.stats().state, BrokerState::Connecting);
/// # Ok::<(), wsline::topics::BrokerConfigError>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct RedisBrokerConfig {
    /// The server: `redis://[user:password@]host[:port][/db]`, `rediss://` for TLS if the
    /// `redis` crate was built with it, `unix:///path`. The connection speaks RESP3, which
    /// needs Redis 6 or later (or Valkey). Default: `redis://127.0.0.1:6379`.
    pub url: String,
    /// The prefix of the channel names: a topic's channel is the prefix followed by the
    /// topic's bytes, so every topic has a channel of its own. Default:
    /// [`DEFAULT_CHANNEL_PREFIX`], `"wsline:"`.
    pub channel_prefix: String,
    /// Publishes waiting to go out, at most (at least 1); past it a publish is dropped and
    /// counted in [`BrokerStats::dropped`]. The queue holds the messages themselves, so it
    /// takes up to `max_queued` times the largest message in memory; besides it, only the
    /// batch being written (at most 256 messages) are in flight. Default:
    /// [`DEFAULT_MAX_QUEUED`], 10 000.
    pub max_queued: usize,
    /// How long to wait before connecting again after a failure. Default:
    /// [`Backoff::default`], 1 s growing to 60 s.
    pub backoff: Backoff,
    /// Sharded or classic pub/sub. Default: [`RedisPubSub::Auto`].
    pub pubsub: RedisPubSub,
}

impl RedisBrokerConfig {
    /// The defaults, with the server at `url`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl Default for RedisBrokerConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            channel_prefix: DEFAULT_CHANNEL_PREFIX.into(),
            max_queued: DEFAULT_MAX_QUEUED,
            backoff: Backoff::default(),
            pubsub: RedisPubSub::Auto,
        }
    }
}

/// Without the URL's password: debug output ends up in logs.
impl fmt::Debug for RedisBrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBrokerConfig")
            .field("url", &without_user_info(&self.url))
            .field("channel_prefix", &self.channel_prefix)
            .field("max_queued", &self.max_queued)
            .field("backoff", &self.backoff)
            .field("pubsub", &self.pubsub)
            .finish()
    }
}

/// A [`Broker`] over Redis pub/sub: sharded (`SPUBLISH`/`SSUBSCRIBE`) on Redis 7 and
/// later, classic (`PUBLISH`/`SUBSCRIBE`) before ([`RedisPubSub`]; which one is in the
/// log line of each connection and in [`BrokerStats::transport`]).
///
/// Give it to [`Topics::with_broker`](crate::topics::Topics::with_broker) on every node:
///
/// ```no_run
/// use wsline::topics::{RedisBroker, Topics};
///
/// let topics = Topics::with_broker(RedisBroker::new("redis://127.0.0.1:6379")?);
/// topics.publish("lobby", "to every node's subscribers of lobby");
/// # Ok::<(), wsline::topics::BrokerConfigError>(())
/// ```
///
/// One connection per node, owned by a task: on the tokio runtime that
/// [`Topics::with_broker`](crate::topics::Topics::with_broker) is called on, or, outside
/// of one (the sync server), on a thread of its own. The registry's calls never wait for
/// it. The task stops, closing the connection, once every clone of the
/// [`Topics`](crate::topics::Topics) is dropped.
///
/// # Guarantees
///
/// - **At most once** across nodes: a message lost by a failed connection is never sent
///   again; a node gets each message another published once, or not at all.
/// - **In order** per publisher and topic: one queue, one connection, and Redis keeps the
///   order of one connection's publishes to one channel.
/// - **Local delivery is unaffected** while Redis is down: the registry delivers to this
///   node's subscribers first, whatever the broker does.
/// - **Resubscribed** after every reconnection, to every topic this node has subscribers
///   of (counted in [`BrokerStats::reconnects`]).
/// - **Subscribed at Redis only while a local subscriber exists**: the first subscriber of
///   a topic on this node subscribes its channel, the last one leaving unsubscribes it.
/// - **Bounded**: at most [`RedisBrokerConfig::max_queued`] publishes wait to go out; a
///   publish made while the queue is full, or while the broker is not connected, is
///   dropped and counted in [`BrokerStats::dropped`], never buffered.
///
/// A message on a topic's channel that is not a wsline node's (another program publishing
/// there) is ignored and counted in [`BrokerStats::ignored`].
///
/// Clones are handles to one broker: give one to one registry (a second
/// [`Broker::start`] is ignored, with a warning) and keep another to read
/// [`stats`](Self::stats).
#[derive(Clone)]
pub struct RedisBroker {
    driver: Arc<Driver<RedisConnector>>,
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("stats", &self.driver.stats())
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// A broker to the server at `url`, with the defaults of [`RedisBrokerConfig`]. It
    /// connects once started by [`Topics::with_broker`](crate::topics::Topics::with_broker).
    ///
    /// # Errors
    ///
    /// [`BrokerConfigError::InvalidUrl`] if `url` is not a Redis URL.
    pub fn new(url: &str) -> Result<Self, BrokerConfigError> {
        Self::with_config(RedisBrokerConfig::new(url))
    }

    /// A broker with `config`.
    ///
    /// # Errors
    ///
    /// [`BrokerConfigError::InvalidUrl`] if `config.url` is not a Redis URL.
    pub fn with_config(config: RedisBrokerConfig) -> Result<Self, BrokerConfigError> {
        let invalid = |error: redis::RedisError| BrokerConfigError::InvalidUrl {
            url: without_user_info(&config.url),
            reason: error.to_string(),
        };
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(invalid)?;
        // RESP3: pushes and commands share one connection.
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings)).map_err(invalid)?;
        let connector = RedisConnector {
            client,
            prefix: Arc::from(config.channel_prefix.as_bytes()),
            pubsub: config.pubsub,
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

impl Broker for RedisBroker {
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

struct RedisConnector {
    client: redis::Client,
    prefix: Arc<[u8]>,
    pubsub: RedisPubSub,
}

impl Connector for RedisConnector {
    type Session = RedisSession;

    fn name(&self) -> &'static str {
        "redis"
    }

    async fn connect(&self, shared: &Arc<Shared>) -> Result<RedisSession, BoxError> {
        let (sender, receiver) = mpsc::channel(INBOUND_CAPACITY);
        let lost = Arc::new(Notify::new());
        let pushes = Pushes {
            sender,
            lost: Arc::clone(&lost),
            shared: Arc::clone(shared),
        };
        let config = AsyncConnectionConfig::new()
            .set_push_sender(pushes)
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let sharded = match self.pubsub {
            RedisPubSub::Sharded => true,
            RedisPubSub::Classic => false,
            RedisPubSub::Auto => {
                let info: String = redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut connection)
                    .await?;
                server_major_version(&info).is_some_and(|major| major >= 7)
            }
        };
        Ok(RedisSession {
            connection,
            prefix: Arc::clone(&self.prefix),
            sharded,
            receiver,
            lost,
        })
    }
}

/// The major version in an `INFO server` answer (`redis_version:7.0.15`).
fn server_major_version(info: &str) -> Option<u32> {
    let version = info
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"))?;
    version.split('.').next()?.parse().ok()
}

/// What the connection's reader hands over: messages, and the news that it ended.
struct Pushes {
    sender: mpsc::Sender<Pushed>,
    lost: Arc<Notify>,
    shared: Arc<Shared>,
}

enum Pushed {
    Message {
        channel: Vec<u8>,
        payload: Vec<u8>,
    },
    /// A message push of a shape Redis does not send.
    Malformed,
}

impl AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        let pushed = match info.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = info.data.into_iter();
                match (data.next(), data.next()) {
                    (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) => {
                        Pushed::Message { channel, payload }
                    }
                    _ => Pushed::Malformed,
                }
            }
            PushKind::Disconnection => {
                self.lost.notify_one();
                return Ok(());
            }
            // Subscription confirmations (the commands' own answers), other pushes.
            _ => return Ok(()),
        };
        match self.sender.try_send(pushed) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.shared.missed(1);
                Ok(())
            }
            Err(TrySendError::Closed(_)) => Err(SendError),
        }
    }
}

struct RedisSession {
    connection: MultiplexedConnection,
    prefix: Arc<[u8]>,
    sharded: bool,
    receiver: mpsc::Receiver<Pushed>,
    lost: Arc<Notify>,
}

impl RedisSession {
    fn channel(&self, topic: &str) -> Vec<u8> {
        let mut channel = Vec::with_capacity(self.prefix.len() + topic.len());
        channel.extend_from_slice(&self.prefix);
        channel.extend_from_slice(topic.as_bytes());
        channel
    }

    /// One command per channel: RESP3 answers a (un)subscribe once per channel.
    async fn each_channel(&mut self, command: &str, topics: &[Arc<str>]) -> Result<(), BoxError> {
        let mut pipe = redis::pipe();
        for topic in topics {
            pipe.cmd(command).arg(self.channel(topic)).ignore();
        }
        pipe.exec_async(&mut self.connection).await?;
        Ok(())
    }

    fn incoming(&self, pushed: Pushed) -> Incoming {
        let Pushed::Message { channel, payload } = pushed else {
            return Incoming {
                topic: None,
                payload: Bytes::new(),
            };
        };
        let topic = channel
            .strip_prefix(&*self.prefix)
            .and_then(|topic| std::str::from_utf8(topic).ok())
            .map(Arc::from);
        Incoming {
            topic,
            payload: Bytes::from(payload),
        }
    }
}

impl Session for RedisSession {
    const KEEPALIVE: Duration = Duration::from_secs(10);

    fn transport(&self) -> &'static str {
        if self.sharded {
            "redis sharded pub/sub"
        } else {
            "redis pub/sub"
        }
    }

    async fn subscribe(&mut self, topics: &[Arc<str>]) -> Result<(), BoxError> {
        let command = if self.sharded {
            "SSUBSCRIBE"
        } else {
            "SUBSCRIBE"
        };
        self.each_channel(command, topics).await
    }

    async fn unsubscribe(&mut self, topics: &[Arc<str>]) -> Result<(), BoxError> {
        let command = if self.sharded {
            "SUNSUBSCRIBE"
        } else {
            "UNSUBSCRIBE"
        };
        self.each_channel(command, topics).await
    }

    async fn publish(&mut self, batch: &[Outgoing]) -> Result<u64, BoxError> {
        let command = if self.sharded { "SPUBLISH" } else { "PUBLISH" };
        let mut pipe = redis::pipe();
        for outgoing in batch {
            pipe.cmd(command)
                .arg(self.channel(&outgoing.topic))
                .arg(&outgoing.message[..])
                .ignore();
        }
        pipe.exec_async(&mut self.connection).await?;
        Ok(batch.len() as u64)
    }

    async fn recv(&mut self) -> Result<Incoming, BoxError> {
        tokio::select! {
            // What arrived before the connection ended is delivered first.
            biased;
            pushed = self.receiver.recv() => match pushed {
                Some(pushed) => Ok(self.incoming(pushed)),
                None => Err("the connection's reader stopped".into()),
            },
            () = self.lost.notified() => Err("the server closed the connection".into()),
        }
    }

    async fn keepalive(&mut self) -> Result<(), BoxError> {
        redis::cmd("PING").exec_async(&mut self.connection).await?;
        Ok(())
    }

    /// Dropping the connection ends its reader task.
    async fn close(self) {}
}

#[cfg(test)]
mod tests {
    use super::server_major_version;

    #[test]
    fn server_major_version_reads_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(server_major_version(info), Some(7));
        assert_eq!(server_major_version("redis_version:6.2.14\n"), Some(6));
        assert_eq!(server_major_version("# Server\r\n"), None);
        assert_eq!(server_major_version("redis_version:x.y\r\n"), None);
    }
}
