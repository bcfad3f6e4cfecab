//! Topics: publish a message once to every connection subscribed to a name (a chat room, a
//! ticker, a user's notifications), on this node and, through a [`Broker`], on every node.
//!
//! A [`Topics`] is a node's registry of topics. Each server has one
//! ([`ServerConfig::topics`](crate::ServerConfig::topics)); both servers subscribe their
//! connections to it (the sync server's `Connection::subscribe`, the tokio
//! `WebSocket::subscribe`), and anything that holds a clone publishes, from any thread or
//! task:
//!
//! ```
//! use wsline::topics::Topics;
//!
//! let topics = Topics::new();
//! assert_eq!(topics.publish("lobby", "nobody is listening yet"), 0);
//! assert_eq!(topics.subscriber_count("lobby"), 0);
//! ```
//!
//! # What a publish costs
//!
//! A publish encodes the frame once for all subscribers
//! ([`PreparedMessage`]); with permessage-deflate it is
//! compressed once per distinct set of negotiated parameters among the subscribers whose
//! server side keeps no compression context (`server_no_context_takeover`, which
//! [`ServerConfig::with_shared_compression`](crate::ServerConfig::with_shared_compression)
//! negotiates), and once per subscriber otherwise. It never waits for a subscriber: each
//! gets the frame queued, or — past its send high-water mark, a client that reads too
//! slowly — the server's [`BackpressurePolicy`](crate::BackpressurePolicy) applies to that
//! subscriber alone: `Error` drops the message for it (counted in
//! [`TopicStats::dropped`]), `Close` (the default) closes it with 1008.
//!
//! # Guarantees
//!
//! On one node, every subscriber gets the messages of one publisher on one topic in the
//! order they were published, each once, unless the backpressure policy dropped it (then
//! it is counted) or the subscriber closed. A connection is unsubscribed from every topic
//! when it closes. Across nodes (a [`Broker`]): at most once, in order per publisher and
//! topic; while the broker is unreachable, local subscribers keep getting local publishes
//! and messages for other nodes are dropped and counted, never buffered without bound.
//!
//! The thread-per-connection server (`sync::server::serve_blocking`) has no subscriptions:
//! its handlers may publish. A split tokio connection keeps the subscriptions it had and
//! publishes through its `Sender`; subscribe before splitting.
//!
//! # Brokers
//!
//! [`Topics::with_broker`] takes any [`Broker`]. wsline has two, on the servers' own
//! client crates, with those guarantees: `RedisBroker` (feature `redis`; sharded pub/sub
//! on Redis 7 and later) and `NatsBroker` (feature `nats`). Each keeps one connection per
//! node, reconnects and resubscribes by itself, and reports in
//! [`TopicsStats::broker`].
//!
//! A subscriber need not be a connection: [`Topics::subscribe_channel`] gives a
//! [`Subscription`] to receive a topic's messages from, blocking or async.

mod broker;
mod subscription;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::{BufMut, Bytes, BytesMut};

pub use self::broker::{Broker, BrokerState, BrokerStats, Inbound};
#[cfg(any(feature = "redis", feature = "nats"))]
pub use self::broker::{BrokerConfigError, DEFAULT_MAX_QUEUED};
#[cfg(feature = "nats")]
pub use self::broker::{NatsBroker, NatsBrokerConfig, DEFAULT_SUBJECT_PREFIX, MAX_SUBJECT_LEN};
#[cfg(feature = "redis")]
pub use self::broker::{RedisBroker, RedisBrokerConfig, RedisPubSub, DEFAULT_CHANNEL_PREFIX};
pub use self::subscription::{Subscription, DEFAULT_SUBSCRIPTION_CAPACITY};
use crate::proto::PreparedMessage;
use crate::Message;

/// A node's topics: who is subscribed to what, and the way to publish to them.
///
/// Cloning is cheap and shares the registry: hand clones to handlers, tasks and threads.
#[derive(Clone)]
pub struct Topics {
    hub: Arc<Hub>,
}

impl Default for Topics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Topics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topics")
            .field("topics", &self.hub.read().len())
            .field("broker", &self.hub.broker.is_some())
            .finish_non_exhaustive()
    }
}

/// Identifies one subscriber (a connection) of a [`Topics`], for
/// [`PublishOptions::exclude`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriberId {
    /// The member of the registry the connection belongs to: a sync server's event loop,
    /// or a tokio connection.
    pub(crate) member: u64,
    /// The connection within its member.
    pub(crate) local: u64,
}

/// Options of [`Topics::publish_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// A subscriber that does not get the message: the connection that sent it, in a chat.
    pub exclude: Option<SubscriberId>,
    /// Deliver to this node's subscribers only, not through the broker.
    pub local_only: bool,
}

