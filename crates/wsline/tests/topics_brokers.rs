//! The brokers of `wsline::topics` against real servers: `redis-server` (sharded pub/sub,
//! which Redis 7 has, and classic pub/sub) and `nats-server`, each started on a free port
//! of 127.0.0.1 by the test and killed by its PID. Three `Topics::with_broker` in one
//! process are three nodes; `Topics::subscribe_channel` is a subscriber on a node.
//!
//! Without the server binaries the tests print a note and pass, or fail with
//! `WSLINE_REQUIRE_INTEROP=1` (which `scripts/test.sh` sets, after installing them).

mod support;

use std::time::{Duration, Instant};

use support::brokers::{free_port, BrokerServer, Kind};
use support::{exclusive, rss_kib, shared, wait_until, DEADLINE};
use wsline::topics::{
    BrokerState, BrokerStats, NatsBroker, NatsBrokerConfig, RedisBroker, RedisBrokerConfig,
    RedisPubSub, Subscription, Topics,
};
use wsline::{Backoff, Message};

/// Reconnect fast: a restarted server is found again within a fraction of a second.
const FAST_BACKOFF: Backoff = Backoff {
    min: Duration::from_millis(20),
    max: Duration::from_millis(200),
    factor: 2.0,
};
/// How long a subscriber must stay without messages to count as having got nothing more.
const QUIET: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug)]
enum Flavor {
    Redis(RedisPubSub),
    Nats,
}

impl Flavor {
    fn kind(self) -> Kind {
        match self {
            Self::Redis(_) => Kind::Redis,
            Self::Nats => Kind::Nats,
        }
    }
}

/// A broker server and the flavor of broker the nodes use with it.
struct Cluster {
    server: BrokerServer,
    flavor: Flavor,
}

impl Cluster {
    fn start(flavor: Flavor) -> Option<Self> {
        let server = BrokerServer::start(flavor.kind())?;
        Some(Self { server, flavor })
    }

    fn node(&self) -> Node {
        Node::new(self.flavor, &self.server.url(), 10_000)
    }

    /// A node, connected.
    fn connected_node(&self) -> Node {
        let node = self.node();
        node.wait_for(BrokerState::Connected);
        node
    }
}

/// A node: its registry, and a clone of its broker to read the broker's own stats.
struct Node {
    topics: Topics,
    broker: AnyBroker,
}

#[derive(Clone)]
enum AnyBroker {
    Redis(RedisBroker),
    Nats(NatsBroker),
}

impl AnyBroker {
    fn stats(&self) -> BrokerStats {
        match self {
            Self::Redis(broker) => broker.stats(),
            Self::Nats(broker) => broker.stats(),
        }
    }
}

impl Node {
    fn new(flavor: Flavor, url: &str, max_queued: usize) -> Self {
        let broker = match flavor {
            Flavor::Redis(pubsub) => AnyBroker::Redis(
                RedisBroker::with_config(RedisBrokerConfig {
                    max_queued,
                    backoff: FAST_BACKOFF,
                    pubsub,
                    ..RedisBrokerConfig::new(url)
                })
                .expect("a valid Redis URL"),
            ),
            Flavor::Nats => AnyBroker::Nats(
                NatsBroker::with_config(NatsBrokerConfig {
                    max_queued,
                    backoff: FAST_BACKOFF,
                    ..NatsBrokerConfig::new(url)
                })
                .expect("a valid NATS URL"),
            ),
        };
        let topics = match broker.clone() {
            AnyBroker::Redis(broker) => Topics::with_broker(broker),
            AnyBroker::Nats(broker) => Topics::with_broker(broker),
        };
        Self { topics, broker }
    }

    fn stats(&self) -> BrokerStats {
        self.broker.stats()
    }

    fn wait_for(&self, state: BrokerState) {
        wait_until(&format!("the broker is {state:?}"), || {
            self.stats().state == state
        });
    }
}

fn text(message: Message) -> String {
    message.as_text().expect("a text message").to_owned()
}

