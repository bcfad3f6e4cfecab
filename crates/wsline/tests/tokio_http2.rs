//! WebSockets over HTTP/2 (RFC 8441) in wsline's own tokio server, against a peer nobody
//! here wrote: Node's `http2` (`scripts/interop/node/h2_client.mjs`), over h2c with prior
//! knowledge and over TLS with ALPN `h2`, on the same server that serves HTTP/1.1 clients.
//! With `WSLINE_REQUIRE_INTEROP=1` a missing `node` fails the tests.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wsline::tokio::{serve_with, MaybeTlsStream, Server, WebSocket};
use wsline::{CloseCode, ConnectConfig, Http2Policy, ServerConfig};

use support::{process, tls};

/// What the server saw of each WebSocket: over HTTP/2, its path, its extensions.
type Seen = (bool, String, Vec<String>);

async fn server(config: ServerConfig) -> (Server, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |mut ws: WebSocket<MaybeTlsStream>| {
        let tx = tx.clone();
        async move {
            let path = ws
                .request()
                .map(|request| request.path.clone())
                .unwrap_or_default();
            let extensions = ws.extension_names().map(str::to_owned).collect();
            assert!(
                ws.get_ref().peer_addr().is_some(),
                "the peer of every stream is known"
            );
            let _ = tx.send((ws.get_ref().is_http2(), path, extensions));
            while let Some(message) = ws.recv().await {
                ws.send(message?).await?;
            }
            Ok(())
        }
    };
    let server = serve_with(handler, "127.0.0.1:0", config).await.unwrap();
    (server, rx)
}

fn big() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.protocol.max_message_size = Some(16 << 20);
    config
}

/// Runs the Node HTTP/2 client against `url` (with an extra environment variable); checks
/// its report: 200, permessage-deflate, three echoes, the server's 1000.
async fn node_client(url: String, extra_env: Option<(&'static str, String)>) {
    let outcome = tokio::task::spawn_blocking(move || {
        let envs: Vec<(&str, &str)> = extra_env
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        process::node_peer_report(
            std::path::Path::new("node"),
            "h2_client.mjs",
            &[&url],
            &envs,
        )
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_http2_talks_to_the_tokio_server_over_h2c() {
    let Some(_node) = process::node() else {
        return;
    };
    let (server, mut seen) = server(big()).await;
    node_client(format!("http://{}/h2c?x=1", server.local_addr()), None).await;
    assert_eq!(
        seen.recv().await,
        Some((
            true,
            "/h2c?x=1".to_owned(),
            vec!["permessage-deflate".to_owned()]
        ))
    );
    // The same port still serves HTTP/1.1.
    let mut ws = wsline::tokio::connect(&format!("ws://{}/h1", server.local_addr()))
        .await
        .unwrap();
    ws.send("over HTTP/1.1").await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), "over HTTP/1.1".into());
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    let (http2, path, _) = seen.recv().await.unwrap();
    assert!(!http2);
    assert_eq!(path, "/h1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_http2_talks_to_the_tokio_server_over_tls_with_alpn_h2() {
    let Some(_node) = process::node() else {
        return;
    };
    let identity = tls::Identity::new();
    let pems = identity.write_pem("tokio-http2");
    let mut config = big();
    config.tls = Some(identity.server());
    let (server, mut seen) = server(config).await;
    let url = format!("https://localhost:{}/tls", server.local_addr().port());
    node_client(
        url,
        Some(("NODE_EXTRA_CA_CERTS", pems.cert().display().to_string())),
    )
    .await;
    let (http2, path, _) = seen.recv().await.unwrap();
    assert!(http2, "the WebSocket ran over HTTP/2");
    assert_eq!(path, "/tls");
}

/// With `http2 = false` the HTTP/2 preface is an HTTP/1.1 request like any other: refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_can_be_turned_off() {
    let mut config = big();
    config.http2 = false;
    let (server, _seen) = server(config).await;
    let addr = server.local_addr();
    let head = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(PREFACE).unwrap();
        let mut response = vec![0; 64];
        let n = stream.read(&mut response).unwrap();
        String::from_utf8_lossy(&response[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(
        head.starts_with("HTTP/1.1 4") || head.starts_with("HTTP/1.1 5"),
        "{head}"
    );
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Regression (review): an HTTP/2 connection held a connection permit forever once its
/// first 4 bytes were "PRI ". Now one with no WebSocket for the open timeout is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_without_websockets_is_closed_after_the_open_timeout() {
    let mut config = big();
    config.protocol.open_timeout = Some(Duration::from_secs(1));
    let (server, _seen) = server(config).await;
    let addr = server.local_addr();
    let started = std::time::Instant::now();
    let ended = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(PREFACE).unwrap();
        // An empty SETTINGS frame, then silence.
        stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
        let mut sink = Vec::new();
        stream.read_to_end(&mut sink).is_ok()
    })
    .await
    .unwrap();
    assert!(ended, "the server closed the connection");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.connection_count() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.connection_count(), 0, "its permit given back");
}

/// Shutdown reaches the WebSockets of an HTTP/2 connection: each gets 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_websocket_of_an_http2_connection_with_1001() {
    let (server, _seen) = server(big()).await;
    let connection =
        wsline::tokio::Http2Connection::connect(&format!("ws://{}/", server.local_addr()))
            .await
            .unwrap();
    let mut sockets = Vec::new();
    for path in ["/one", "/two"] {
        let mut ws = connection.open(path).await.unwrap();
        ws.send("hello").await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), "hello".into());
        sockets.push(ws);
    }
    let shutdown = tokio::time::timeout(Duration::from_secs(20), server.shutdown());
    let closes = async {
        let mut codes = Vec::new();
        for ws in &mut sockets {
            // recv() ends (None) at a 1000 or 1001 from the peer.
            while let Some(message) = ws.recv().await {
                assert!(
                    message.is_err(),
                    "no message after the shutdown: {message:?}"
                );
            }
            let received = ws.close_status().and_then(|closed| closed.received.clone());
            codes.push(received.map(|frame| frame.code.as_u16()));
        }
        codes
    };
    let (shutdown, codes) = tokio::join!(shutdown, closes);
    shutdown.expect("shutdown in time").unwrap();
    assert_eq!(codes, [Some(1001), Some(1001)]);
}

