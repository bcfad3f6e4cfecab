//! What the interop tests against other implementations (Python `websockets`, Node `ws`)
//! share: configs with and without permessage-deflate, the messages to exchange, and a
//! sync server that echoes, closes on request and reports the close frames it received.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;

use wsline::proto::ConnectionClosed;
use wsline::sync::server::{Connection, Handler, Server};
use wsline::sync::WebSocket;
use wsline::{CloseCode, ConnectConfig, Message, ServerConfig};

use super::{client_config, server_config, start, DEADLINE};

/// The largest message either side accepts: room for the 1 MiB ones.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// The path on which [`interop_server`] (and the tokio tests' servers) close at once.
pub const CLOSE_PATH: &str = "/close";
/// The code and reason they close with there.
pub const SERVER_CLOSE: (u16, &str) = (4003, "server bye");

/// A client config (sync or tokio) that offers permessage-deflate if `compress`.
pub fn interop_client_config(compress: bool) -> ConnectConfig {
    let mut config = client_config();
    config.protocol.max_message_size = Some(MAX_MESSAGE_SIZE);
    if !compress {
        config.protocol.extensions.clear();
    }
    config
}

/// A server config (sync or tokio) that accepts permessage-deflate if `compress`.
pub fn interop_server_config(compress: bool) -> ServerConfig {
    let mut config = server_config();
    config.protocol.max_message_size = Some(MAX_MESSAGE_SIZE);
    if !compress {
        config.protocol.extensions.clear();
    }
    config
}

/// Text with non-ASCII, binary, 1 MiB of incompressible binary, a large compressible text,
/// and an empty message of each kind.
pub fn interop_messages() -> Vec<Message> {
    let big: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    vec![
        Message::text("héllo wörld"),
        Message::binary(vec![0, 1, 0xFF]),
        Message::binary(big),
        Message::text("compressible ".repeat(80_000)),
        Message::text(""),
        Message::binary(Vec::new()),
    ]
}

/// The next message, within [`DEADLINE`].
pub fn recv(ws: &WebSocket) -> Message {
    ws.recv_timeout(DEADLINE)
        .expect("recv")
        .expect("a message in time")
}

/// Sends each of [`interop_messages`] to an echo server and checks the echo, then pings.
pub fn exchange_messages(ws: &WebSocket) {
    for message in interop_messages() {
        ws.send(message.clone()).expect("send");
        assert_eq!(recv(ws), message);
    }
    let latency = ws.ping().expect("the pong");
    assert!(latency < DEADLINE);
}

/// Echoes; closes [`CLOSE_PATH`] connections with [`SERVER_CLOSE`] as soon as they open;
/// reports the close frame each connection received.
struct InteropHandler {
    closes: Mutex<Sender<(u16, String)>>,
}

impl Handler for InteropHandler {
    type State = ();

    fn on_open(&self, conn: &mut Connection<'_>) -> wsline::Result<()> {
        if conn
            .request()
            .is_some_and(|request| request.path == CLOSE_PATH)
        {
            let (code, reason) = SERVER_CLOSE;
            return conn.close(CloseCode::from(code), reason);
        }
        Ok(())
    }

    fn on_message(&self, conn: &mut Connection<'_>, message: Message) -> wsline::Result<()> {
        conn.send(message)
    }

    fn on_close(&self, _: &mut Connection<'_>, closed: &ConnectionClosed) {
        if let Some(received) = &closed.received {
            let _ = self
                .closes
                .lock()
                .unwrap()
                .send((received.code.as_u16(), received.reason.clone()));
        }
    }
}

/// Starts a sync [`InteropHandler`] server on a free port, with the receiver of the close
/// frames its connections receive.
pub fn interop_server(compress: bool) -> (Server, Receiver<(u16, String)>) {
    interop_server_with(interop_server_config(compress))
}

/// [`interop_server`] with any configuration (TLS).
pub fn interop_server_with(config: ServerConfig) -> (Server, Receiver<(u16, String)>) {
    let (tx, rx) = mpsc::channel();
    let handler = InteropHandler {
        closes: Mutex::new(tx),
    };
    (start(handler, config), rx)
}

/// A command that runs the Python peer (`tests/support/interop_peer.py`) with `python`;
/// its arguments follow.
pub fn python_peer(python: &Path) -> Command {
    let mut command = Command::new(python);
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/interop_peer.py"));
    command
}

/// Runs the Python peer's client against `url` with `args` (`--expect-deflate`, …): it must
/// exchange everything and print OK.
pub fn assert_python_client_ok(python: &Path, url: &str, args: &[&str]) {
    let mut command = python_peer(python);
    command.arg("client").arg(url).args(args);
    let output = super::process::run(&mut command, "");
    assert!(
        output.status.success() && output.stdout.trim() == "OK",
        "{command:?}\nstdout: {}\nstderr: {}",
        output.stdout,
        output.stderr
    );
}

/// Runs the Python peer's client (`command`, from [`python_peer`]) against an
/// [`interop_server`] whose close frames arrive on `closes`: it must exchange everything
/// (print OK), and the server must get its close and its answer to the server's.
pub fn assert_python_client_talks(command: &mut Command, closes: &Receiver<(u16, String)>) {
    let output = super::process::run(command, "");
    assert!(
        output.status.success() && output.stdout.trim() == "OK",
        "{command:?}\nstdout: {}\nstderr: {}",
        output.stdout,
        output.stderr
    );
    assert_eq!(
        received_closes(closes, 2),
        [
            (4001, "client bye".to_owned()),
            (4003, "server bye".to_owned())
        ]
    );
}

/// The next `count` close frames from `closes`, sorted (connections end in any order).
pub fn received_closes(closes: &Receiver<(u16, String)>, count: usize) -> Vec<(u16, String)> {
    let mut received: Vec<(u16, String)> = (0..count)
        .map(|_| closes.recv_timeout(DEADLINE).expect("a close in time"))
        .collect();
    received.sort();
    received
}
