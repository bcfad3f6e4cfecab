//! wsline's axum extractor in a real `axum::serve` app (HTTP/1.1 and h2c on one port, with
//! axum's `http2` feature, so SETTINGS_ENABLE_CONNECT_PROTOCOL is advertised). Peers:
//! wsline's tokio client, Python `websockets` (HTTP/1.1, deflate), Node's own `http2` with
//! an RFC 8441 extended CONNECT (`scripts/interop/node/h2_client.mjs`), and raw bytes. With
//! `WSLINE_REQUIRE_INTEROP=1` a missing Python venv or `node` fails the test.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::any;
use axum::Router;
use http::Version;
use tokio::sync::mpsc;
use wsline::axum::{WebSocket, WebSocketUpgrade};
use wsline::{CloseCode, Message};

use support::{interop, process, tokio_common};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server saw of one WebSocket: the HTTP version, the extensions, the
/// subprotocol.
type Seen = (Version, Vec<String>, Option<String>);

async fn echo(mut ws: WebSocket) {
    while let Some(Ok(message)) = ws.recv().await {
        if ws.send(message).await.is_err() {
            break;
        }
    }
}

/// The app: `/echo` (16 MiB messages, `chat` and `superchat` subprotocols) reports what it
/// saw, then echoes; `/py/` echoes and `/py/close` closes with 4003 "server bye" (what the
/// Python peer expects).
fn app(seen: mpsc::UnboundedSender<Seen>) -> Router {
    Router::new()
        .route(
            "/echo",
            any(move |upgrade: WebSocketUpgrade| async move {
                let version = upgrade.http_version();
                upgrade
                    .protocols(["chat", "superchat"])
                    .max_message_size(Some(16 << 20))
                    .on_upgrade(move |ws| async move {
                        let extensions = ws.extension_names().map(str::to_owned).collect();
                        let subprotocol = ws.subprotocol().map(str::to_owned);
                        let _ = seen.send((version, extensions, subprotocol));
                        echo(ws).await;
                    })
            }),
        )
        .route(
            "/py/",
            any(|upgrade: WebSocketUpgrade| async {
                upgrade.max_message_size(Some(16 << 20)).on_upgrade(echo)
            }),
        )
        .route(
            "/py/close",
            any(|upgrade: WebSocketUpgrade| async {
                upgrade.on_upgrade(|mut ws| async move {
                    let _ = ws.close(CloseCode::from(4003), "server bye").await;
                })
            }),
        )
}

async fn serve() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move { axum::serve(listener, app(tx)).await });
    (addr, rx)
}

#[tokio::test]
async fn the_tokio_client_gets_compressed_echoes_and_its_subprotocol() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (addr, mut seen) = serve().await;
        let mut config = wsline::ConnectConfig::default();
        config.protocol.max_message_size = Some(16 << 20);
        config.protocol.subprotocols = vec!["superchat".into(), "chat".into()];
        let mut ws = wsline::tokio::connect_with(&format!("ws://{addr}/echo"), config)
            .await
            .unwrap();
        // The server's order of preference decides.
        assert_eq!(ws.subprotocol(), Some("chat"));
        assert_eq!(
            ws.extension_names().collect::<Vec<_>>(),
            ["permessage-deflate"]
        );
        let big = Message::text("compressible ".repeat(80_000));
        for message in [
            Message::text("héllo"),
            Message::binary(vec![0, 1, 255]),
            big,
        ] {
            ws.send(message.clone()).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), message);
        }
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        assert!(ws.close_status().unwrap().clean);
        assert_eq!(
            seen.recv().await,
            Some((
                Version::HTTP_11,
                vec!["permessage-deflate".to_owned()],
                Some("chat".to_owned())
            ))
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_talks_to_the_axum_app_with_deflate() {
    let Some(python) = process::venv_python() else {
        return;
    };
    let (addr, _seen) = serve().await;
    let url = format!("ws://{addr}/py/");
    tokio::task::spawn_blocking(move || {
        interop::assert_python_client_ok(&python, &url, &["--expect-deflate"]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_http2_opens_a_websocket_over_an_extended_connect() {
    let Some(node) = process::node() else {
        return;
    };
    let (addr, mut seen) = serve().await;
    let url = format!("http://{addr}/echo");
    let outcome = tokio::task::spawn_blocking(move || {
        process::node_peer_report(&node, "h2_client.mjs", &[&url], &[])
    })
    .await
    .unwrap();
    assert!(
        outcome.contains(r#""status":200"#)
            && outcome.contains("permessage-deflate")
            && outcome.contains(r#""echoes":3"#)
            && outcome.contains(r#""close":1000"#),
        "{outcome}"
    );
    let (version, extensions, _) = seen.recv().await.unwrap();
    assert_eq!(version, Version::HTTP_2, "the server saw an HTTP/2 stream");
    assert_eq!(extensions, ["permessage-deflate"]);
}

/// A raw request; returns the response head and its body (by its `Content-Length`).
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let mut byte = [0];
    while !response.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
        response.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&response).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |length| length.trim().parse().unwrap());
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    response.extend_from_slice(&body);
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extractor_refuses_what_is_not_a_handshake_with_the_servers_status() {
    let (addr, _seen) = serve().await;
    let (plain, old_version) =
        tokio::task::spawn_blocking(move || {
            (
            exchange(addr, "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            exchange(
                addr,
                "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            ),
        )
        })
        .await
        .unwrap();
    assert!(plain.starts_with("HTTP/1.1 400 "), "{plain}");
    assert!(plain.contains("missing Upgrade header"), "{plain}");
    assert!(old_version.starts_with("HTTP/1.1 426 "), "{old_version}");
    assert!(
        old_version
            .to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{old_version}"
    );
}

#[tokio::test]
async fn a_client_that_closes_is_told_apart_from_a_server_close() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (addr, _seen) = serve().await;
        let url = format!("ws://{addr}/py/close");
        tokio_common::assert_server_closes_with(&url, 4003, "server bye").await;
    })
    .await
    .expect("test timed out");
}
