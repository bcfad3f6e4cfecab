//! `wss://` (feature `rustls`): every client against every server over TLS, with a
//! certificate made for the test; and the TLS failures a user must be able to tell apart
//! (untrusted certificate, wrong host name, a client that does not speak TLS).

mod support;

use support::tokio_common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use wsline::proto::ConnectionClosed;
use wsline::sync::server::{serve_blocking_on, serve_on, Connection, Handler, Server};
use wsline::{CloseCode, ConnectConfig, Error, Message, ServerConfig};

use support::tls::Identity;
use support::{client_config, server_config, DEADLINE};
use tokio_common::{bounded, payload};

fn tls_server_config(identity: &Identity) -> ServerConfig {
    let mut config = server_config();
    config.protocol.max_message_size = Some(16 << 20);
    config.tls = Some(identity.server());
    config
}

fn tls_client_config(identity: &Identity) -> ConnectConfig {
    let mut config = client_config();
    config.protocol.max_message_size = Some(16 << 20);
    config.tls = Some(identity.client());
    config
}

fn wss(addr: SocketAddr) -> String {
    format!("wss://localhost:{}/", addr.port())
}

/// Messages that cross TLS records and socket buffers: small, empty, several MiB (more than
/// rustls buffers and the socket takes at once), compressible (permessage-deflate inside
/// TLS).
fn messages() -> Vec<Message> {
    vec![
        Message::text("héllo over TLS"),
        Message::binary(Vec::new()),
        Message::binary(payload(8 << 20, 7)),
        Message::text("compressible ".repeat(100_000)),
    ]
}

/// An event-loop echo server that reports how each connection closed.
struct Echo(mpsc::Sender<ConnectionClosed>);

impl Handler for Echo {
    type State = ();

    fn on_message(&self, conn: &mut Connection<'_, ()>, message: Message) -> wsline::Result<()> {
        conn.send(message)
    }

    fn on_close(&self, _: &mut Connection<'_, ()>, closed: &ConnectionClosed) {
        // The test may be over already.
        let _ = self.0.send(closed.clone());
    }
}

fn start_event_loop(identity: &Identity) -> (Server, mpsc::Receiver<ConnectionClosed>) {
    let (report, reports) = mpsc::channel();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let server = serve_on(Echo(report), listener, tls_server_config(identity)).expect("serve");
    (server, reports)
}

fn sync_exchange(addr: SocketAddr, identity: &Identity) {
    let ws = wsline::sync::client::connect_with(&wss(addr), tls_client_config(identity))
        .expect("a wss:// connection");
    for message in messages() {
        ws.send(message.clone()).expect("send");
        let echoed = ws.recv_timeout(DEADLINE).expect("recv").expect("in time");
        assert_eq!(echoed, message);
    }
    // Pipelined: many small messages before reading any reply.
    for i in 0..500 {
        ws.send_text(&format!("message {i}")).expect("send");
    }
    for i in 0..500 {
        let echoed = ws.recv_timeout(DEADLINE).expect("recv").expect("in time");
        assert_eq!(echoed, Message::text(format!("message {i}")));
    }
    assert!(ws.ping().expect("a pong") < DEADLINE);
    ws.close(CloseCode::from(4000), "bye").expect("close");
    let closed = ws.close_status().expect("closed");
    assert!(closed.clean, "{closed}");
}

#[test]
fn sync_client_and_event_loop_server() {
    let identity = Identity::new();
    let (server, reports) = start_event_loop(&identity);
    sync_exchange(server.local_addr(), &identity);
    let closed = reports.recv_timeout(DEADLINE).expect("on_close");
    assert_eq!(closed.code(), CloseCode::from(4000));
    assert_eq!(closed.reason(), "bye");
}

#[test]
fn sync_client_and_blocking_server() {
    let identity = Identity::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let server = serve_blocking_on(
        |ws: &wsline::sync::WebSocket| {
            for message in ws {
                ws.send(message?)?;
            }
            Ok(())
        },
        listener,
        tls_server_config(&identity),
    )
    .expect("serve");
    sync_exchange(server.local_addr(), &identity);
}

#[test]
fn tokio_client_and_tokio_server() {
    let identity = Identity::new();
    tokio_runtime().block_on(bounded(async {
        let server = wsline::tokio::serve_with(
            tokio_common::echo,
            "127.0.0.1:0",
            tls_server_config(&identity),
        )
        .await
        .expect("serve");
        tokio_exchange(server.local_addr(), &identity).await;
        server.shutdown().await.expect("shutdown");
    }));
}

#[test]
fn tokio_client_and_event_loop_server() {
    let identity = Identity::new();
    let (server, reports) = start_event_loop(&identity);
    tokio_runtime().block_on(bounded(tokio_exchange(server.local_addr(), &identity)));
    let closed = reports.recv_timeout(DEADLINE).expect("on_close");
    assert_eq!(closed.code(), CloseCode::from(4001));
}

