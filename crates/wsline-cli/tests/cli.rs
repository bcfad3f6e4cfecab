//! The `wsline` binary as a shell user runs it: the echo server, the scripted client, exit
//! codes and messages, and Ctrl-C.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wsline::proto::{Request, Response};
use wsline::sync::client::connect_with;
use wsline::sync::server::{serve_on, Connection, Handler};
use wsline::{CloseCode, ConnectConfig, Error, Message, ServerConfig};

/// How long any wait may take before it counts as a hang (the machine may be loaded).
const DEADLINE: Duration = Duration::from_secs(30);

fn wsline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wsline"))
}

/// A child process, killed (by its PID) if the test ends before it does.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        // It may have exited already.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// Waits for the process to exit, at most `timeout`.
    fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `wsline serve` with `args` on a free port; returns it with the address it printed.
fn serve(args: &[&str]) -> (Process, SocketAddr) {
    let mut child = wsline()
        .args(["serve", "--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wsline serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let process = Process(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(DEADLINE).expect("wsline serve starts");
    let addr = line
        .trim()
        .strip_prefix("Listening on ws://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("an address");
    (process, addr)
}

/// What `wsline connect` did.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `wsline connect URL` with `input` on stdin, bounded by [`DEADLINE`].
fn connect(url: &str, extra: &[&str], input: &str) -> Outcome {
    let mut child = wsline()
        .arg("connect")
        .arg(url)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wsline connect");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let mut process = Process(child);
    // The client may exit before reading its input (a refused connection).
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let readers = [
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        }),
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        }),
    ];
    let status = process
        .wait_for(DEADLINE)
        .expect("wsline connect exits in time");
    let [stdout, stderr] = readers.map(|reader| reader.join().expect("reader"));
    Outcome {
        code: status.code(),
        stdout,
        stderr,
    }
}

#[test]
fn serve_echoes_what_connect_sends_and_connect_exits_0() {
    let (_server, addr) = serve(&[]);
    let outcome = connect(&format!("ws://{addr}/"), &[], "a\nb\nhéllo wörld\n");
    assert_eq!(outcome.code, Some(0), "stderr: {}", outcome.stderr);
    assert_eq!(outcome.stdout, "a\nb\nhéllo wörld\n");
}

#[test]
fn serve_without_compression_still_echoes() {
    let (_server, addr) = serve(&["--no-compression"]);
    let outcome = connect(&format!("ws://{addr}/"), &["--no-compression"], "plain\n");
    assert_eq!(outcome.code, Some(0), "stderr: {}", outcome.stderr);
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
    assert_eq!(outcome.code, Some(4), "stderr: {}", outcome.stderr);
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
    assert_eq!(outcome.code, Some(1));
    assert!(
        outcome.stderr.contains("connection refused"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn connect_to_an_invalid_url_exits_with_an_error() {
    let outcome = connect("http://127.0.0.1:1/", &[], "");
    assert_ne!(outcome.code, Some(0));
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
    assert_eq!(outcome.code, Some(3));
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
    let status = Command::new("kill")
        .args(["-INT", &server.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
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
    let status = Command::new("kill")
        .args(["-INT", &server.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let status = server.wait_for(DEADLINE).expect("the server exits");
    assert!(status.success(), "{status}");
}
