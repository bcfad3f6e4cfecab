//! The `wsline` binary as a shell user runs it: the echo server, the scripted client, exit
//! codes and messages, and Ctrl-C.

#[path = "../../wsline/tests/support/process.rs"]
mod process;
#[path = "../../wsline/tests/support/proxy.rs"]
mod proxy;
#[path = "../../wsline/tests/support/tls.rs"]
mod tls;

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use wsline::proto::{Request, Response};
use wsline::sync::client::connect_with;
use wsline::sync::server::{serve_on, Connection, Handler};
use wsline::{CloseCode, ConnectConfig, Error, Message, ServerConfig};

use process::{Process, DEADLINE};

fn wsline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wsline"))
}

/// Starts `wsline serve` with `args` on a free port; returns it with the address it printed.
fn serve(args: &[&str]) -> (Process, SocketAddr) {
    let (process, banner) = Process::start(wsline().args(["serve", "--port", "0"]).args(args));
    let addr = banner
        .strip_prefix("Listening on ws://")
        .or_else(|| banner.strip_prefix("Listening on wss://"))
        .unwrap_or_else(|| panic!("unexpected first line {banner:?}"))
        .parse()
        .expect("an address");
    (process, addr)
}

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