#[test]
fn sync_client_and_tokio_server() {
    let identity = Identity::new();
    let runtime = tokio_runtime();
    let server = runtime
        .block_on(wsline::tokio::serve_with(
            tokio_common::echo,
            "127.0.0.1:0",
            tls_server_config(&identity),
        ))
        .expect("serve");
    let addr = server.local_addr();
    // The runtime's worker threads serve while this thread blocks.
    std::thread::scope(|scope| {
        scope.spawn(|| sync_exchange(addr, &identity));
    });
    runtime.block_on(server.shutdown()).expect("shutdown");
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn tokio_exchange(addr: SocketAddr, identity: &Identity) {
    let mut ws = wsline::tokio::connect_with(&wss(addr), tls_client_config(identity))
        .await
        .expect("a wss:// connection");
    for message in messages() {
        ws.send(message.clone()).await.expect("send");
        let echoed = ws.recv().await.expect("a reply").expect("no error");
        assert_eq!(echoed, message);
    }
    assert!(ws.ping().await.expect("a pong") < DEADLINE);
    ws.close(CloseCode::from(4001), "bye").await.expect("close");
}

fn assert_tls_error(result: wsline::Result<impl std::fmt::Debug>, what: &str) {
    match result {
        Err(Error::Tls(message)) => assert!(message.contains(what), "{message}"),
        other => panic!("expected a TLS error about {what}, got {other:?}"),
    }
}

#[test]
fn untrusted_certificate_is_a_tls_error() {
    let identity = Identity::new();
    let (server, _reports) = start_event_loop(&identity);
    let url = wss(server.local_addr());
    // The default configuration trusts the Mozilla roots, which did not sign this one.
    let mut config = client_config();
    config.tls = None;
    assert_tls_error(
        wsline::sync::client::connect_with(&url, config.clone()),
        "UnknownIssuer",
    );
    let result = tokio_runtime().block_on(wsline::tokio::connect_with(&url, config));
    assert_tls_error(result, "UnknownIssuer");
    support::assert_served(&url, &tls_client_config(&identity));
}

#[test]
fn wrong_host_name_is_a_tls_error() {
    let identity = Identity::new();
    let (server, _reports) = start_event_loop(&identity);
    let url = format!("wss://{}/", server.local_addr());
    assert_tls_error(
        wsline::sync::client::connect_with(&url, tls_client_config(&identity)),
        "not valid for name",
    );
    let result = tokio_runtime().block_on(wsline::tokio::connect_with(
        &url,
        tls_client_config(&identity),
    ));
    assert_tls_error(result, "not valid for name");
}

#[test]
fn plain_client_on_a_tls_server_fails_and_others_are_served() {
    let identity = Identity::new();
    let (server, _reports) = start_event_loop(&identity);
    let addr = server.local_addr();
    let result = wsline::sync::client::connect_with(&format!("ws://{addr}/"), client_config());
    assert!(result.is_err(), "a plain handshake on a TLS server");
    // Garbage instead of a ClientHello, and a client that vanishes mid-handshake.
    let mut garbage = TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(&mut garbage, &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0]).unwrap();
    drop(TcpStream::connect(addr).expect("connect"));
    support::assert_served(&wss(addr), &tls_client_config(&identity));
    drop(garbage);
}

#[test]
fn tls_client_on_a_plain_server_is_a_tls_error() {
    let server = support::start(support::echo, server_config());
    let url = wss(server.local_addr());
    let config = tls_client_config(&Identity::new());
    let result = wsline::sync::client::connect_with(&url, config.clone());
    assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
    let result = tokio_runtime().block_on(wsline::tokio::connect_with(&url, config));
    assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
    support::assert_echo(server.local_addr());
}

/// Redirects every handshake to a plain `ws://` URI.
struct RedirectToPlain;

impl Handler for RedirectToPlain {
    type State = ();

    fn on_handshake(&self, _: &wsline::proto::Request, response: &mut wsline::proto::Response) {
        *response = wsline::proto::Response::new(302);
        response.headers.insert("Location", "ws://localhost:1/");
    }

    fn on_message(&self, _: &mut Connection<'_, ()>, _: Message) -> wsline::Result<()> {
        Ok(())
    }
}

#[test]
fn a_redirect_from_wss_to_ws_is_refused() {
    let identity = Identity::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let server = serve_on(RedirectToPlain, listener, tls_server_config(&identity)).expect("serve");
    let url = wss(server.local_addr());
    assert_tls_error(
        wsline::sync::client::connect_with(&url, tls_client_config(&identity)),
        "drop TLS",
    );
    let result = tokio_runtime().block_on(wsline::tokio::connect_with(
        &url,
        tls_client_config(&identity),
    ));
    assert_tls_error(result, "drop TLS");
}

