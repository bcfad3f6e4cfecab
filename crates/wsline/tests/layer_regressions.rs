//! One test per bug a code review found in the I/O layers' TLS, redirect and proxy code,
//! named after the behaviour the bug broke: credentials kept to their origin across
//! redirects, no proxy password in errors, a TLS stream's end and failures seen by the
//! event loop after the data before them, and the open timeout over a TLS handshake.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use wsline::ConnectConfig;

use support::client_config;

// ----- Redirects: credentials -----

/// Accepts connections on `listener` one after the other, answering each with the next of
/// `responses` and reporting each request head.
fn answer_in_turn(listener: TcpListener, responses: Vec<String>, heads: mpsc::Sender<String>) {
    thread::spawn(move || {
        for response in responses {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let head = support::read_http_head(&mut stream);
            let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
            let _ = stream.write_all(response.as_bytes());
        }
    });
}

const FORBIDDEN: &str = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";

fn redirect_to(location: &str) -> String {
    format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
}

fn config_with_secret_headers() -> ConnectConfig {
    let mut config = client_config();
    config.protocol.open_timeout = Some(Duration::from_secs(10));
    config.headers = vec![
        ("Authorization".into(), "Bearer secret-token".into()),
        ("Cookie".into(), "session=secret-cookie".into()),
    ];
    config
}

/// Starts a server on 127.0.0.1 that redirects to a listener on 127.0.0.2 (another host),
/// which answers 403. Returns the first server's address and the second's request heads.
fn cross_host_redirect() -> (SocketAddr, mpsc::Receiver<String>) {
    let other = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2 (Linux loopback)");
    let other_addr = other.local_addr().unwrap();
    let (other_heads, other_received) = mpsc::channel();
    answer_in_turn(other, vec![FORBIDDEN.into()], other_heads);

    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let first_addr = first.local_addr().unwrap();
    // Nobody reads the first server's request heads: reporting them fails quietly.
    answer_in_turn(
        first,
        vec![redirect_to(&format!("ws://{other_addr}/"))],
        mpsc::channel().0,
    );
    (first_addr, other_received)
}

fn assert_no_secrets(head: &str) {
    assert!(
        !head.contains("secret-token") && !head.contains("secret-cookie"),
        "credentials from ConnectConfig::headers were sent to another host after a redirect:\n{head}"
    );
}

/// The bug: `ConnectConfig::headers` (Authorization, Cookie) are replayed on every redirect,
/// whatever host it points to.
#[test]
fn sync_client_does_not_send_extra_credentials_to_another_host_after_a_redirect() {
    let (first_addr, other_received) = cross_host_redirect();
    let result = wsline::sync::client::connect_with(
        &format!("ws://{first_addr}/"),
        config_with_secret_headers(),
    );
    assert!(result.is_err(), "the second host answers 403");
    let head = other_received
        .recv_timeout(Duration::from_secs(10))
        .expect("the redirect was followed");
    assert_no_secrets(&head);
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn tokio_client_does_not_send_extra_credentials_to_another_host_after_a_redirect() {
    let (first_addr, other_received) = cross_host_redirect();
    let result =
        wsline::tokio::connect_with(&format!("ws://{first_addr}/"), config_with_secret_headers())
            .await;
    assert!(result.is_err(), "the second host answers 403");
    let head = other_received
        .recv_timeout(Duration::from_secs(10))
        .expect("the redirect was followed");
    assert_no_secrets(&head);
}

/// The bug: `WsUri::join` drops the user info even for a relative (same-origin) `Location`,
/// so `ws://user:pass@host/old` -> `302 Location: /new` asks for `/new` without the
/// `Authorization` the first request carried (Python websockets and browsers keep it).
#[test]
fn sync_client_keeps_uri_credentials_on_a_same_origin_redirect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, received) = mpsc::channel();
    answer_in_turn(listener, vec![redirect_to("/new"), FORBIDDEN.into()], heads);
    let mut config = client_config();
    config.protocol.open_timeout = Some(Duration::from_secs(10));
    let result = wsline::sync::client::connect_with(&format!("ws://user:pass@{addr}/old"), config);
    assert!(result.is_err());
    let first = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(first.contains("Authorization: Basic"), "{first}");
    let second = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the redirect was followed");
    assert!(second.starts_with("GET /new "), "{second}");
    assert!(
        second.contains("Authorization: Basic"),
        "the same-origin redirect lost the URI's credentials:\n{second}"
    );
}