/// Counters of one topic on this node, while it has subscribers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// Connections subscribed now.
    pub subscribers: usize,
    /// Messages published to the topic (here, or on another node through the broker) since
    /// it got its first subscriber.
    pub published: u64,
    /// Messages queued for a subscriber.
    pub delivered: u64,
    /// Messages not queued for a subscriber that was past its high-water mark (or, on a
    /// sync server, whose event loop had too much queued).
    pub dropped: u64,
}

/// Counters of a whole [`Topics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopicsStats {
    /// Topics with at least one subscriber on this node.
    pub topics: usize,
    /// Subscriptions on this node (a connection subscribed to two topics counts twice).
    pub subscriptions: usize,
    /// Messages published on this node.
    pub published: u64,
    /// Messages that came from other nodes through the broker.
    pub received: u64,
    /// Messages queued for a subscriber, in all.
    pub delivered: u64,
    /// Messages dropped for a subscriber, in all.
    pub dropped: u64,
    /// Compressions made for subscribers that share them (permessage-deflate without
    /// server context takeover): one per publish and distinct set of parameters, however
    /// many subscribers it went to. (Subscribers whose compressor keeps its context
    /// compress each message themselves, and are not counted here.)
    pub shared_compressions: u64,
    /// The broker's counters and state, when there is one.
    pub broker: Option<BrokerStats>,
}

impl Topics {
    /// A registry for one node: publishes reach this node's subscribers only.
    #[must_use]
    pub fn new() -> Self {
        Self::build(None)
    }

    /// A registry whose publishes also go to other nodes through `broker`, and which
    /// delivers what other nodes publish. The broker is started here
    /// ([`Broker::start`]); it is subscribed to a topic while this node has a subscriber.
    #[must_use]
    pub fn with_broker(broker: impl Broker) -> Self {
        let topics = Self::build(Some(Arc::new(broker)));
        if let Some(broker) = &topics.hub.broker {
            broker.start(Inbound::new(Arc::downgrade(&topics.hub)));
        }
        topics
    }

    fn build(broker: Option<Arc<dyn Broker>>) -> Self {
        Self {
            hub: Arc::new(Hub {
                node: rand::random(),
                next_member: AtomicU64::new(1),
                topics: RwLock::default(),
                counters: Arc::default(),
                broker,
            }),
        }
    }

    /// Publishes `message` to every subscriber of `topic`: on this node at once (queued for
    /// each, never waited for), and on other nodes through the broker. Returns the number
    /// of this node's subscribers of the topic (one left out by
    /// [`PublishOptions::exclude`] included).
    pub fn publish(&self, topic: &str, message: impl Into<Message>) -> usize {
        self.publish_with(topic, message, PublishOptions::default())
    }

    /// Publishes with options: a subscriber to leave out, or this node only.
    pub fn publish_with(
        &self,
        topic: &str,
        message: impl Into<Message>,
        options: PublishOptions,
    ) -> usize {
        let message = message.into();
        self.hub.counters.published.fetch_add(1, Ordering::Relaxed);
        if let (Some(broker), false) = (&self.hub.broker, options.local_only) {
            broker.publish(topic, self.hub.envelope(&message));
        }
        self.hub.deliver(topic, message, options.exclude)
    }

    /// A subscriber of `topic` that is not a connection: a queue of at most
    /// [`DEFAULT_SUBSCRIPTION_CAPACITY`] messages to receive from, blocking or async (see
    /// [`Subscription`]). It counts as one subscriber of the topic, here and for the
    /// broker, until it is dropped.
    #[must_use]
    pub fn subscribe_channel(&self, topic: &str) -> Subscription {
        Subscription::new(self, topic, DEFAULT_SUBSCRIPTION_CAPACITY)
    }

    /// [`subscribe_channel`](Self::subscribe_channel) with a queue of `capacity` messages
    /// (at least 1).
    #[must_use]
    pub fn subscribe_channel_with_capacity(&self, topic: &str, capacity: usize) -> Subscription {
        Subscription::new(self, topic, capacity)
    }

