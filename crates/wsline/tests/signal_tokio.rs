//! `tokio::Server::serve_until_signal`: SIGTERM to the process (how systemd, Docker and
//! Kubernetes stop a service) shuts the server down gracefully. A test binary of its own:
//! the signal goes to the whole process.

mod support;

use std::process::Command;

use support::tokio_common::{bounded, echo};
use support::DEADLINE;
use wsline::tokio::serve_with;
use wsline::{CloseCode, Error, Message, ServerConfig};

#[tokio::test]
async fn sigterm_closes_every_connection_with_1001_and_serve_until_signal_returns() {
    let server = serve_with(echo, "127.0.0.1:0", ServerConfig::default())
        .await
        .expect("serve");
    let url = format!("ws://{}/", server.local_addr());
    let serving = tokio::spawn(async move { server.serve_until_signal().await });
    let mut ws = wsline::tokio::connect(&url).await.expect("connect");
    ws.send("before SIGTERM").await.unwrap();
    let echoed = bounded(ws.recv()).await.expect("an echo").unwrap();
    assert_eq!(echoed, Message::text("before SIGTERM"));
    // The serving task installed its handlers when it first ran: at the connect's first
    // wait, long before the echo.
    let status = Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    match tokio::time::timeout(DEADLINE, ws.recv())
        .await
        .expect("in time")
    {
        Some(Err(Error::ConnectionClosed(closed))) => {
            assert_eq!(closed.code(), CloseCode::GOING_AWAY);
        }
        None => assert_eq!(
            ws.close_status().map(|closed| closed.code()),
            Some(CloseCode::GOING_AWAY)
        ),
        other => panic!("expected a 1001, got {other:?}"),
    }
    bounded(serving)
        .await
        .expect("the serving task")
        .expect("serve_until_signal returns Ok");
}
