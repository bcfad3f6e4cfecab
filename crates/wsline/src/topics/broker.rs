//! The broker between nodes: the trait a [`Topics`](super::Topics) publishes through and
//! learns other nodes' messages from, and what a broker reports.

use std::fmt;
use std::sync::Weak;

use bytes::Bytes;

use super::Hub;

#[cfg(any(feature = "redis", feature = "nats"))]
mod driver;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "nats")]
pub use self::nats::{NatsBroker, NatsBrokerConfig, DEFAULT_SUBJECT_PREFIX, MAX_SUBJECT_LEN};
#[cfg(feature = "redis")]
pub use self::redis::{RedisBroker, RedisBrokerConfig, RedisPubSub, DEFAULT_CHANNEL_PREFIX};

/// Publishes waiting to go out a broker keeps by default ([`RedisBrokerConfig::max_queued`],
/// [`NatsBrokerConfig::max_queued`]); past it, a publish is dropped and counted.
#[cfg(any(feature = "redis", feature = "nats"))]
pub const DEFAULT_MAX_QUEUED: usize = 10_000;

/// A broker's configuration that cannot work, found by its constructor.
#[cfg(any(feature = "redis", feature = "nats"))]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerConfigError {
    /// The server's URL does not parse (shown without its password).
    #[error("invalid broker URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, without its user information.
        url: String,
        /// What the client crate said.
        reason: String,
    },
    /// The prefix of the names of the channels or subjects cannot be one.
    #[error("invalid broker name prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Carries publishes between the nodes of a cluster: each node's [`Topics`](super::Topics)
/// hands it what it publishes, and it hands each node what the others published to topics
/// that node subscribed to.
///
/// Every method is called by the registry and must return without waiting (queue the work
/// for the broker's own task or thread) and without calling back into the registry. The
/// registry subscribes a topic when it gets its first subscriber on this node and
/// unsubscribes it with the last; a broker that reconnects subscribes again to what it was
/// subscribed to. Messages are opaque bytes: send them as they come, on a channel named
/// after the topic, and hand each one received to [`Inbound::deliver`] with its topic —
/// this node's own messages too, if the broker echoes them (the registry recognises and
/// skips them).
pub trait Broker: Send + Sync + 'static {
    /// Called once, before any other method: where messages from other nodes go.
    fn start(&self, inbound: Inbound);

    /// This node has a subscriber of `topic` now.
    fn subscribe(&self, topic: &str);

    /// This node's last subscriber of `topic` is gone.
    fn unsubscribe(&self, topic: &str);

    /// Sends `message` to the other nodes subscribed to `topic`, without waiting: a broker
    /// that cannot take it now (its queue is full, it is disconnected) drops it and counts
    /// it in [`BrokerStats::dropped`].
    fn publish(&self, topic: &str, message: Bytes);

    /// The broker's state and counters.
    fn stats(&self) -> BrokerStats;
}

/// Where a broker delivers what other nodes published.
#[derive(Clone)]
pub struct Inbound {
    hub: Weak<Hub>,
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("open", &self.is_open())
            .finish()
    }
}

impl Inbound {
    pub(super) fn new(hub: Weak<Hub>) -> Self {
        Self { hub }
    }

    /// Delivers a message that came from the broker on `topic` to this node's subscribers
    /// (unless this node published it). Returns `false` for bytes that are not a message of
    /// a wsline node, which are ignored.
    pub fn deliver(&self, topic: &str, message: Bytes) -> bool {
        match self.hub.upgrade() {
            Some(hub) => hub.receive(topic, message),
            None => true,
        }
    }

    /// Whether the registry still exists: once every clone of its
    /// [`Topics`](super::Topics) is dropped, the broker may stop.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.hub.strong_count() > 0
    }
}

/// Whether a broker can carry messages now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerState {
    /// Connecting, or reconnecting after a failure: publishes for other nodes are dropped.
    #[default]
    Connecting,
    /// Connected and subscribed.
    Connected,
    /// Stopped for good.
    Closed,
}

/// What a broker reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Whether it can carry messages now.
    pub state: BrokerState,
    /// Messages sent to other nodes.
    pub published: u64,
    /// Messages for other nodes dropped: the queue was full, the broker unreachable, or the
    /// server refused the message (larger than it takes, say).
    pub dropped: u64,
    /// Messages received from the broker (this node's own echoes included).
    pub received: u64,
    /// Connections made after the first, after a failure.
    pub reconnects: u64,
    /// Messages for other nodes waiting to go out now (at most the broker's queue limit).
    pub queued: usize,
    /// Messages received that were not a wsline node's (another program's on the same
    /// channel, or a channel that is not a topic's): ignored. Counted in `received` too.
    pub ignored: u64,
    /// Messages from other nodes lost because this node took them more slowly than they
    /// came: the broker's inbound queue was full.
    pub missed: u64,
    /// What carries the messages, as of the last connection: `"redis sharded pub/sub"`,
    /// `"redis pub/sub"`, `"nats"`; empty before the first.
    pub transport: &'static str,
}
