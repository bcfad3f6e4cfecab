//! The tokio layer against the sync layer, both ways, on 127.0.0.1.
#![cfg(all(feature = "tokio", feature = "sync"))]

mod support;

use support::tokio_common;

use std::time::Duration;

use tokio_common::{big_client_config, big_server_config, TEST_TIMEOUT};
use wsline::sync::server::Connection;
use wsline::{CloseCode, Message};

/// A message of every kind the test sends, the large one above the 16 KiB mark where the
/// server shares payloads instead of copying them.
fn messages() -> Vec<Message> {
    vec![
        Message::text("héllo"),
        Message::binary(vec![0, 1, 255]),
        Message::binary(
            (0..1 << 20)
                .map(|i: u32| (i * 13) as u8)
                .collect::<Vec<u8>>(),
        ),
        Message::text("x".repeat(100_000)),
    ]
}

fn echo(conn: &mut Connection, message: Message) -> wsline::Result<()> {
    conn.send(message)
}

#[tokio::test]
async fn tokio_client_talks_to_the_sync_server() {
    let server = wsline::sync::server::serve_with(echo, "127.0.0.1:0", big_server_config())
        .expect("start the sync server");
    let url = format!("ws://{}/", server.local_addr());
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut ws = wsline::tokio::connect_with(&url, big_client_config())
            .await
            .unwrap();
        for message in messages() {
            ws.send(message.clone()).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), message);
        }
        assert!(ws.ping().await.unwrap() < Duration::from_secs(5));
        ws.close(CloseCode::from(4001), "tokio bye").await.unwrap();
        let closed = ws.close_status().unwrap();
        assert!(closed.clean);
        assert_eq!(closed.code().as_u16(), 4001);
    })
    .await
    .expect("test timed out");
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_client_talks_to_the_tokio_server() {
    let server = wsline::tokio::serve_with(tokio_common::echo, "127.0.0.1:0", big_server_config())
        .await
        .unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let client = tokio::task::spawn_blocking(move || {
        let ws = wsline::sync::client::connect_with(&url, big_client_config()).unwrap();
        for message in messages() {
            ws.send(message.clone()).unwrap();
            assert_eq!(ws.recv().unwrap(), message);
        }
        assert!(ws.ping().unwrap() < Duration::from_secs(5));
        ws.close(CloseCode::from(4002), "sync bye").unwrap();
        ws.close_status()
    });
    let closed = tokio::time::timeout(TEST_TIMEOUT, client)
        .await
        .expect("test timed out")
        .unwrap()
        .expect("closed");
    assert!(closed.clean);
    assert_eq!(closed.code().as_u16(), 4002);
    server.shutdown().await.unwrap();
}