/// The next `count` messages of `subscription`, each within [`DEADLINE`].
fn receive(subscription: &mut Subscription, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| {
            let message = subscription.recv_timeout(DEADLINE);
            text(message.unwrap_or_else(|| panic!("message {index} of {count}")))
        })
        .collect()
}

/// Asserts that nothing more comes.
fn assert_quiet(subscription: &mut Subscription) {
    assert_eq!(subscription.recv_timeout(QUIET).map(text), None);
}

/// The numbers of `publisher`'s messages (`publisher:number`) among `messages`, in the
/// order they came.
fn sequence_of(messages: &[String], publisher: &str) -> Vec<usize> {
    messages
        .iter()
        .filter_map(|message| message.strip_prefix(publisher)?.strip_prefix(':'))
        .map(|number| number.parse().expect("a number"))
        .collect()
}

/// One test per broker: `$name::redis` (sharded pub/sub: the server is Redis 7),
/// `$name::nats`, and with `classic`, `$name::redis_classic` too.
macro_rules! for_each_broker {
    ($name:ident) => {
        mod $name {
            #[test]
            fn redis() {
                super::$name(super::Flavor::Redis(wsline::topics::RedisPubSub::Auto));
            }

            #[test]
            fn nats() {
                super::$name(super::Flavor::Nats);
            }
        }
    };
    ($name:ident, classic) => {
        mod $name {
            #[test]
            fn redis() {
                super::$name(super::Flavor::Redis(wsline::topics::RedisPubSub::Auto));
            }

            #[test]
            fn redis_classic() {
                super::$name(super::Flavor::Redis(wsline::topics::RedisPubSub::Classic));
            }

            #[test]
            fn nats() {
                super::$name(super::Flavor::Nats);
            }
        }
    };
}

for_each_broker!(publishes_reach_every_other_node_once_in_order, classic);
for_each_broker!(subscribed_at_the_broker_only_while_a_local_subscriber_exists);
for_each_broker!(
    broker_outage_keeps_local_delivery_drops_remote_and_resubscribes,
    classic
);
for_each_broker!(unreachable_broker_drops_every_remote_publish_and_queues_none);
for_each_broker!(slow_broker_fills_the_bounded_queue_then_drops);
for_each_broker!(dropping_the_registry_stops_the_broker_thread);
for_each_broker!(dropping_the_registry_stops_the_broker_task);
for_each_broker!(foreign_messages_on_a_topic_are_ignored_and_counted);

/// Nodes A and B publish 500 numbered messages each, at once; every subscriber (A's, B's,
/// C's) gets all 1000 exactly once — its own node's locally, the others' through the
/// broker, never its own node's twice — each publisher's in order.
fn publishes_reach_every_other_node_once_in_order(flavor: Flavor) {
    let _shared = shared();
    let Some(cluster) = Cluster::start(flavor) else {
        return;
    };
    let nodes = [cluster.node(), cluster.node(), cluster.node()];
    let mut subscriptions: Vec<_> = nodes
        .iter()
        .map(|node| node.topics.subscribe_channel_with_capacity("room", 4096))
        .collect();
    wait_until("every node subscribed at the server", || {
        cluster.server.subscribers("room") == 3
    });
    // Connected once subscribed: a moment after the server counted the subscriptions.
    for node in &nodes {
        node.wait_for(BrokerState::Connected);
    }
    let expected_transport = match flavor {
        Flavor::Redis(RedisPubSub::Classic) => "redis pub/sub",
        Flavor::Redis(_) => "redis sharded pub/sub",
        Flavor::Nats => "nats",
    };
    assert_eq!(nodes[0].stats().transport, expected_transport);

    let started = Instant::now();
    std::thread::scope(|scope| {
        for (publisher, node) in [("a", &nodes[0]), ("b", &nodes[1])] {
            scope.spawn(move || {
                for number in 0..500 {
                    node.topics.publish("room", format!("{publisher}:{number}"));
                }
            });
        }
    });
    let got_c = receive(&mut subscriptions[2], 1000);
    let elapsed = started.elapsed();
    eprintln!(
        "{flavor:?}: 1000 messages from two nodes to a third in {elapsed:?} ({:.0} messages/s)",
        1000.0 / elapsed.as_secs_f64()
    );
    let mut got = vec![got_c];
    got.push(receive(&mut subscriptions[0], 1000));
    got.push(receive(&mut subscriptions[1], 1000));
    for (messages, subscription) in got.iter().zip(&mut subscriptions) {
        assert_quiet(subscription);
        for publisher in ["a", "b"] {
            assert_eq!(
                sequence_of(messages, publisher),
                (0..500).collect::<Vec<_>>()
            );
        }
    }
    // Through the broker, each node got the other publisher's 500 (C both's): its own
    // echo, which Redis sends back, was recognised and skipped.
    let received: Vec<u64> = nodes
        .iter()
        .map(|node| node.topics.stats().received)
        .collect();
    assert_eq!(received, [500, 500, 1000]);
    for node in &nodes[..2] {
        let stats = node.stats();
        assert_eq!(
            (stats.published, stats.dropped, stats.ignored),
            (500, 0, 0),
            "{stats:?}"
        );
    }
}