    /// Connections subscribed to `topic` on this node.
    #[must_use]
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.hub
            .read()
            .get(topic)
            .map_or(0, |topic| topic.subscribers)
    }

    /// The counters of `topic`, while it has subscribers on this node.
    #[must_use]
    pub fn topic_stats(&self, topic: &str) -> Option<TopicStats> {
        self.hub.read().get(topic).map(Topic::stats)
    }

    /// The counters of every topic and of the broker.
    #[must_use]
    pub fn stats(&self) -> TopicsStats {
        let (topics, subscriptions) = {
            let topics = self.hub.read();
            (
                topics.len(),
                topics.values().map(|topic| topic.subscribers).sum(),
            )
        };
        let counters = &self.hub.counters;
        TopicsStats {
            topics,
            subscriptions,
            published: counters.published.load(Ordering::Relaxed),
            received: counters.received.load(Ordering::Relaxed),
            delivered: counters.delivered.load(Ordering::Relaxed),
            dropped: counters.dropped.load(Ordering::Relaxed),
            shared_compressions: counters.shared_compressions.load(Ordering::Relaxed),
            broker: self.hub.broker.as_ref().map(|broker| broker.stats()),
        }
    }

    /// Whether `self` and `other` are the same registry.
    #[must_use]
    pub fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.hub, &other.hub)
    }

    /// A new member's identifier.
    pub(crate) fn new_member_id(&self) -> u64 {
        self.hub.next_member.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts one more subscriber of `topic` in `member` (which is added to the topic with
    /// its first). Returns the topic's subscribers.
    pub(crate) fn subscribe(&self, topic: &str, id: u64, member: &Arc<dyn Member>) -> usize {
        let mut topics = self.hub.write();
        let entry = topics.entry(Arc::from(topic)).or_insert_with_key(|name| {
            tracing::debug!(topic = %name, "topic created");
            if let Some(broker) = &self.hub.broker {
                broker.subscribe(name);
            }
            Topic {
                name: Arc::clone(name),
                members: Vec::new(),
                index: HashMap::new(),
                subscribers: 0,
                counters: Arc::default(),
            }
        });
        match entry.index.get(&id) {
            Some(&slot) => entry.members[slot].count += 1,
            None => {
                entry.index.insert(id, entry.members.len());
                entry.members.push(Membership {
                    id,
                    member: Arc::clone(member),
                    count: 1,
                });
            }
        }
        entry.subscribers += 1;
        entry.subscribers
    }

    /// Counts one subscriber of `topic` in `member` less; the member leaves the topic with
    /// its last, and the topic goes with its last subscriber.
    pub(crate) fn unsubscribe(&self, topic: &str, id: u64) {
        let mut topics = self.hub.write();
        let Some(entry) = topics.get_mut(topic) else {
            return;
        };
        let Some(&slot) = entry.index.get(&id) else {
            return;
        };
        entry.subscribers -= 1;
        entry.members[slot].count -= 1;
        if entry.members[slot].count == 0 {
            entry.index.remove(&id);
            entry.members.swap_remove(slot);
            if let Some(moved) = entry.members.get(slot) {
                entry.index.insert(moved.id, slot);
            }
        }
        if entry.subscribers == 0 {
            tracing::debug!(topic, "topic removed");
            topics.remove(topic);
            if let Some(broker) = &self.hub.broker {
                broker.unsubscribe(topic);
            }
        }
    }
}

/// What the registry delivers publications to: a sync server's event loop (for all its
/// connections) or one tokio connection. Delivering never blocks.
pub(crate) trait Member: Send + Sync {
    /// Queues `publication` for the member's `subscribers` of its topic. Returns what it
    /// can count at once: messages queued for a subscriber, and dropped; a member that
    /// delivers later counts then (`Publication::delivered`, `Publication::dropped`).
    fn deliver(&self, publication: &Arc<Publication>, subscribers: usize) -> Counted;
}

/// Deliveries a member counted: queued for a subscriber, and dropped.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counted {
    pub(crate) queued: u64,
    pub(crate) dropped: u64,
}

/// One message published to one topic, on its way to the members subscribed to it.
pub(crate) struct Publication {
    pub(crate) topic: Arc<str>,
    pub(crate) prepared: PreparedMessage,
    pub(crate) exclude: Option<SubscriberId>,
    topic_counters: Arc<TopicCounters>,
    counters: Arc<Counters>,
}

impl Publication {
    /// Whether the subscriber `local` of `member` is the one left out.
    pub(crate) fn excludes(&self, member: u64, local: u64) -> bool {
        self.exclude == Some(SubscriberId { member, local })
    }

    /// Counts messages queued for subscribers.
    pub(crate) fn delivered(&self, count: u64) {
        self.topic_counters
            .delivered
            .fetch_add(count, Ordering::Relaxed);
        self.counters.delivered.fetch_add(count, Ordering::Relaxed);
    }

    /// A message counted as queued for a subscriber that could not take it after all.
    pub(crate) fn undelivered(&self) {
        self.topic_counters
            .delivered
            .fetch_sub(1, Ordering::Relaxed);
        self.counters.delivered.fetch_sub(1, Ordering::Relaxed);
        self.dropped(1);
    }