#[test]
fn wss_goes_through_a_connect_proxy_end_to_end_encrypted() {
    let identity = Identity::new();
    let (server, _reports) = start_event_loop(&identity);
    let proxy = support::proxy::ConnectProxy::start(None);
    let config = ConnectConfig {
        proxy: Some(proxy.url(None)),
        ..tls_client_config(&identity)
    };
    let url = wss(server.local_addr());
    support::assert_served(&url, &config);
    let runtime = tokio_runtime();
    runtime.block_on(bounded(async {
        let mut ws = wsline::tokio::connect_with(&url, config)
            .await
            .expect("wss:// through the proxy");
        ws.send("hidden from the proxy").await.unwrap();
        let echoed = ws.recv().await.expect("a reply").expect("no error");
        assert_eq!(echoed, Message::text("hidden from the proxy"));
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    }));
    // The proxy saw only where to, never the URL's path or the messages.
    let target = format!("localhost:{}", server.local_addr().port());
    assert_eq!(proxy.targets(), vec![target.clone(), target]);
}

/// Python's `ssl` (OpenSSL) on the other side: a stack nobody here wrote.
mod python_peer {
    use super::*;
    use support::interop::{
        assert_python_client_talks, exchange_messages, interop_client_config,
        interop_server_config, interop_server_with, python_peer,
    };
    use support::process::{venv_python, Process};

    #[test]
    fn python_client_talks_wss_to_the_sync_server() {
        let Some(python) = venv_python() else { return };
        let identity = Identity::new();
        let pem = identity.write_pem("python-client");
        let mut config = interop_server_config(true);
        config.tls = Some(identity.server());
        let (server, closes) = interop_server_with(config);
        let url = wss(server.local_addr());
        assert_python_client_talks(
            python_peer(&python)
                .args(["client", &url, "--expect-deflate", "--cafile"])
                .arg(pem.cert()),
            &closes,
        );
    }

    #[test]
    fn sync_client_talks_wss_to_a_python_server() {
        let Some(python) = venv_python() else { return };
        let identity = Identity::new();
        let pem = identity.write_pem("python-server");
        let (_server, port) = Process::start(
            python_peer(&python)
                .args(["server", "--tls-cert"])
                .arg(pem.cert())
                .arg("--tls-key")
                .arg(pem.key()),
        );
        let config = ConnectConfig {
            tls: Some(identity.client()),
            ..interop_client_config(true)
        };
        let ws = wsline::sync::client::connect_with(&format!("wss://localhost:{port}/"), config)
            .expect("wss:// to Python");
        exchange_messages(&ws);
        ws.close(CloseCode::from(4001), "client bye")
            .expect("close");
        let closed = ws.close_status().expect("closed");
        assert!(closed.clean, "{closed}");
    }
}

/// Connects and sends half a ClientHello, then nothing: the server must drop it at the
/// open timeout. Returns how long the server took to close it.
fn stall_tls_handshake(addr: SocketAddr) -> Duration {
    let started = std::time::Instant::now();
    let mut stalled = TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(&mut stalled, &[0x16, 0x03, 0x01, 0x01, 0x00]).unwrap();
    stalled.set_read_timeout(Some(DEADLINE)).unwrap();
    // EOF or a reset: either way the server let go.
    let _ = std::io::Read::read(&mut stalled, &mut [0; 64]);
    started.elapsed()
}

fn tls_config_with_open_timeout(identity: &Identity) -> ServerConfig {
    let mut config = tls_server_config(identity);
    config.protocol.open_timeout = Some(Duration::from_millis(300));
    config
}

#[test]
fn every_server_drops_a_stalled_tls_handshake_at_the_open_timeout_and_serves_others() {
    let identity = Identity::new();
    let client = tls_client_config(&identity);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let event_loop = serve_on(
        Echo(mpsc::channel().0),
        listener,
        tls_config_with_open_timeout(&identity),
    )
    .expect("serve");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let blocking = serve_blocking_on(
        |ws: &wsline::sync::WebSocket| {
            for message in ws {
                ws.send(message?)?;
            }
            Ok(())
        },
        listener,
        tls_config_with_open_timeout(&identity),
    )
    .expect("serve");
    let runtime = tokio_runtime();
    let tokio_server = runtime
        .block_on(wsline::tokio::serve_with(
            tokio_common::echo,
            "127.0.0.1:0",
            tls_config_with_open_timeout(&identity),
        ))
        .expect("serve");
    for addr in [
        event_loop.local_addr(),
        blocking.local_addr(),
        tokio_server.local_addr(),
    ] {
        let stalled = std::thread::spawn(move || stall_tls_handshake(addr));
        support::assert_served(&wss(addr), &client);
        let held = stalled.join().unwrap();
        assert!(held < Duration::from_secs(5), "{addr}: held {held:?}");
    }
    runtime.block_on(tokio_server.shutdown()).expect("shutdown");
}