/// One subscription at the server per node and topic, from the first local subscriber to
/// the last.
fn subscribed_at_the_broker_only_while_a_local_subscriber_exists(flavor: Flavor) {
    let _shared = shared();
    let Some(cluster) = Cluster::start(flavor) else {
        return;
    };
    let node = cluster.connected_node();
    let subscribers = || cluster.server.subscribers("room");
    assert_eq!(subscribers(), 0);

    let first = node.topics.subscribe_channel("room");
    wait_until("subscribed at the server", || subscribers() == 1);
    let second = node.topics.subscribe_channel("room");
    drop(first);
    std::thread::sleep(QUIET);
    assert_eq!(
        subscribers(),
        1,
        "one subscription for the node, while one is left"
    );
    drop(second);
    wait_until("unsubscribed at the server", || subscribers() == 0);

    // A topic that comes and goes faster than the server answers ends unsubscribed.
    for _ in 0..100 {
        drop(node.topics.subscribe_channel("flicker"));
    }
    let kept = node.topics.subscribe_channel("kept");
    wait_until("the kept topic subscribed", || {
        cluster.server.subscribers("kept") == 1
    });
    assert_eq!(cluster.server.subscribers("flicker"), 0);
    drop(kept);
    wait_until("the kept topic unsubscribed", || {
        cluster.server.subscribers("kept") == 0
    });

    // And subscribed again with a new first subscriber.
    let _again = node.topics.subscribe_channel("room");
    wait_until("subscribed again", || subscribers() == 1);
}

/// The server is killed (SIGKILL) while nodes run: local delivery goes on, publishes for
/// other nodes are dropped and counted; restarted on the same port, both nodes reconnect
/// and resubscribe, and cross-node delivery resumes without duplicates.
fn broker_outage_keeps_local_delivery_drops_remote_and_resubscribes(flavor: Flavor) {
    let _shared = shared();
    let Some(mut cluster) = Cluster::start(flavor) else {
        return;
    };
    let (a, b) = (cluster.node(), cluster.node());
    let mut local = a.topics.subscribe_channel("room");
    let mut remote = b.topics.subscribe_channel("room");
    wait_until("both subscribed", || {
        cluster.server.subscribers("room") == 2
    });
    a.wait_for(BrokerState::Connected);
    b.wait_for(BrokerState::Connected);
    a.topics.publish("room", "before");
    assert_eq!(receive(&mut remote, 1), ["before"]);
    assert_eq!(receive(&mut local, 1), ["before"]);

    cluster.server.kill();
    a.wait_for(BrokerState::Connecting);
    b.wait_for(BrokerState::Connecting);
    for number in 0..10 {
        assert_eq!(a.topics.publish("room", format!("during:{number}")), 1);
    }
    let during = receive(&mut local, 10);
    assert_eq!(sequence_of(&during, "during"), (0..10).collect::<Vec<_>>());
    assert_eq!(a.stats().dropped, 10, "{:?}", a.stats());
    assert_eq!(a.stats().queued, 0);

    cluster.server.restart();
    a.wait_for(BrokerState::Connected);
    b.wait_for(BrokerState::Connected);
    wait_until("both resubscribed", || {
        cluster.server.subscribers("room") == 2
    });
    assert_eq!((a.stats().reconnects, b.stats().reconnects), (1, 1));

    for number in 0..100 {
        a.topics.publish("room", format!("after:{number}"));
    }
    let after = receive(&mut remote, 100);
    assert_eq!(sequence_of(&after, "after"), (0..100).collect::<Vec<_>>());
    assert_quiet(&mut remote);
    assert_eq!(receive(&mut local, 100), after);
    assert_quiet(&mut local);
    let stats = a.stats();
    assert_eq!((stats.published, stats.dropped), (101, 10), "{stats:?}");
}