// ----- Proxy -----

/// The bug: an invalid proxy URL is echoed whole in the error, password included
///, and errors end up in logs and on stderr
/// (`wsline connect --proxy`).
#[test]
fn proxy_errors_do_not_echo_the_proxy_password() {
    let mut config = client_config();
    config.proxy = Some("http://user:hunter2@proxy.invalid:99999".into());
    let error = wsline::sync::client::connect_with("ws://127.0.0.1:9/", config)
        .expect_err("an invalid proxy port");
    assert!(
        !error.to_string().contains("hunter2"),
        "the proxy password is in the error: {error}"
    );
}

// ----- TLS -----

#[cfg(feature = "rustls")]
mod tls {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use rustls::pki_types::ServerName;
    use wsline::proto::ConnectionClosed;
    use wsline::sync::server::{serve_blocking_on, serve_on, Connection, Handler, Server};
    use wsline::tls::rustls;
    use wsline::{Message, ServerConfig};

    use crate::support::tls::Identity;
    use crate::support::{frame, request_with, server_config, TEXT};

    fn tls_server_config(identity: &Identity) -> ServerConfig {
        let mut config = server_config();
        config.tls = Some(identity.server());
        config
    }

    /// The bug: serve_blocking with TLS runs the TLS handshake inside `open_blocking`'s
    /// `stream.flush()` before any read
    /// timeout is set on the accepted socket, so `open_timeout` does not bound it: a client
    /// that connects and sends nothing holds a thread and a `max_connections` slot forever.
    #[test]
    fn blocking_tls_server_drops_a_client_that_never_starts_tls_within_the_open_timeout() {
        let identity = Identity::new();
        let mut config = tls_server_config(&identity);
        config.protocol.open_timeout = Some(Duration::from_millis(300));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = serve_blocking_on(|_ws: &wsline::sync::WebSocket| Ok(()), listener, config)
            .expect("serve");

        let mut silent = TcpStream::connect(server.local_addr()).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let started = Instant::now();
        let mut buf = [0; 64];
        let outcome = silent.read(&mut buf);
        let timed_out = matches!(&outcome, Err(error)
            if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
        assert!(
            !timed_out,
            "the server still held the silent TLS client after {:?} (open timeout 300 ms)",
            started.elapsed()
        );
        drop(server);
    }

    /// An event-loop echo server that reports messages and closes.
    struct Reporting {
        messages: mpsc::Sender<Message>,
        closes: mpsc::Sender<ConnectionClosed>,
    }

    impl Handler for Reporting {
        type State = ();

        fn on_message(
            &self,
            conn: &mut Connection<'_, ()>,
            message: Message,
        ) -> wsline::Result<()> {
            let _ = self.messages.send(message.clone());
            conn.send(message)
        }

        fn on_close(&self, _: &mut Connection<'_, ()>, closed: &ConnectionClosed) {
            let _ = self.closes.send(closed.clone());
        }
    }

    fn start_event_loop(
        identity: &Identity,
    ) -> (
        Server,
        mpsc::Receiver<Message>,
        mpsc::Receiver<ConnectionClosed>,
    ) {
        let (messages, message_reports) = mpsc::channel();
        let (closes, close_reports) = mpsc::channel();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = serve_on(
            Reporting { messages, closes },
            listener,
            tls_server_config(identity),
        )
        .expect("serve");
        (server, message_reports, close_reports)
    }

    /// A TLS client driven by hand, so that the test decides which records go into one
    /// TCP write.
    struct RawTlsClient {
        conn: rustls::ClientConnection,
        sock: TcpStream,
    }

    impl RawTlsClient {
        /// TLS handshake, then the WebSocket opening handshake.
        fn open(addr: SocketAddr, identity: &Identity) -> Self {
            let mut sock = TcpStream::connect(addr).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut conn = rustls::ClientConnection::new(identity.client(), name).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut sock).expect("TLS handshake");
            }
            conn.writer()
                .write_all(request_with("").as_bytes())
                .unwrap();
            while conn.wants_write() {
                conn.write_tls(&mut sock).unwrap();
            }
            let mut head = Vec::new();
            let mut buf = [0; 1024];
            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                match conn.reader().read(&mut buf) {
                    Ok(0) => panic!("the server closed during the handshake"),
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        conn.read_tls(&mut sock).expect("read TLS");
                        conn.process_new_packets().expect("valid TLS");
                    }
                    Err(error) => panic!("{error}"),
                }
            }
            assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
            Self { conn, sock }
        }

        /// The TLS records for `plaintext`, as bytes for the socket.
        fn records(&mut self, plaintext: &[u8]) -> Vec<u8> {
            self.conn.writer().write_all(plaintext).unwrap();
            self.pending_records()
        }

        fn pending_records(&mut self) -> Vec<u8> {
            let mut out = Vec::new();
            while self.conn.wants_write() {
                self.conn.write_tls(&mut out).unwrap();
            }
            out
        }
    }

    /// The bug: when a message and the peer's `close_notify` are decrypted by one
    /// `tls::read` call, the read returns the message short and
    /// keeps the end of the stream for "next time round"; the event loop takes the short
    /// read as "socket drained" and, with no more bytes coming, never
    /// reads again. The connection is never closed (a plain-TCP client that sends data and
    /// FIN is closed at once with 1006).
    #[test]
    fn event_loop_tls_server_sees_close_notify_that_arrives_with_a_message() {
        let identity = Identity::new();
        let (server, messages, closes) = start_event_loop(&identity);
        let mut client = RawTlsClient::open(server.local_addr(), &identity);
        let mut bytes = client.records(&frame(TEXT, true, b"last words"));
        client.conn.send_close_notify();
        bytes.extend(client.pending_records());
        // One write: the message and close_notify reach the server together; TCP stays open
        // (as after Go's tls.Conn.CloseWrite or Python's SSLSocket.unwrap).
        client.sock.write_all(&bytes).unwrap();

        let message = messages
            .recv_timeout(Duration::from_secs(5))
            .expect("the message");
        assert_eq!(message.as_text(), Some("last words"));
        let closed = closes.recv_timeout(Duration::from_secs(5));
        assert!(
            closed.is_ok(),
            "the server never noticed the client's close_notify: the connection hangs"
        );
        drop(client);
        drop(server);
    }

    /// The bug: `tls::read` returns the TLS error at once
    /// although records before the bad one were decrypted: the caller fails the connection
    /// and the plaintext left inside rustls (here a whole message) is never delivered. Over
    /// plain TCP the message would be handled before the garbage.
    #[test]
    fn event_loop_tls_server_delivers_the_message_decrypted_before_a_bad_record() {
        let identity = Identity::new();
        let (server, messages, _closes) = start_event_loop(&identity);
        let mut client = RawTlsClient::open(server.local_addr(), &identity);
        let mut bytes = client.records(&frame(TEXT, true, b"before the garbage"));
        // Not a TLS record (content type 0xff).
        bytes.extend_from_slice(&[0xff, 0x03, 0x03, 0x00, 0x01, 0x00]);
        client.sock.write_all(&bytes).unwrap();

        let message = messages.recv_timeout(Duration::from_secs(5));
        assert!(
            message.is_ok(),
            "a message that was received and authenticated was dropped by the TLS error after it"
        );
        drop(client);
        drop(server);
    }
}