    /// Counts messages dropped for subscribers.
    pub(crate) fn dropped(&self, count: u64) {
        if count == 0 {
            return;
        }
        tracing::debug!(topic = %self.topic, count, "message dropped for slow subscribers");
        self.topic_counters
            .dropped
            .fetch_add(count, Ordering::Relaxed);
        self.counters.dropped.fetch_add(count, Ordering::Relaxed);
    }
}

impl Drop for Publication {
    /// Delivered everywhere: its compressions are known.
    fn drop(&mut self) {
        let compressions = self.prepared.shared_encodings() as u64;
        if compressions > 0 {
            self.counters
                .shared_compressions
                .fetch_add(compressions, Ordering::Relaxed);
        }
    }
}

/// The registry behind [`Topics`].
struct Hub {
    /// This node, in the envelopes it sends through the broker (so that it ignores its own).
    node: [u8; 16],
    next_member: AtomicU64,
    topics: RwLock<HashMap<Arc<str>, Topic>>,
    counters: Arc<Counters>,
    broker: Option<Arc<dyn Broker>>,
}

impl Hub {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<Arc<str>, Topic>> {
        self.topics.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Arc<str>, Topic>> {
        self.topics.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `message` to every member subscribed to `topic`; returns the subscribers.
    fn deliver(&self, topic: &str, message: Message, exclude: Option<SubscriberId>) -> usize {
        let topics = self.read();
        let Some(entry) = topics.get(topic) else {
            return 0;
        };
        entry.counters.published.fetch_add(1, Ordering::Relaxed);
        let publication = Arc::new(Publication {
            topic: Arc::clone(&entry.name),
            prepared: PreparedMessage::new(message),
            exclude,
            topic_counters: Arc::clone(&entry.counters),
            counters: Arc::clone(&self.counters),
        });
        let mut counted = Counted::default();
        for membership in &entry.members {
            let member = membership.member.deliver(&publication, membership.count);
            counted.queued += member.queued;
            counted.dropped += member.dropped;
        }
        // Once per publish: these counters are shared by every thread that publishes.
        if counted.queued > 0 {
            publication.delivered(counted.queued);
        }
        publication.dropped(counted.dropped);
        entry.subscribers
    }

    /// What goes to the broker: a version, this node, the opcode, the payload.
    fn envelope(&self, message: &Message) -> Bytes {
        let payload = message.as_bytes();
        let mut envelope = BytesMut::with_capacity(ENVELOPE_HEADER_LEN + payload.len());
        envelope.put_u8(ENVELOPE_VERSION);
        envelope.put_slice(&self.node);
        envelope.put_u8(if message.is_text() {
            KIND_TEXT
        } else {
            KIND_BINARY
        });
        envelope.put_slice(payload);
        envelope.freeze()
    }

    /// A message from the broker: delivered here unless this node sent it. Returns whether
    /// it was valid.
    fn receive(&self, topic: &str, envelope: Bytes) -> bool {
        let Some(message) = self.open(envelope) else {
            return false;
        };
        if let Some(message) = message {
            self.counters.received.fetch_add(1, Ordering::Relaxed);
            self.deliver(topic, message, None);
        }
        true
    }

    /// The message in an envelope; `Some(None)` for one of this node's own.
    fn open(&self, envelope: Bytes) -> Option<Option<Message>> {
        if envelope.len() < ENVELOPE_HEADER_LEN || envelope[0] != ENVELOPE_VERSION {
            return None;
        }
        if envelope[1..17] == self.node {
            return Some(None);
        }
        let payload = envelope.slice(ENVELOPE_HEADER_LEN..);
        let message = match envelope[17] {
            KIND_TEXT => Message::Text(crate::Utf8Bytes::try_from_bytes(payload).ok()?),
            KIND_BINARY => Message::Binary(payload),
            _ => return None,
        };
        Some(Some(message))
    }
}

const ENVELOPE_VERSION: u8 = 1;
const KIND_TEXT: u8 = 1;
const KIND_BINARY: u8 = 2;
/// Version, node, kind.
const ENVELOPE_HEADER_LEN: usize = 1 + 16 + 1;

/// One topic on this node.
struct Topic {
    name: Arc<str>,
    members: Vec<Membership>,
    /// Where each member is in `members`.
    index: HashMap<u64, usize>,
    subscribers: usize,
    counters: Arc<TopicCounters>,
}

impl Topic {
    fn stats(&self) -> TopicStats {
        TopicStats {
            subscribers: self.subscribers,
            published: self.counters.published.load(Ordering::Relaxed),
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A member subscribed to a topic, with how many of its connections are.
struct Membership {
    id: u64,
    member: Arc<dyn Member>,
    count: usize,
}

#[derive(Default)]
struct TopicCounters {
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    shared_compressions: AtomicU64,
}
