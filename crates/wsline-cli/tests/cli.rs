//! The `wsline` binary as a shell user runs it: the echo server, the scripted client, exit
//! codes and messages, and Ctrl-C.

mod common;
#[path = "../../wsline/tests/support/proxy.rs"]
mod proxy;
#[path = "../../wsline/tests/support/tls.rs"]
mod tls;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use wsline::proto::{Request, Response};
use wsline::sync::client::connect_with;
use wsline::sync::server::{serve_on, Connection, Handler};
use wsline::{CloseCode, ConnectConfig, Error, Message, ServerConfig};

use common::process::{self, DEADLINE};
use common::{serve, wsline};

/// Runs `wsline connect URL` with `input` on stdin, bounded by [`DEADLINE`].
fn connect(url: &str, extra: &[&str], input: &str) -> process::Finished {
    process::run(wsline().arg("connect").arg(url).args(extra), input)
}

#[test]
fn serve_echoes_what_connect_sends_and_connect_exits_0() {
    let (_server, addr) = serve(&[]);
    let outcome = connect(&format!("ws://{addr}/"), &[], "a\nb\nhéllo wörld\n");
    assert_eq!(outcome.status.code(), Some(0), "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stdout, "a\nb\nhéllo wörld\n");
}

#[test]
fn serve_without_compression_still_echoes() {
    let (_server, addr) = serve(&["--no-compression"]);
    let outcome = connect(&format!("ws://{addr}/"), &["--no-compression"], "plain\n");
    assert_eq!(outcome.status.code(), Some(0), "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stdout, "plain\n");
}

#[test]
fn serve_closes_a_message_over_max_message_size_with_1009_and_connect_exits_4() {
    let (_server, addr) = serve(&["--max-message-size", "16"]);
    let outcome = connect(
        &format!("ws://{addr}/"),
        &[],
        "short\nthis line is longer than sixteen bytes\n",
    );
    assert_eq!(outcome.status.code(), Some(4), "stderr: {}", outcome.stderr);
    assert!(outcome.stdout.starts_with("short\n"), "{}", outcome.stdout);
    assert!(outcome.stderr.contains("1009"), "{}", outcome.stderr);
}

#[test]
fn connect_to_a_closed_port_exits_1_with_connection_refused() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let outcome = connect(&format!("ws://127.0.0.1:{port}/"), &[], "");
    assert_eq!(outcome.status.code(), Some(1));
    assert!(
        outcome.stderr.contains("connection refused"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn connect_to_an_invalid_url_exits_with_an_error() {
    let outcome = connect("http://127.0.0.1:1/", &[], "");
    assert_ne!(outcome.status.code(), Some(0));
    assert!(outcome.stderr.starts_with("wsline: "), "{}", outcome.stderr);
}

/// Refuses every handshake with 403.
struct Refuse;

impl Handler for Refuse {
    type State = ();

    fn on_handshake(&self, _: &Request, response: &mut Response) {
        *response = Response::text(403, "members only");
    }

    fn on_message(&self, conn: &mut Connection<'_>, message: Message) -> wsline::Result<()> {
        conn.send(message)
    }
}

#[test]
fn connect_rejected_by_the_server_exits_3_with_the_status_and_body() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = serve_on(Refuse, listener, ServerConfig::default()).unwrap();
    let outcome = connect(&format!("ws://{}/", server.local_addr()), &[], "hi\n");
    assert_eq!(outcome.status.code(), Some(3));
    assert!(outcome.stderr.contains("HTTP 403"), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("members only"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn sigint_stops_the_server_cleanly_closing_clients_with_1001() {
    let (mut server, addr) = serve(&[]);
    let mut config = ConnectConfig::default();
    config.protocol.open_timeout = Some(DEADLINE);
    config.protocol.close_timeout = Some(DEADLINE);
    let ws = connect_with(&format!("ws://{addr}/"), config).expect("connect");
    ws.send_text("before Ctrl-C").unwrap();
    let echo = ws.recv_timeout(DEADLINE).unwrap().expect("echo in time");
    assert_eq!(echo, Message::text("before Ctrl-C"));

    let interrupted = Instant::now();
    server.interrupt();
    match ws.recv_timeout(DEADLINE) {
        Err(Error::ConnectionClosed(closed)) => assert_eq!(closed.code(), CloseCode::GOING_AWAY),
        other => panic!("expected the server to close with 1001, got {other:?}"),
    }
    // The shutdown timeout is 5 s; the client answered at once, so the server needs less.
    let status = server
        .wait_for(Duration::from_secs(5) + DEADLINE)
        .expect("the server exits");
    assert!(status.success(), "{status}");
    assert!(interrupted.elapsed() < Duration::from_secs(5) + DEADLINE);
}

/// `wsline serve` printed its banner before installing its Ctrl-C handler: a script that
/// sent SIGINT as soon as it read the banner sometimes killed the server outright (about one
/// run in twenty) instead of stopping it cleanly.
#[test]
fn sigint_right_after_the_banner_killed_the_server_before_its_handler_was_set() {
    let (mut server, _addr) = serve(&[]);
    server.interrupt();
    let status = server.wait_for(DEADLINE).expect("the server exits");
    assert!(status.success(), "{status}");
}

/// How one client of [`every_client_gets_1001`] ended: the close code the server sent, or
/// what went wrong instead (a reset, a timeout).
type Ending = Result<CloseCode, String>;

/// A client that echoes without pause, from the moment every client is connected, until the
/// server ends the connection.
fn echo_until_closed(addr: SocketAddr, start: &std::sync::Barrier) -> Ending {
    let mut config = ConnectConfig::default();
    config.protocol.open_timeout = Some(DEADLINE);
    config.protocol.close_timeout = Some(DEADLINE);
    let ws = connect_with(&format!("ws://{addr}/"), config).map_err(|e| e.to_string())?;
    start.wait();
    let ended = |error: Error| match error {
        Error::ConnectionClosed(closed) => Ok(closed.code()),
        // A send that found the connection closing: its close frame is still to be read.
        Error::Send(_) => match ws.recv_timeout(DEADLINE) {
            Err(Error::ConnectionClosed(closed)) => Ok(closed.code()),
            other => Err(format!("after a refused send: {other:?}")),
        },
        other => Err(other.to_string()),
    };
    loop {
        if let Err(error) = ws.send_text("under load") {
            return ended(error);
        }
        match ws.recv_timeout(DEADLINE) {
            Ok(Some(_)) => {}
            Ok(None) => return Err("no echo in time".into()),
            Err(error) => return ended(error),
        }
    }
}

/// Starts `wsline serve` with `args`, has `clients` clients echo at full speed, sends the
/// server `signal`, and checks that every client got a 1001 close frame (no reset, no
/// dropped connection) and the server exited 0.
fn every_client_gets_1001(args: &[&str], signal: &str, clients: usize) {
    // One at a time: each client holds three descriptors and two threads here.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (mut server, addr) = serve(args);
    let start = std::sync::Arc::new(std::sync::Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let start = std::sync::Arc::clone(&start);
            std::thread::spawn(move || echo_until_closed(addr, &start))
        })
        .collect();
    start.wait();
    // Every client is in full flow: requests in flight, echoes queued.
    std::thread::sleep(Duration::from_millis(300));
    server.signal(signal);
    let endings: Vec<Ending> = threads
        .into_iter()
        .map(|thread| thread.join().expect("client thread"))
        .collect();
    let status = server
        .wait_for(Duration::from_secs(5) + DEADLINE)
        .expect("the server exits");
    let wrong: Vec<_> = endings
        .iter()
        .filter(|ending| **ending != Ok(CloseCode::GOING_AWAY))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {clients} clients did not get a 1001 on SIG{signal} to serve {args:?}: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(status.success(), "{status}");
}

#[test]
fn sigint_under_load_closes_every_client_with_1001_sync() {
    every_client_gets_1001(&[], "INT", 200);
}

#[test]
fn sigterm_under_load_closes_every_client_with_1001_sync() {
    every_client_gets_1001(&[], "TERM", 200);
}

/// The tokio server dropped 105 to 151 of 200 busy clients without a close frame on SIGINT:
/// the echo handler's `send` failed once the 1001 was queued, and the task dropped the
/// socket before the close frame was written.
#[test]
fn sigint_under_load_closes_every_client_with_1001_tokio() {
    every_client_gets_1001(&["--tokio"], "INT", 200);
}

/// SIGTERM, how systemd, Docker and Kubernetes stop a service, killed both servers at once.
#[test]
fn sigterm_under_load_closes_every_client_with_1001_tokio() {
    every_client_gets_1001(&["--tokio"], "TERM", 200);
}

/// `--ping-timeout` did not exist: a dead peer was closed only after the ping interval plus
/// a fixed 20 s. With `--ping-interval 1 --ping-timeout 1`, a client that completes the
/// handshake and then never answers is pinged once and closed with 1011 after about 2 s.
#[test]
fn ping_timeout_closes_a_silent_peer_within_interval_plus_timeout() {
    use std::io::Read;
    let (_server, addr) = serve(&["--ping-interval", "1", "--ping-timeout", "1"]);
    let mut stream = common::open_raw(addr);
    let opened = Instant::now();
    // Everything the server sends until it closes the connection; this peer never writes.
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .expect("read until the server closes");
    let closed_after = opened.elapsed();
    let mut frames = &received[..];
    let mut opcodes = Vec::new();
    let mut close_code = None;
    while let [first, len, rest @ ..] = frames {
        let len = usize::from(*len & 0x7f);
        assert!(len < 126 && rest.len() >= len, "a short control frame");
        let opcode = first & 0x0f;
        if opcode == 0x8 && len >= 2 {
            close_code = Some(u16::from_be_bytes([rest[0], rest[1]]));
        }
        opcodes.push(opcode);
        frames = &rest[len..];
    }
    assert_eq!(opcodes, [0x9, 0x8], "one ping, then the close frame");
    assert_eq!(close_code, Some(1011));
    // The default timeout would have taken 1 s + 20 s; the margin is for a loaded machine.
    assert!(
        closed_after < Duration::from_secs(12),
        "closed after {closed_after:?}"
    );
}

/// PEM files of a new self-signed certificate for `localhost`, and their paths as
/// arguments.
fn pem_files(name: &str) -> (tls::PemFiles, String, String) {
    let pem = tls::Identity::new().write_pem(&format!("cli-{name}"));
    let (cert, key) = (
        pem.cert().display().to_string(),
        pem.key().display().to_string(),
    );
    (pem, cert, key)
}

#[test]
fn serve_with_tls_echoes_what_connect_sends_over_wss() {
    let (_pem, cert, key) = pem_files("echo");
    for layer in [&[][..], &["--tokio"][..]] {
        let (_server, addr) = serve(&[&["--tls-cert", &cert, "--tls-key", &key], layer].concat());
        let url = format!("wss://localhost:{}/", addr.port());
        let outcome = connect(&url, &["--cacert", &cert], "secure\nhéllo\n");
        assert_eq!(
            outcome.status.code(),
            Some(0),
            "{layer:?}: {}",
            outcome.stderr
        );
        assert_eq!(outcome.stdout, "secure\nhéllo\n");
    }
}

#[test]
fn connect_to_an_untrusted_wss_server_exits_1_with_the_certificate_error() {
    let (_pem, cert, key) = pem_files("untrusted");
    let (_server, addr) = serve(&["--tls-cert", &cert, "--tls-key", &key]);
    let outcome = connect(&format!("wss://localhost:{}/", addr.port()), &[], "hi\n");
    assert_eq!(outcome.status.code(), Some(1), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("certificate"), "{}", outcome.stderr);
}

#[test]
fn serve_with_an_unreadable_key_exits_1_naming_the_file() {
    let (pem, cert, _) = pem_files("missing-key");
    let missing = pem.dir().join("nothing.pem").display().to_string();
    let outcome = process::run(
        wsline().args([
            "serve",
            "--port",
            "0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &missing,
        ]),
        "",
    );
    assert_eq!(outcome.status.code(), Some(1), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("nothing.pem"), "{}", outcome.stderr);
}

#[test]
fn connect_through_a_proxy_echoes_and_a_refusing_proxy_exits_1() {
    let (_server, addr) = serve(&[]);
    let proxy = proxy::ConnectProxy::start(Some("dXNlcjpwdw==")); // user:pw
    let url = format!("ws://{addr}/");
    let outcome = connect(
        &url,
        &["--proxy", &proxy.url(Some("user:pw"))],
        "tunneled\n",
    );
    assert_eq!(outcome.status.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(outcome.stdout, "tunneled\n");
    let outcome = connect(&url, &["--proxy", &proxy.url(None)], "refused\n");
    assert_eq!(outcome.status.code(), Some(1), "{}", outcome.stderr);
    assert!(outcome.stderr.contains("407"), "{}", outcome.stderr);
}

/// A plain HTTP request to `addr`; returns the whole response (the server closes after it).
fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8(response).unwrap()
}

/// A browser that opens `http://127.0.0.1:8001/` gets the echo test page, set to talk to
/// this server; other paths 404; a WebSocket handshake on any path is still served.
fn serves_the_echo_page(args: &[&str]) {
    let (_server, addr) = serve(args);
    let page = http_get(addr, "/");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.contains("Content-Type: text/html; charset=utf-8"),
        "{page}"
    );
    assert!(page.contains(r#"<form id="connect">"#), "{page}");
    let missing = http_get(addr, "/favicon.ico");
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
    let ws = connect_with(&format!("ws://{addr}/any/path"), ConnectConfig::default()).unwrap();
    ws.send_text("still echoed").unwrap();
    assert_eq!(ws.recv().unwrap(), Message::text("still echoed"));
}

#[test]
fn a_plain_get_gets_the_echo_page_from_the_sync_server() {
    serves_the_echo_page(&[]);
}

#[test]
fn a_plain_get_gets_the_echo_page_from_the_tokio_server() {
    serves_the_echo_page(&["--tokio"]);
}

/// `wsline serve --rooms`: what a client sends reaches every other client in its room (the
/// path), compressed or not, and nobody in another room, nor the sender itself.
fn serves_rooms(args: &[&str]) {
    let (_server, addr) = serve(&[&["--rooms"], args].concat());
    let mut config = ConnectConfig::default();
    config.protocol.open_timeout = Some(DEADLINE);
    config.protocol.ping_interval = None;
    let join = |room: &str| {
        connect_with(&format!("ws://{addr}{room}?user=x"), config.clone()).expect("join the room")
    };
    let lobby: Vec<_> = (0..3).map(|_| join("/lobby")).collect();
    let other = join("/other");
    // The tokio server subscribes a connection in its handler, which starts once the 101
    // is out: give the handlers a moment before the first message.
    let hello = |from: usize| format!("hello from {from}");
    std::thread::sleep(Duration::from_millis(500));
    lobby[0].send_text(&hello(0)).expect("send");
    for member in &lobby[1..] {
        assert_eq!(
            member.recv_timeout(DEADLINE).expect("recv"),
            Some(Message::text(hello(0)))
        );
    }
    let big = "x".repeat(100_000);
    lobby[1].send_text(&big).expect("send");
    for member in [&lobby[0], &lobby[2]] {
        assert_eq!(
            member.recv_timeout(DEADLINE).expect("recv"),
            Some(Message::text(big.clone()))
        );
    }
    other.send_text("elsewhere").expect("send");
    // Nothing of the lobby reached the other room, nor went back to its sender.
    lobby[2].send_text("last").expect("send");
    assert_eq!(
        lobby[0].recv_timeout(DEADLINE).expect("recv"),
        Some(Message::text("last"))
    );
    assert_eq!(
        lobby[1].recv_timeout(DEADLINE).expect("recv"),
        Some(Message::text("last"))
    );
    assert_eq!(
        other
            .recv_timeout(Duration::from_millis(300))
            .expect("recv"),
        None,
        "the other room heard nothing"
    );
}

#[test]
fn serve_rooms_delivers_to_everyone_else_in_the_room_sync() {
    serves_rooms(&[]);
}

#[test]
fn serve_rooms_delivers_to_everyone_else_in_the_room_tokio() {
    serves_rooms(&["--tokio"]);
}

#[test]
fn serve_rooms_without_compression_delivers_too() {
    serves_rooms(&["--no-compression", "--tokio"]);
}