/// A handler whose hook panics for one path: that stream gets 500, and the other
/// WebSockets of the same HTTP/2 connection go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_fails_its_stream_not_the_connection() {
    struct Picky;
    impl wsline::tokio::Handler for Picky {
        fn on_handshake(&self, request: &wsline::proto::Request, _: &mut wsline::proto::Response) {
            assert!(request.path != "/boom", "a bug in the hook");
        }

        async fn handle(
            self: std::sync::Arc<Self>,
            mut ws: WebSocket<MaybeTlsStream>,
        ) -> wsline::Result<()> {
            while let Some(message) = ws.recv().await {
                ws.send(message?).await?;
            }
            Ok(())
        }
    }
    let server = serve_with(Picky, "127.0.0.1:0", big()).await.unwrap();
    let connection =
        wsline::tokio::Http2Connection::connect(&format!("ws://{}/", server.local_addr()))
            .await
            .unwrap();
    let mut echo = connection.open("/echo").await.unwrap();
    match connection.open("/boom").await {
        Err(wsline::Error::Handshake(wsline::proto::HandshakeError::Rejected(response))) => {
            assert_eq!(response.status, 500);
        }
        other => panic!("expected a 500, got {other:?}"),
    }
    echo.send("still here").await.unwrap();
    assert_eq!(echo.recv().await.unwrap().unwrap(), "still here".into());
}

