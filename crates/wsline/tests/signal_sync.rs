//! `sync::server::Server::shutdown_on_signal`: SIGTERM to the process (how systemd, Docker
//! and Kubernetes stop a service) shuts the server down gracefully. A test binary of its
//! own: the signal goes to the whole process.

mod support;

use std::process::Command;

use support::{client_config, echo, server_config, start, url, DEADLINE};
use wsline::sync::client::connect_with;
use wsline::{CloseCode, Error, Message};

#[test]
fn sigterm_after_shutdown_on_signal_closes_every_connection_with_1001() {
    let server = start(echo, server_config());
    let addr = server.local_addr();
    // The handlers are in place when this returns.
    server.shutdown_on_signal().expect("install the handlers");
    let serving = std::thread::spawn(move || server.serve_forever());
    let ws = connect_with(&url(addr), client_config()).expect("connect");
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
        .expect("serve_forever returns Ok");
}