/// Nothing listens where the broker connects: every publish for other nodes is dropped
/// and counted at once, nothing is queued, local subscribers get everything.
fn unreachable_broker_drops_every_remote_publish_and_queues_none(flavor: Flavor) {
    let _shared = shared();
    let url = match flavor {
        Flavor::Redis(_) => format!("redis://127.0.0.1:{}", free_port()),
        Flavor::Nats => format!("nats://127.0.0.1:{}", free_port()),
    };
    let node = Node::new(flavor, &url, 16);
    let mut local = node.topics.subscribe_channel("room");
    for number in 0..1000 {
        node.topics.publish("room", format!("local:{number}"));
    }
    let got = receive(&mut local, 1000);
    assert_eq!(sequence_of(&got, "local"), (0..1000).collect::<Vec<_>>());
    let stats = node.stats();
    assert_eq!(stats.state, BrokerState::Connecting);
    assert_eq!(
        (stats.published, stats.dropped, stats.queued),
        (0, 1000, 0),
        "{stats:?}"
    );
    // It keeps trying: after a few backoff periods, still nothing queued.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.stats().queued, 0);
}

/// The server stops reading (SIGSTOP) while a node publishes 128 MiB: the queue fills to
/// its limit and stays there, the rest is dropped and counted, memory stays far below what
/// was published; once the server goes on, every publish is accounted for and delivery to
/// the other node resumes, in order.
fn slow_broker_fills_the_bounded_queue_then_drops(flavor: Flavor) {
    // Measures this process's memory: alone.
    let _exclusive = exclusive();
    let Some(cluster) = Cluster::start(flavor) else {
        return;
    };
    const MAX_QUEUED: usize = 64;
    const COUNT: usize = 2000;
    const SIZE: usize = 64 * 1024;
    let a = Node::new(flavor, &cluster.server.url(), MAX_QUEUED);
    let b = cluster.connected_node();
    let mut remote = b.topics.subscribe_channel_with_capacity("room", COUNT + 1);
    wait_until("subscribed", || cluster.server.subscribers("room") == 1);
    a.wait_for(BrokerState::Connected);

    let rss_before = rss_kib();
    cluster.server.pause();
    let mut most_queued = 0;
    for number in 0..COUNT {
        let mut message = format!("big:{number}:").into_bytes();
        message.resize(SIZE, b'.');
        a.topics
            .publish("room", String::from_utf8(message).expect("ASCII"));
        most_queued = most_queued.max(a.stats().queued);
    }
    let rss_after = rss_kib();
    let stats = a.stats();
    cluster.server.resume();
    assert!(
        most_queued <= MAX_QUEUED,
        "queued {most_queued} > {MAX_QUEUED}"
    );
    assert_eq!(
        stats.state,
        BrokerState::Connected,
        "a pause of the server is no failure"
    );
    assert!(
        stats.dropped >= (COUNT / 2) as u64,
        "most of the publishes dropped while the server was stopped: {stats:?}"
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let grown_kib = after.saturating_sub(before);
        let published_kib = COUNT * SIZE / 1024;
        assert!(
            grown_kib < published_kib / 4,
            "memory grew by {grown_kib} KiB while {published_kib} KiB were published"
        );
    }

    wait_until("every publish accounted for", || {
        let stats = a.stats();
        stats.published + stats.dropped == COUNT as u64
    });
    let stats = a.stats();
    let delivered = receive(&mut remote, stats.published as usize);
    let numbers: Vec<usize> = delivered
        .iter()
        .map(|message| {
            message
                .split(':')
                .nth(1)
                .expect("big:n:")
                .parse()
                .expect("n")
        })
        .collect();
    assert!(
        numbers.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, once each"
    );
    a.topics.publish("room", "after");
    assert_eq!(receive(&mut remote, 1), ["after"]);
}