/// Hostile and heavy HTTP/2 input (`scripts/interop/node/h2_hostile.mjs`): CONNECTs without
/// or with the wrong `:protocol` get 400, a stream reset mid-frame and a SETTINGS flood
/// leave the connection (or the server) serving, and 1,000 WebSocket streams on one
/// connection, four times the stream limit, all echo (the client waits for a free stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http2_input_leaves_the_connection_and_the_server_serving() {
    let Some(_node) = process::node() else {
        return;
    };
    let (server, _seen) = server(big()).await;
    let url = format!("http://{}/", server.local_addr());
    let outcome = tokio::task::spawn_blocking(move || {
        process::node_peer_report(
            std::path::Path::new("node"),
            "h2_hostile.mjs",
            &[&url, "1000"],
            &[],
        )
    })
    .await
    .unwrap();
    for expected in [
        r#""connectWithoutProtocol":400"#,
        r#""otherProtocol":400"#,
        r#""afterReset":true"#,
        r#""echoed":1000"#,
        r#""afterMany":true"#,
        r#""afterFlood":true"#,
        r#""maxConcurrentStreams":256"#,
    ] {
        assert!(outcome.contains(expected), "{expected} in {outcome}");
    }
    let mut ws = wsline::tokio::connect(&format!("ws://{}/", server.local_addr()))
        .await
        .unwrap();
    ws.send("still serving").await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), "still serving".into());
}

/// wsline's own HTTP/2 client: three WebSockets on one connection to wsline's server, over
/// h2c and over TLS (ALPN `h2`), with permessage-deflate and a subprotocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_websockets_share_one_http2_connection() {
    let identity = tls::Identity::new();
    let mut tls_config = big();
    tls_config.tls = Some(identity.server());
    for (config, scheme) in [(big(), "ws"), (tls_config, "wss")] {
        let mut config = config;
        config.protocol.subprotocols = vec!["chat".into()];
        let (server, mut seen) = server(config).await;
        let port = server.local_addr().port();
        let mut client = wsline::ConnectConfig::default();
        client.protocol.max_message_size = Some(16 << 20);
        client.protocol.subprotocols = vec!["chat".into()];
        client.tls = Some(identity.client());
        let connection = wsline::tokio::Http2Connection::connect_with(
            &format!("{scheme}://localhost:{port}/"),
            client,
        )
        .await
        .unwrap();
        let mut sockets = Vec::new();
        for path in ["/a", "/b?x=1", "/c"] {
            let ws = connection.open(path).await.unwrap();
            assert!(ws.get_ref().is_http2(), "{scheme}");
            assert_eq!(ws.get_ref().peer_addr().map(|addr| addr.port()), Some(port));
            assert_eq!(ws.subprotocol(), Some("chat"));
            assert_eq!(
                ws.extension_names().collect::<Vec<_>>(),
                ["permessage-deflate"]
            );
            assert_eq!(ws.response().map(|response| response.status), Some(200));
            sockets.push(ws);
        }
        let big =
            wsline::Message::binary((0..1 << 20).map(|i: u32| (i * 7) as u8).collect::<Vec<_>>());
        for (i, ws) in sockets.iter_mut().enumerate() {
            let text = wsline::Message::text(format!("socket {i} over {scheme}"));
            ws.send(text.clone()).await.unwrap();
            ws.send(big.clone()).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), text);
            assert_eq!(ws.recv().await.unwrap().unwrap(), big);
        }
        for mut ws in sockets {
            ws.close(CloseCode::NORMAL, "").await.unwrap();
            assert!(ws.close_status().unwrap().clean);
        }
        let mut paths = Vec::new();
        for _ in 0..3 {
            let (http2, path, _) = seen.recv().await.unwrap();
            assert!(http2);
            paths.push(path);
        }
        paths.sort();
        assert_eq!(paths, ["/a", "/b?x=1", "/c"], "{scheme}");
        assert!(!connection.is_closed());
    }
}

#[tokio::test]
async fn the_http2_client_fails_cleanly_against_a_server_without_http2() {
    let mut config = big();
    config.http2 = false;
    let (server, _seen) = server(config).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        wsline::tokio::Http2Connection::connect(&format!("ws://{}/", server.local_addr())),
    )
    .await
    .expect("no hang");
    assert!(outcome.is_err(), "{outcome:?}");
}

