//! WebSockets inside a hyper 1.x server through `wsline::http`: hyper answers the HTTP
//! request with the response `accept` built, and wsline runs the WebSocket on hyper's
//! upgraded stream with what was negotiated. The server is hyper-util's auto builder
//! (HTTP/1.1 and h2c on one port, with `enable_connect_protocol` as `axum::serve` sets it),
//! whose stream type the old downcasting example could not handle. Peers: wsline's tokio
//! client, Python `websockets`, Node's `http2` (an RFC 8441 extended CONNECT; with
//! `WSLINE_REQUIRE_INTEROP=1` a missing venv or `node` fails), and raw bytes.

mod support;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wsline::tokio::WebSocket;
use wsline::{CloseCode, Config, Message, ServerConfig};

use support::{interop, process, tokio_common};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

type Closes = mpsc::UnboundedSender<(u16, String)>;

/// The WebSocket side: on `/ws/close` closes with 4003 "server bye"; otherwise echoes and
/// reports the close frame the client sent.
async fn websocket<S>(mut ws: WebSocket<S>, path: String, closes: Closes)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if path == "/ws/close" {
        let _ = ws.close(CloseCode::from(4003), "server bye").await;
        return;
    }
    while let Some(message) = ws.recv().await {
        let Ok(message) = message else { break };
        if ws.send(message).await.is_err() {
            break;
        }
    }
    if let Some(received) = ws.close_status().and_then(|closed| closed.received.clone()) {
        let _ = closes.send((received.code.as_u16(), received.reason.to_string()));
    }
}

/// hyper's side: `/ws…` paths are WebSocket handshakes, anything else 404.
async fn route(
    request: Request<Incoming>,
    config: Arc<Config>,
    closes: Closes,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    if !path.starts_with("/ws") {
        let mut response = Response::new(Full::from("not found\n"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    }
    let (parts, body) = request.into_parts();
    let accepted = match wsline::http::accept(&parts, config) {
        Ok(accepted) => accepted,
        Err(rejected) => return Ok(rejected.response()),
    };
    let response = accepted.response();
    let request = Request::from_parts(parts, body);
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(request).await {
            websocket(
                accepted.into_websocket(TokioIo::new(upgraded)),
                path,
                closes,
            )
            .await;
        }
    });
    Ok(response)
}

/// Starts the hyper server on a free port; returns its address and the close frames its
/// WebSockets receive.
async fn hyper_server(config: Config) -> (SocketAddr, mpsc::UnboundedReceiver<(u16, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(config);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (config, tx) = (Arc::clone(&config), tx.clone());
            tokio::spawn(async move {
                let service =
                    service_fn(move |request| route(request, Arc::clone(&config), tx.clone()));
                let mut builder = auto::Builder::new(TokioExecutor::new());
                // hyper advertises RFC 8441 only when asked (axum::serve asks).
                builder.http2().enable_connect_protocol();
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

fn big_config() -> Config {
    let mut config = ServerConfig::default().protocol;
    config.max_message_size = Some(16 << 20);
    config
}

#[tokio::test]
async fn the_tokio_client_gets_compressed_echoes_through_hyper() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (addr, mut closes) = hyper_server(big_config()).await;
        let mut client_config = wsline::ConnectConfig::default();
        client_config.protocol.max_message_size = Some(16 << 20);
        let mut ws = wsline::tokio::connect_with(&format!("ws://{addr}/ws/"), client_config)
            .await
            .unwrap();
        assert_eq!(
            ws.extension_names().collect::<Vec<_>>(),
            ["permessage-deflate"]
        );
        let compressible = Message::text("compressible ".repeat(80_000));
        let binary: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7) as u8).collect();
        for message in [
            Message::text("héllo"),
            Message::binary(binary),
            compressible,
            Message::text(""),
        ] {
            ws.send(message.clone()).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), message);
        }
        ws.close(CloseCode::from(4001), "client bye").await.unwrap();
        assert!(ws.close_status().unwrap().clean);
        assert_eq!(closes.recv().await, Some((4001, "client bye".into())));

        let url = format!("ws://{addr}/ws/close");
        tokio_common::assert_server_closes_with(&url, 4003, "server bye").await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_talks_to_hyper_with_deflate() {
    let Some(python) = process::venv_python() else {
        return;
    };
    let (addr, mut closes) = hyper_server(big_config()).await;
    let url = format!("ws://{addr}/ws/");
    tokio::task::spawn_blocking(move || {
        interop::assert_python_client_ok(&python, &url, &["--expect-deflate"]);
    })
    .await
    .unwrap();
    let received = tokio::time::timeout(TEST_TIMEOUT, closes.recv()).await;
    assert_eq!(received.unwrap(), Some((4001, "client bye".into())));
}

/// A raw request; returns the response head.
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_answers_an_invalid_handshake_with_the_status_of_wslines_servers() {
    let (addr, _closes) = hyper_server(big_config()).await;
    let head = tokio::task::spawn_blocking(move || {
        exchange(
            addr,
            "GET /ws/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 426 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_http2_opens_a_websocket_through_hyper_with_an_extended_connect() {
    let Some(node) = process::node() else {
        return;
    };
    let (addr, mut closes) = hyper_server(big_config()).await;
    let url = format!("http://{addr}/ws/");
    let outcome = tokio::task::spawn_blocking(move || {
        process::node_peer_report(&node, "h2_client.mjs", &[&url], &[])
    })
    .await
    .unwrap();
    assert!(
        outcome.contains(r#""status":200"#) && outcome.contains("permessage-deflate"),
        "{outcome}"
    );
    let received = tokio::time::timeout(TEST_TIMEOUT, closes.recv()).await;
    assert_eq!(received.unwrap(), Some((1000, String::new())));
}