/// The registry is dropped with a clone of its broker kept: the broker's thread (no
/// runtime here) closes its connection and ends.
fn dropping_the_registry_stops_the_broker_thread(flavor: Flavor) {
    let _shared = shared();
    let Some(cluster) = Cluster::start(flavor) else {
        return;
    };
    let node = cluster.connected_node();
    let _subscription = node.topics.subscribe_channel("room");
    wait_until("one client", || cluster.server.clients() == 1);
    let Node { topics, broker } = node;
    drop(topics);
    wait_until("the broker closed", || {
        broker.stats().state == BrokerState::Closed
    });
    wait_until("no client left", || cluster.server.clients() == 0);
    std::thread::sleep(QUIET);
    assert_eq!(cluster.server.clients(), 0, "the broker does not reconnect");
}

/// The same on a tokio runtime: the broker is a task there, and ends the same way.
fn dropping_the_registry_stops_the_broker_task(flavor: Flavor) {
    let _shared = shared();
    let Some(cluster) = Cluster::start(flavor) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let node = runtime.block_on(async { cluster.node() });
    node.wait_for(BrokerState::Connected);
    // The async receive, on the same runtime.
    let mut subscription = node.topics.subscribe_channel("room");
    wait_until("subscribed", || cluster.server.subscribers("room") == 1);
    let other = cluster.connected_node();
    other.topics.publish("room", "to the task");
    let message =
        runtime.block_on(async { tokio::time::timeout(DEADLINE, subscription.recv()).await });
    assert_eq!(
        message.ok().flatten().map(text).as_deref(),
        Some("to the task")
    );
    drop(other);
    wait_until("one client", || cluster.server.clients() == 1);

    let Node { topics, broker } = node;
    drop(topics);
    wait_until("the broker closed", || {
        broker.stats().state == BrokerState::Closed
    });
    wait_until("no client left", || cluster.server.clients() == 0);
    // Nothing delivers to the subscription any more: it ends.
    assert_eq!(subscription.recv_timeout(QUIET), None);
    drop(runtime);
}

/// Another program publishes on a topic's channel: the node ignores it and counts it, and
/// its subscribers get only what wsline nodes publish.
fn foreign_messages_on_a_topic_are_ignored_and_counted(flavor: Flavor) {
    let _shared = shared();
    let Some(cluster) = Cluster::start(flavor) else {
        return;
    };
    let node = cluster.connected_node();
    let mut subscription = node.topics.subscribe_channel("room");
    wait_until("subscribed", || cluster.server.subscribers("room") == 1);
    let channel = cluster.server.name_of("room");
    for payload in [&b"not a wsline message"[..], b"", b"\x01"] {
        match flavor {
            Flavor::Redis(_) => {
                let command = if node.stats().transport.contains("sharded") {
                    "SPUBLISH"
                } else {
                    "PUBLISH"
                };
                let _: usize = redis::cmd(command)
                    .arg(&channel)
                    .arg(payload)
                    .query(&mut cluster.server.redis())
                    .expect("a raw publish");
            }
            Flavor::Nats => nats_publish(&cluster.server.url(), &channel, payload),
        }
    }
    wait_until("three ignored", || node.stats().ignored == 3);
    let other = cluster.connected_node();
    other.topics.publish("room", "from a node");
    assert_eq!(receive(&mut subscription, 1), ["from a node"]);
    assert_quiet(&mut subscription);
    assert_eq!(node.stats().ignored, 3);
}

/// Publishes `payload` on `subject` as a plain NATS client.
fn nats_publish(url: &str, subject: &str, payload: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("a NATS connection");
        client
            .publish(subject.to_owned(), payload.to_vec().into())
            .await
            .expect("a raw publish");
        client.flush().await.expect("flushed");
    });
}