/// wsline's HTTP/2 client against a server nobody here wrote: Node's `http2` with
/// `enableConnectProtocol` (`scripts/interop/node/h2_server.mjs`), two WebSockets on one
/// connection, text, 1 MiB binary, the subprotocol, a clean close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http2_client_talks_to_a_node_http2_server() {
    let Some(_node) = process::node() else {
        return;
    };
    let (node_server, port_line) = support::process::Process::start(
        Command::new("node").arg(process::node_interop_dir().join("h2_server.mjs")),
    );
    let port: u16 = port_line.trim().parse().expect("a port");
    let mut config = wsline::ConnectConfig::default();
    config.protocol.max_message_size = Some(16 << 20);
    config.protocol.subprotocols = vec!["chat".into()];
    let connection =
        wsline::tokio::Http2Connection::connect_with(&format!("ws://127.0.0.1:{port}/"), config)
            .await
            .unwrap();
    let mut first = connection.open("/one").await.unwrap();
    let mut second = connection.open("/two").await.unwrap();
    assert_eq!(first.subprotocol(), Some("chat"));
    assert_eq!(
        first.extension_names().count(),
        0,
        "Node accepts no extension"
    );
    let big = wsline::Message::binary(
        (0..1 << 20)
            .map(|i: u32| (i * 13) as u8)
            .collect::<Vec<_>>(),
    );
    for ws in [&mut first, &mut second] {
        ws.send("héllo over HTTP/2").await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            "héllo over HTTP/2".into()
        );
        ws.send(big.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), big);
    }
    for mut ws in [first, second] {
        ws.close(CloseCode::from(4001), "bye").await.unwrap();
        let closed = ws.close_status().unwrap();
        assert!(closed.clean, "{closed:?}");
        assert_eq!(
            closed.received.as_ref().map(|frame| frame.code.as_u16()),
            Some(4001)
        );
    }
    node_server.terminate();
}

/// Each WebSocket on an HTTP/2 connection counts against `max_connections` (and in
/// `connection_count`): with room for the connection and one WebSocket (and the permit the
/// accept loop holds for the next client), the second gets 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_on_http2_count_against_max_connections() {
    let mut config = big();
    config.max_connections = 3;
    let (server, _seen) = server(config).await;
    let connection =
        wsline::tokio::Http2Connection::connect(&format!("ws://{}/", server.local_addr()))
            .await
            .unwrap();
    let mut first = connection.open("/one").await.unwrap();
    first.send("one").await.unwrap();
    assert_eq!(first.recv().await.unwrap().unwrap(), "one".into());
    assert_eq!(
        server.connection_count(),
        2,
        "the HTTP/2 connection and its WebSocket"
    );
    match connection.open("/two").await {
        Err(wsline::Error::Handshake(wsline::proto::HandshakeError::Rejected(response))) => {
            assert_eq!(response.status, 503);
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    first.close(CloseCode::NORMAL, "").await.unwrap();
    // Its permit is back: another WebSocket opens.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut again = loop {
        match connection.open("/three").await {
            Ok(ws) => break ws,
            Err(error) if std::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("no WebSocket after the first closed: {error}"),
        }
    };
    again.send("three").await.unwrap();
    assert_eq!(again.recv().await.unwrap().unwrap(), "three".into());
}

/// `connect_with` and `Http2Policy::Always` over `ws://`: the WebSocket is the one stream of
/// an h2c connection of its own, which ends with it; against a server without HTTP/2 the
/// attempt fails at once with an error, and the default policy stays on HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_http2_always_opens_a_websocket_on_an_h2c_connection_of_its_own() {
    let (h2_server, mut seen) = server(big()).await;
    let url = format!("ws://{}/always?x=1", h2_server.local_addr());
    let config = ConnectConfig {
        http2: Http2Policy::Always,
        ..ConnectConfig::default()
    };
    let mut ws = wsline::tokio::connect_with(&url, config.clone())
        .await
        .unwrap();
    assert!(ws.get_ref().is_http2());
    assert_eq!(ws.response().map(|response| response.status), Some(200));
    ws.send("over h2c").await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), "over h2c".into());
    let (http2, path, extensions) = seen.recv().await.unwrap();
    assert!(http2);
    assert_eq!(path, "/always?x=1");
    assert_eq!(extensions, ["permessage-deflate"]);
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(ws.close_status().unwrap().clean);
    drop(ws);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h2_server.connection_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTP/2 connection outlived its only WebSocket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let ws = wsline::tokio::connect(&url).await.unwrap();
    assert!(!ws.get_ref().is_http2(), "HTTP/1.1 by default");

    let mut http1_only = big();
    http1_only.http2 = false;
    let (http1_server, _seen) = server(http1_only).await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        wsline::tokio::connect_with(&format!("ws://{}/", http1_server.local_addr()), config),
    )
    .await
    .expect("no hang");
    assert!(outcome.is_err(), "{outcome:?}");
}

