//! Reconnecting clients (`sync::client::reconnecting`, `tokio::reconnecting`): transient
//! failures are retried with backoff until a connection opens, failures that would repeat
//! end the connections.

mod support;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wsline::proto::{HandshakeError, Request, Response};
use wsline::sync::client::reconnecting;
use wsline::sync::server::{serve_on, Connection, Handler, Server};
use wsline::{Backoff, ConnectConfig, Error, Message};

use support::{client_config, server_config, DEADLINE};

/// Answers the first `busy` handshakes with 503, then accepts and echoes; refuses every
/// handshake with 403 on `/forbidden`.
struct Flaky {
    busy: usize,
    handshakes: Arc<AtomicUsize>,
}

impl Handler for Flaky {
    type State = ();

    fn on_handshake(&self, request: &Request, response: &mut Response) {
        let seen = self.handshakes.fetch_add(1, Ordering::SeqCst);
        if request.path == "/forbidden" {
            *response = Response::text(403, "no");
        } else if seen < self.busy {
            *response = Response::text(503, "busy");
        }
    }

    fn on_message(&self, conn: &mut Connection<'_, ()>, message: Message) -> wsline::Result<()> {
        conn.send(message)
    }
}

fn start_on(listener: TcpListener, busy: usize) -> (Server, Arc<AtomicUsize>) {
    let handshakes = Arc::new(AtomicUsize::new(0));
    let handler = Flaky {
        busy,
        handshakes: Arc::clone(&handshakes),
    };
    (
        serve_on(handler, listener, server_config()).expect("serve"),
        handshakes,
    )
}

fn quick_backoff() -> ConnectConfig {
    ConnectConfig {
        backoff: Backoff {
            min: Duration::from_millis(20),
            max: Duration::from_millis(100),
            ..Backoff::default()
        },
        ..client_config()
    }
}

fn assert_echoes(ws: &wsline::sync::WebSocket) {
    ws.send_text("still there").unwrap();
    let reply = ws.recv_timeout(DEADLINE).unwrap().expect("an echo in time");
    assert_eq!(reply, Message::text("still there"));
}

#[test]
fn sync_client_waits_for_a_server_that_is_not_up_yet_and_reconnects_after_each_connection() {
    // A port nobody listens on yet: attempts are refused until the server starts.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/");
    let client = std::thread::spawn(move || {
        let mut connections = reconnecting(&url, quick_backoff());
        for _ in 0..2 {
            let ws = connections.next().expect("a connection").expect("opened");
            assert_echoes(&ws);
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let (_server, handshakes) = start_on(TcpListener::bind(("127.0.0.1", port)).unwrap(), 0);
    client.join().unwrap();
    assert_eq!(handshakes.load(Ordering::SeqCst), 2);
}

#[test]
fn sync_client_retries_a_busy_server_and_stops_at_a_refusal() {
    let (server, handshakes) = start_on(TcpListener::bind("127.0.0.1:0").unwrap(), 2);
    let addr = server.local_addr();
    let mut connections = reconnecting(&format!("ws://{addr}/"), quick_backoff());
    let ws = connections.next().unwrap().expect("opened after two 503s");
    assert_echoes(&ws);
    assert_eq!(handshakes.load(Ordering::SeqCst), 3);

    let mut refused = reconnecting(&format!("ws://{addr}/forbidden"), quick_backoff());
    match refused.next() {
        Some(Err(Error::Handshake(HandshakeError::Rejected(response)))) => {
            assert_eq!(response.status, 403);
        }
        other => panic!("expected the 403, got {other:?}"),
    }
    assert!(refused.next().is_none(), "a refusal ends the connections");
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_client_retries_until_the_server_accepts_and_stops_at_a_refusal() {
    let (server, handshakes) = start_on(TcpListener::bind("127.0.0.1:0").unwrap(), 2);
    let addr = server.local_addr();
    let mut connections = wsline::tokio::reconnecting(&format!("ws://{addr}/"), quick_backoff());
    let mut ws = connections
        .next()
        .await
        .unwrap()
        .expect("opened after two 503s");
    ws.send("still there").await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::text("still there")
    );
    assert_eq!(handshakes.load(Ordering::SeqCst), 3);
    let mut refused =
        wsline::tokio::reconnecting(&format!("ws://{addr}/forbidden"), quick_backoff());
    assert!(matches!(
        refused.next().await,
        Some(Err(Error::Handshake(_)))
    ));
    assert!(refused.next().await.is_none());
}
