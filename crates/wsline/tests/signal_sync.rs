//! `sync::server::Server::serve_until_signal`: SIGTERM to the process (how systemd, Docker
//! and Kubernetes stop a service) shuts the server down gracefully. A test binary of its
//! own: the signal goes to the whole process.

mod support;

use std::process::Command;

use support::{client_config, echo, server_config, start, url, DEADLINE};
use wsline::sync::client::connect_with;
use wsline::{CloseCode, Error, Message};

#[test]
fn sigterm_closes_every_connection_with_1001_and_serve_until_signal_returns() {
    let server = start(echo, server_config());
    let addr = server.local_addr();
    let serving = std::thread::spawn(move || server.serve_until_signal());
    let ws = connect_with(&url(addr), client_config()).expect("connect");
    // An echo proves the handler is installed: it is set before serving starts.
    ws.send_text("before SIGTERM").unwrap();
    assert_eq!(
        ws.recv_timeout(DEADLINE).unwrap(),
        Some(Message::text("before SIGTERM"))
    );
    let status = Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    match ws.recv_timeout(DEADLINE) {
        Err(Error::ConnectionClosed(closed)) => assert_eq!(closed.code(), CloseCode::GOING_AWAY),
        other => panic!("expected a 1001, got {other:?}"),
    }
    serving
        .join()
        .expect("the server thread")
        .expect("serve_until_signal returns Ok");
}