/// The blocking client has no HTTP/2: `Http2Policy::Always` is refused before anything is
/// sent, and not retried by a reconnecting client.
#[test]
fn the_blocking_client_refuses_http2_always() {
    let config = ConnectConfig {
        http2: Http2Policy::Always,
        ..ConnectConfig::default()
    };
    match wsline::sync::client::connect_with("ws://127.0.0.1:9/", config.clone()) {
        Err(wsline::Error::Unsupported(why)) => assert!(why.contains("HTTP/1.1 only"), "{why}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let mut connections = wsline::sync::client::reconnecting("ws://127.0.0.1:9/", config);
    assert!(matches!(
        connections.next(),
        Some(Err(wsline::Error::Unsupported(_)))
    ));
    assert!(connections.next().is_none());
}

/// A hyper server over TLS offering `h2` and `http/1.1` by ALPN, serving WebSockets through
/// `wsline::http` on both; `connect_protocol` says whether its HTTP/2 advertises RFC 8441
/// (hyper's does only when asked). It reports the HTTP version of each WebSocket.
async fn hyper_tls_server(
    identity: &tls::Identity,
    connect_protocol: bool,
) -> (SocketAddr, mpsc::UnboundedReceiver<Version>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut tls = (*identity.server()).clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let config = Arc::new(big().protocol);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, config, tx) = (acceptor.clone(), Arc::clone(&config), tx.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |request: Request<Incoming>| {
                    let (config, tx) = (Arc::clone(&config), tx.clone());
                    async move {
                        let version = request.version();
                        let (parts, body) = request.into_parts();
                        let accepted = match wsline::http::accept(&parts, config) {
                            Ok(accepted) => accepted,
                            Err(rejected) => {
                                return Ok::<Response<Full<Bytes>>, Infallible>(rejected.response())
                            }
                        };
                        let response = accepted.response();
                        let request = Request::from_parts(parts, body);
                        tokio::spawn(async move {
                            let Ok(upgraded) = hyper::upgrade::on(request).await else {
                                return;
                            };
                            let _ = tx.send(version);
                            let mut ws = accepted.into_websocket(TokioIo::new(upgraded));
                            while let Some(Ok(message)) = ws.recv().await {
                                if ws.send(message).await.is_err() {
                                    break;
                                }
                            }
                        });
                        Ok(response)
                    }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                if connect_protocol {
                    builder.http2().enable_connect_protocol();
                }
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// `Http2Policy::WhenOffered` over `wss://`: HTTP/2 where the server picks `h2` and
/// advertises RFC 8441; HTTP/1.1 on a new connection where it picks `h2` without it (a
/// server that Go's lesson, golang/go#71128, is about); compression either way.
/// `Always` against the latter is an error that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_offered_the_client_takes_http2_where_the_server_serves_websockets_over_it() {
    let identity = tls::Identity::new();
    for connect_protocol in [true, false] {
        let (addr, mut versions) = hyper_tls_server(&identity, connect_protocol).await;
        let url = format!("wss://localhost:{}/chat", addr.port());
        let mut config = ConnectConfig {
            http2: Http2Policy::WhenOffered,
            ..ConnectConfig::default()
        };
        config.tls = Some(identity.client());
        let mut ws = wsline::tokio::connect_with(&url, config.clone())
            .await
            .unwrap();
        assert_eq!(ws.get_ref().is_http2(), connect_protocol);
        assert_eq!(
            ws.extension_names().collect::<Vec<_>>(),
            ["permessage-deflate"]
        );
        let text = "x".repeat(10_000);
        ws.send(text.as_str()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), text.as_str().into());
        let expected = if connect_protocol {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        assert_eq!(versions.recv().await, Some(expected));
        ws.close(CloseCode::NORMAL, "").await.unwrap();

        if !connect_protocol {
            config.http2 = Http2Policy::Always;
            match wsline::tokio::connect_with(&url, config).await {
                Err(wsline::Error::Handshake(error)) => {
                    assert!(error.to_string().contains("RFC 8441"), "{error}");
                }
                other => panic!("expected a handshake error, got {other:?}"),
            }
        }
    }
}

/// Bytes that do not compress (permessage-deflate is on).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Regression (review of the h2 server): with one receive window for the connection no
/// bigger than a stream's, a WebSocket whose handler did not read (busy elsewhere) held the
/// whole connection window, and every other WebSocket of the connection stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_is_not_read_does_not_stall_the_others_on_its_connection() {
    let (busy_tx, mut busy_rx) = mpsc::unbounded_channel::<()>();
    let handler = move |mut ws: WebSocket<MaybeTlsStream>| {
        let busy_tx = busy_tx.clone();
        async move {
            if ws.request().is_some_and(|request| request.path == "/busy") {
                let _ = busy_tx.send(());
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            while let Some(message) = ws.recv().await {
                ws.send(message?).await?;
            }
            Ok(())
        }
    };
    let server = serve_with(handler, "127.0.0.1:0", big()).await.unwrap();
    let mut client = ConnectConfig::default();
    client.protocol.max_message_size = Some(16 << 20);
    let connection = wsline::tokio::Http2Connection::connect_with(
        &format!("ws://{}/", server.local_addr()),
        client,
    )
    .await
    .unwrap();
    let mut busy = connection.open("/busy").await.unwrap();
    let mut echo = connection.open("/echo").await.unwrap();
    busy_rx.recv().await.unwrap();
    // 2 MiB to the WebSocket nobody reads: past its stream's window, so it is not all
    // taken, and the send waits; what was taken stays in its stream.
    let writer = tokio::spawn(async move {
        let _ = busy.send(wsline::Message::binary(noise(2 << 20, 1))).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(busy);
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo.send("still here").await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(10), echo.recv()).await;
    writer.abort();
    assert_eq!(
        answered
            .expect("an answer while the other WebSocket is not read")
            .unwrap()
            .unwrap(),
        "still here".into()
    );
}

/// Regression (review): `Http2Policy::Always` against a server that closes at once
/// (restarting) reported "no RFC 8441", a permanent error, about half the time, so a
/// reconnecting client gave up; and against an HTTP/1.1-only server it was sometimes an
/// I/O error, retried forever. Now: closed early (transient) and "does not speak HTTP/2"
/// (permanent), every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_always_tells_a_server_that_hung_up_from_one_without_http2() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hangs_up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    let mut http1_only = big();
    http1_only.http2 = false;
    let (http1_server, _seen) = server(http1_only).await;
    let config = ConnectConfig {
        http2: Http2Policy::Always,
        ..ConnectConfig::default()
    };
    for _ in 0..5 {
        match wsline::tokio::connect_with(&format!("ws://{hangs_up}/"), config.clone()).await {
            Err(wsline::Error::Handshake(wsline::proto::HandshakeError::ClosedEarly))
            | Err(wsline::Error::Io(_)) => {}
            other => panic!("a server that hung up: {other:?}"),
        }
        let url = format!("ws://{}/", http1_server.local_addr());
        match wsline::tokio::connect_with(&url, config.clone()).await {
            Err(wsline::Error::Handshake(wsline::proto::HandshakeError::InvalidHttp(why))) => {
                assert!(why.contains("does not speak HTTP/2"), "{why}");
            }
            other => panic!("an HTTP/1.1-only server: {other:?}"),
        }
    }
}
