//! `wsline serve --rooms --broker URL` on three nodes (three processes, two sync and one
//! tokio) and one real broker, Redis then NATS: every client gets every other client's
//! messages once and in order whichever node it is on; with the broker killed each node's
//! own rooms keep working, and across nodes delivery resumes once it is back; a node killed
//! with SIGKILL leaves the others working.

#[path = "../../wsline/tests/support/brokers.rs"]
mod brokers;
mod common;
use common::process;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use brokers::{BrokerServer, Kind};
use common::process::{Process, DEADLINE};
use common::serve;
use wsline::sync::client::connect_with;
use wsline::sync::WebSocket;
use wsline::{ConnectConfig, Message};

const ROOM: &str = "/lobby";
/// Messages each client sends in one round.
const ROUND: usize = 30;

fn client(addr: SocketAddr) -> WebSocket {
    let mut config = ConnectConfig::default();
    config.protocol.open_timeout = Some(DEADLINE);
    config.protocol.ping_interval = None;
    connect_with(&format!("ws://{addr}{ROOM}"), config).expect("join the room")
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every client of `clients` sends `ROUND` numbered messages tagged `round`; each of
/// `receivers` must get exactly those of `senders` that are not its own, each publisher's
/// in order, and nothing else.
fn round(round: &str, clients: &[WebSocket], receivers: &[usize], senders: &[usize]) {
    for &sender in senders {
        for seq in 0..ROUND {
            clients[sender]
                .send_text(&format!("{round}:{sender}:{seq}"))
                .expect("send");
        }
    }
    for &receiver in receivers {
        let expected = senders.iter().filter(|&&s| s != receiver).count() * ROUND;
        let mut next = vec![0; clients.len()];
        for _ in 0..expected {
            let message = clients[receiver]
                .recv_timeout(DEADLINE)
                .expect("recv")
                .unwrap_or_else(|| panic!("client {receiver} got too few in round {round}"));
            let Message::Text(text) = message else {
                panic!("a text message");
            };
            let mut parts = text.as_str().split(':');
            assert_eq!(parts.next(), Some(round), "client {receiver}: {text}");
            let sender: usize = parts.next().expect("sender").parse().expect("a number");
            let seq: usize = parts.next().expect("seq").parse().expect("a number");
            assert_ne!(sender, receiver, "its own message came back");
            assert_eq!(
                seq, next[sender],
                "client {receiver}: {sender}'s messages in order"
            );
            next[sender] += 1;
        }
        let extra = clients[receiver]
            .recv_timeout(Duration::from_millis(200))
            .expect("recv");
        assert_eq!(extra, None, "client {receiver} got more than once");
    }
}

fn three_nodes_share_rooms(kind: Kind) {
    let Some(mut broker) = BrokerServer::start(kind) else {
        return;
    };
    let url = broker.url();
    let mut nodes: Vec<(Process, SocketAddr)> = [&[][..], &[][..], &["--tokio"][..]]
        .iter()
        .map(|extra| serve(&[&["--rooms", "--broker", &url][..], extra].concat()))
        .collect();
    // Two clients on each node: 0 and 1 on node 0, 2 and 3 on node 1, 4 and 5 on node 2.
    let clients: Vec<WebSocket> = nodes
        .iter()
        .flat_map(|(_, addr)| [client(*addr), client(*addr)])
        .collect();
    wait_until("every node subscribed at the broker", || {
        broker.subscribers(ROOM) == 3
    });
    // The tokio node subscribes its connections in their handlers: let them start.
    std::thread::sleep(Duration::from_millis(300));
    let everyone: Vec<usize> = (0..clients.len()).collect();
    round("all", &clients, &everyone, &everyone);

    // The broker goes away: each node's own room keeps working.
    broker.kill();
    round("local0", &clients, &[0, 1], &[0]);
    round("local2", &clients, &[4, 5], &[5]);
    // Back on the same port: the nodes reconnect and subscribe again.
    broker.restart();
    wait_until("every node subscribed again", || {
        broker.subscribers(ROOM) == 3
    });
    round("again", &clients, &everyone, &everyone);

    // A node killed outright: the others carry on.
    let (killed, _) = nodes.pop().expect("node 2");
    killed.signal("KILL");
    let left: Vec<usize> = (0..4).collect();
    wait_until("the killed node gone from the broker", || {
        broker.subscribers(ROOM) == 2
    });
    round("after-kill", &clients, &left, &left);
}

#[test]
fn three_nodes_share_rooms_through_redis() {
    three_nodes_share_rooms(Kind::Redis);
}

#[test]
fn three_nodes_share_rooms_through_nats() {
    three_nodes_share_rooms(Kind::Nats);
}

/// An unknown broker scheme is a usage error (exit 2) that says what is expected.
#[test]
fn serve_rejects_a_broker_url_it_cannot_use() {
    let outcome = process::run(
        common::wsline().args(["serve", "--port", "0", "--rooms", "--broker", "http://x"]),
        "",
    );
    assert_eq!(outcome.status.code(), Some(2), "stderr: {}", outcome.stderr);
    assert!(
        outcome.stderr.contains("redis://HOST:PORT"),
        "{}",
        outcome.stderr
    );
}
