//! The sync layer against a peer nobody here wrote: Python `websockets` 17, both ways, with
//! permessage-deflate on and off.
//!
//! Needs the venv that `scripts/test.sh` creates (`target/venv` with `websockets`); without
//! it the tests print a note and pass, or fail with `WSLINE_REQUIRE_INTEROP=1` (which
//! `scripts/test.sh` sets).

mod support;

use std::net::TcpListener;
use std::process::Command;

use wsline::sync::client::connect_with;
use wsline::{CloseCode, Error};

use support::interop::{
    assert_python_client_talks, exchange_messages, interop_client_config as client, interop_server,
    python_peer, recv,
};
use support::process::{repo_root, venv_python, Process};
use support::DEADLINE;

#[test]
fn sync_client_talks_to_the_python_echo_server() {
    let Some(python) = venv_python() else { return };
    let echo_server = repo_root().join("scripts/interop/echo_server.py");
    for (server_compresses, client_compresses) in [(true, true), (true, false), (false, true)] {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut command = Command::new(&python);
        command
            .arg(&echo_server)
            .args(["--port", &port.to_string()]);
        if !server_compresses {
            command.arg("--no-compression");
        }
        let (_server, banner) = Process::start(&mut command);
        assert!(banner.contains("listening"), "{banner}");
        let url = format!("ws://127.0.0.1:{port}/");
        let ws = connect_with(&url, client(client_compresses)).expect("connect");
        exchange_messages(&ws);
        ws.close(CloseCode::from(4001), "client bye")
            .expect("close");
        let closed = ws.close_status().expect("closed");
        // The server answered with the code it received.
        assert_eq!(
            closed.received.as_ref().map(|close| close.code),
            Some(CloseCode::from(4001))
        );
        assert!(closed.clean);
    }
}

#[test]
fn sync_client_negotiates_deflate_with_python_when_both_offer_it_and_sees_its_close_code() {
    let Some(python) = venv_python() else { return };
    for (server_compresses, client_compresses) in [(true, true), (true, false), (false, true)] {
        let mut command = python_peer(&python);
        command.arg("server");
        if !server_compresses {
            command.arg("--no-compression");
        }
        let (_server, port) = Process::start(&mut command);
        let url = format!("ws://127.0.0.1:{port}/");
        let ws = connect_with(&url, client(client_compresses)).expect("connect");
        ws.send_text("extensions?").unwrap();
        let negotiated = recv(&ws);
        let negotiated = negotiated.as_text().expect("text");
        assert_eq!(
            negotiated.contains("permessage-deflate"),
            server_compresses && client_compresses,
            "negotiated {negotiated:?}"
        );
        exchange_messages(&ws);
        ws.send_text("close 4002 as asked").unwrap();
        let closed = match ws.recv_timeout(DEADLINE) {
            Err(Error::ConnectionClosed(closed)) => closed,
            other => panic!("expected the server's close, got {other:?}"),
        };
        assert_eq!(
            (closed.code(), closed.reason()),
            (CloseCode::from(4002), "as asked")
        );
        assert!(closed.clean);
    }
}

#[test]
fn python_client_talks_to_the_sync_server() {
    let Some(python) = venv_python() else { return };
    for (server_compresses, client_compresses) in [(true, true), (true, false), (false, true)] {
        let (server, closes) = interop_server(server_compresses);
        let url = format!("ws://{}/", server.local_addr());
        let mut command = python_peer(&python);
        command.args(["client", &url]);
        if !client_compresses {
            command.arg("--no-compression");
        }
        if server_compresses && client_compresses {
            command.arg("--expect-deflate");
        }
        assert_python_client_talks(&mut command, &closes);
    }
}
