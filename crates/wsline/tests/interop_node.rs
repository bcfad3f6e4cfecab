//! The sync and tokio layers against a second peer nobody here wrote: Node's `ws` (the
//! version `scripts/interop/node/package.json` pins), both ways, with permessage-deflate on
//! and off on each side, and close codes checked in both directions.
//!
//! The peers are `scripts/interop/node/echo_server.mjs` and `client.mjs`. Needs `node` and
//! the `ws` that `scripts/test.sh` installs beside them; without them the tests print a note
//! and pass, or fail with `WSLINE_REQUIRE_INTEROP=1` (which `scripts/test.sh` sets).

mod support;

#[cfg(feature = "tokio")]
use support::tokio_common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::Receiver;

use wsline::sync::client::connect_with;
use wsline::{CloseCode, Error, Message};

use support::interop::{
    exchange_messages, interop_client_config, interop_server, received_closes, recv, CLOSE_PATH,
    SERVER_CLOSE,
};
use support::process::{self, node_interop_dir, node_ws, Process};
use support::DEADLINE;

/// (the server accepts permessage-deflate, the client offers it): every combination. ws's
/// server leaves it off by default and its client offers it, so each is set explicitly.
const DEFLATE_MATRIX: [(bool, bool); 4] =
    [(true, true), (true, false), (false, true), (false, false)];

/// The code and reason our clients close with.
const CLIENT_CLOSE: (u16, &str) = (4000, "bye");

/// The query that has the Node server close a connection at once, and what it closes with.
const NODE_CLOSES: &str = "/?close=4002&reason=node%20bye";
const NODE_CLOSE: (u16, &str) = (4002, "node bye");

fn deflate_flag(deflate: bool) -> &'static str {
    if deflate {
        "--deflate"
    } else {
        "--no-deflate"
    }
}

/// The Node `ws` echo server on a free port of 127.0.0.1, and the lines it prints.
struct NodeServer {
    _process: Process,
    lines: Receiver<String>,
    port: u16,
}

impl NodeServer {
    fn start(node: &Path, deflate: bool) -> Self {
        let mut command = Command::new(node);
        command
            .arg(node_interop_dir().join("echo_server.mjs"))
            .args(["--host", "127.0.0.1", "--port", "0", deflate_flag(deflate)]);
        let (process, lines) = Process::start_lines(&mut command);
        let mut server = Self {
            _process: process,
            lines,
            port: 0,
        };
        let banner = server.line();
        assert!(banner.contains("listening"), "{banner}");
        server.port = banner
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("a port in the banner {banner:?}"));
        server
    }

    fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// The next line the server printed.
    fn line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("a line from the Node server in time")
    }

    /// The server reports a connection to `path` opened, with permessage-deflate negotiated
    /// or not.
    fn expect_open(&self, path: &str, deflate: bool) {
        let extensions = if deflate {
            "permessage-deflate"
        } else {
            "none"
        };
        assert_eq!(self.line(), format!("open {path} {extensions}"));
    }

    /// The server reports the close frame it received.
    fn expect_close(&self, (code, reason): (u16, &str)) {
        assert_eq!(self.line(), format!("close {code} {reason}"));
    }
}

/// Runs `client.mjs` against our echo server at `addr`, which closes connections to
/// [`CLOSE_PATH`] with [`SERVER_CLOSE`]: first the echoes, closed with [`CLIENT_CLOSE`],
/// then a connection the server closes. The server should have received, in some order,
/// [`received_by_our_server`].
fn run_node_client(node: &Path, addr: SocketAddr, server_deflate: bool, client_deflate: bool) {
    let script = node_interop_dir().join("client.mjs");
    let expect_deflate = if server_deflate && client_deflate {
        "--expect-deflate"
    } else {
        "--expect-no-deflate"
    };
    let (code, reason) = CLIENT_CLOSE;
    let (server_code, server_reason) = SERVER_CLOSE;
    let runs: [(String, [&str; 3]); 2] = [
        (
            format!("ws://{addr}/"),
            ["--close", &code.to_string(), reason],
        ),
        (
            format!("ws://{addr}{CLOSE_PATH}"),
            ["--expect-close", &server_code.to_string(), server_reason],
        ),
    ];
    for (url, close) in &runs {
        let mut command = Command::new(node);
        command
            .arg(&script)
            .args([url, deflate_flag(client_deflate), expect_deflate])
            .args(close);
        let output = process::run(&mut command, "");
        assert!(
            output.status.success() && output.stdout.trim() == "OK",
            "client.mjs {url} {close:?}: server deflate {server_deflate}, client deflate \
             {client_deflate}\nstdout: {}\nstderr: {}",
            output.stdout,
            output.stderr
        );
    }
}

/// The close frames our server received from [`run_node_client`]: the client's close, and
/// ws's answer (code and reason echoed) to the server's.
fn received_by_our_server() -> Vec<(u16, String)> {
    let mut closes = vec![CLIENT_CLOSE, SERVER_CLOSE];
    closes.sort();
    closes
        .into_iter()
        .map(|(code, reason)| (code, reason.to_owned()))
        .collect()
}

/// A text large enough to compress, in fragments that our sender cuts at character
/// boundaries.
fn fragmented_text() -> Message {
    Message::text("fragmenté ✓ 🦀 ".repeat(1_000))
}

