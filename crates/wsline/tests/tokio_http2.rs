//! WebSockets over HTTP/2 (RFC 8441) in wsline's own tokio server, against a peer nobody
//! here wrote: Node's `http2` (`scripts/interop/node/h2_client.mjs`), over h2c with prior
//! knowledge and over TLS with ALPN `h2`, on the same server that serves HTTP/1.1 clients.
//! With `WSLINE_REQUIRE_INTEROP=1` a missing `node` fails the tests.

mod support;

use std::process::Command;
use std::time::Duration;

use tokio::sync::mpsc;
use wsline::tokio::{serve_with, MaybeTlsStream, Server, WebSocket};
use wsline::{CloseCode, ServerConfig};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_can_be_turned_off() {
    let Some(_node) = process::node() else {
        return;
    };
    let mut config = big();
    config.http2 = false;
    let (server, _seen) = server(config).await;
    let script = process::node_interop_dir().join("h2_client.mjs");
    let url = format!("http://{}/", server.local_addr());
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            process::run(Command::new("node").arg(script).arg(url), "")
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!output.status.success(), "{}", output.stdout);
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