#[test]
fn sync_client_talks_to_the_node_ws_server() {
    let Some(node) = node_ws() else { return };
    for (server_deflate, client_deflate) in DEFLATE_MATRIX {
        let server = NodeServer::start(&node, server_deflate);
        let ws = connect_with(&server.url("/echo"), interop_client_config(client_deflate))
            .expect("connect");
        server.expect_open("/echo", server_deflate && client_deflate);
        exchange_messages(&ws);
        ws.send_fragmented(&fragmented_text(), 4_000)
            .expect("send fragments");
        assert_eq!(recv(&ws), fragmented_text());
        let (code, reason) = CLIENT_CLOSE;
        ws.close(CloseCode::from(code), reason).expect("close");
        let closed = ws.close_status().expect("closed");
        assert!(closed.clean, "{closed:?}");
        // ws answers with the code and reason it received.
        let answer = closed.received.expect("ws's close frame");
        assert_eq!((answer.code.as_u16(), answer.reason.as_str()), CLIENT_CLOSE);
        server.expect_close(CLIENT_CLOSE);

        // The server closes.
        let ws = connect_with(
            &server.url(NODE_CLOSES),
            interop_client_config(client_deflate),
        )
        .expect("connect");
        server.expect_open("/", server_deflate && client_deflate);
        let closed = match ws.recv_timeout(DEADLINE) {
            Err(Error::ConnectionClosed(closed)) => closed,
            other => panic!("expected ws's close, got {other:?}"),
        };
        assert_eq!((closed.code().as_u16(), closed.reason()), NODE_CLOSE);
        assert!(closed.clean, "{closed:?}");
        // We answered with its code and reason.
        server.expect_close(NODE_CLOSE);
    }
}

#[test]
fn node_ws_client_talks_to_the_sync_server() {
    let Some(node) = node_ws() else { return };
    for (server_deflate, client_deflate) in DEFLATE_MATRIX {
        let (server, closes) = interop_server(server_deflate);
        run_node_client(&node, server.local_addr(), server_deflate, client_deflate);
        assert_eq!(received_closes(&closes, 2), received_by_our_server());
    }
}

#[cfg(feature = "tokio")]
mod tokio_layer {
    use tokio::io::{AsyncRead, AsyncWrite};
    use wsline::tokio::{connect_with, WebSocket};

    use super::support::interop::{interop_messages, interop_server_config};
    use super::tokio_common::{bounded, serve_reporting};
    use super::*;

    #[tokio::test]
    async fn tokio_client_talks_to_the_node_ws_server() {
        let Some(node) = node_ws() else { return };
        bounded(async {
            for (server_deflate, client_deflate) in DEFLATE_MATRIX {
                // Starting the server and reading its lines block this thread, briefly; the
                // Node process needs nothing from this runtime meanwhile.
                let server = NodeServer::start(&node, server_deflate);
                let config = interop_client_config(client_deflate);
                let mut ws = connect_with(&server.url("/echo"), config)
                    .await
                    .expect("connect");
                server.expect_open("/echo", server_deflate && client_deflate);
                for message in interop_messages() {
                    ws.send(message.clone()).await.expect("send");
                    let echo = ws.recv().await.expect("the echo").expect("recv");
                    assert_eq!(echo, message);
                }
                assert!(ws.ping().await.expect("the pong") < DEADLINE);
                let (code, reason) = CLIENT_CLOSE;
                ws.close(CloseCode::from(code), reason)
                    .await
                    .expect("a clean close");
                let answer = ws
                    .close_status()
                    .and_then(|closed| closed.received.clone())
                    .expect("ws's close frame");
                assert_eq!((answer.code.as_u16(), answer.reason.as_str()), CLIENT_CLOSE);
                server.expect_close(CLIENT_CLOSE);

                // The server closes.
                let config = interop_client_config(client_deflate);
                let mut ws = connect_with(&server.url(NODE_CLOSES), config)
                    .await
                    .expect("connect");
                server.expect_open("/", server_deflate && client_deflate);
                let Some(Err(Error::ConnectionClosed(closed))) = ws.recv().await else {
                    panic!("expected ws's close");
                };
                assert_eq!((closed.code().as_u16(), closed.reason()), NODE_CLOSE);
                assert!(closed.clean, "{closed:?}");
                server.expect_close(NODE_CLOSE);
            }
        })
        .await;
    }

    /// Echoes, or closes [`CLOSE_PATH`] connections with [`SERVER_CLOSE`]; returns the
    /// close frame it received. Generic: the server decides the stream type.
    async fn echo_or_close<S>(mut ws: WebSocket<S>) -> Option<(u16, String)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        if ws
            .request()
            .is_some_and(|request| request.path == CLOSE_PATH)
        {
            let (code, reason) = SERVER_CLOSE;
            // The outcome shows in what was received.
            let _ = ws.close(CloseCode::from(code), reason).await;
        } else {
            while let Some(Ok(message)) = ws.recv().await {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        }
        let received = ws.close_status()?.received.as_ref()?;
        Some((received.code.as_u16(), received.reason.clone()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn node_ws_client_talks_to_the_tokio_server() {
        let Some(node) = node_ws() else { return };
        bounded(async {
            for (server_deflate, client_deflate) in DEFLATE_MATRIX {
                let config = interop_server_config(server_deflate);
                let (server, mut reports) = serve_reporting(config, echo_or_close).await;
                let addr = server.local_addr();
                let node = node.clone();
                tokio::task::spawn_blocking(move || {
                    run_node_client(&node, addr, server_deflate, client_deflate);
                })
                .await
                .expect("the Node client's checks");
                let mut received = Vec::new();
                for _ in 0..2 {
                    let report = tokio::time::timeout(DEADLINE, reports.recv())
                        .await
                        .expect("a close in time")
                        .expect("the server runs");
                    received.push(report.expect("a close frame received"));
                }
                received.sort();
                assert_eq!(received, received_by_our_server());
            }
        })
        .await;
    }
}
