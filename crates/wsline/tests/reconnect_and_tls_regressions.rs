//! One test per bug a second code review found, named after the behaviour the bug broke:
//! reconnecting clients that gave up on temporary failures, skipped their backoff when
//! cancelled, retried a proxy's 407 forever, logged the URI's password or panicked on an
//! uncapped backoff; TLS handshakes a trickling peer could stretch past the open timeout;
//! a split flush that returned before a pong; a tab in a reason phrase taken for garbage.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wsline::proto::{Event, Failure, HandshakeError};
use wsline::{Backoff, ConnectConfig, WsUri};

use support::client_config;

/// A backoff short enough for tests.
fn quick_backoff() -> Backoff {
    Backoff {
        min: Duration::from_millis(20),
        max: Duration::from_millis(20),
        factor: 1.0,
    }
}

fn quick_config() -> ConnectConfig {
    let mut config = client_config();
    config.protocol.open_timeout = Some(Duration::from_secs(5));
    config.backoff = quick_backoff();
    config
}

/// Accepts connections forever, counting them; each one is handed to `serve`.
fn counting_listener(serve: fn(TcpStream, usize)) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            serve(stream, n);
        }
    });
    (addr, count)
}

fn wait_for(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    done()
}

// ----- Reconnecting: a server that closes during the handshake is transient -----

/// Reads the request, then closes cleanly (FIN, no response): what a server that is
/// restarting, or at its connection limit, does.
fn close_after_request(mut stream: TcpStream, _: usize) {
    support::read_http_head(&mut stream);
    drop(stream);
}

/// The bug: `is_transient` classified `Error::Handshake(InvalidHttp("connection closed
/// during the handshake"))` as permanent, so the reconnecting
/// iterator gives up for good the first time a restarting server closes an accepted
/// connection, although the next attempt would succeed.
#[test]
fn sync_reconnecting_retries_when_the_server_closes_during_the_handshake() {
    assert_sync_client_retries(
        close_after_request,
        |addr| format!("ws://{addr}/"),
        "one closed connection",
    );
}

/// Runs a sync reconnecting client against a server that handles each connection with
/// `serve`, at the URL `url` makes of its address; it must try a second time.
fn assert_sync_client_retries(
    serve: fn(TcpStream, usize),
    url: fn(std::net::SocketAddr) -> String,
    after: &str,
) {
    let (addr, attempts) = counting_listener(serve);
    let uri = url(addr);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut connections = wsline::sync::client::reconnecting(&uri, quick_config());
        let outcome = connections.next().map(|result| result.map(drop));
        let _ = done_tx.send(format!("{outcome:?}"));
    });
    let retried = wait_for(Duration::from_secs(3), || {
        attempts.load(Ordering::SeqCst) >= 2
    });
    let gave_up = done_rx.try_recv().ok();
    assert!(retried, "reconnecting gave up after {after}: {gave_up:?}");
}

/// The same over TLS: a TCP end during the TLS handshake was taken for an untrusted
/// certificate, and the reconnecting client stopped.
#[cfg(feature = "rustls")]
#[test]
fn sync_reconnecting_retries_when_the_server_closes_during_the_tls_handshake() {
    fn close_after_client_hello(mut stream: TcpStream, _: usize) {
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        thread::sleep(Duration::from_millis(50));
        let mut buf = [0; 16 << 10];
        let _ = stream.read(&mut buf);
        drop(stream);
    }
    assert_sync_client_retries(
        close_after_client_hello,
        |addr| format!("wss://localhost:{}/", addr.port()),
        "one connection closed during TLS",
    );
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn tokio_reconnecting_retries_when_the_server_closes_during_the_handshake() {
    let (addr, attempts) = counting_listener(close_after_request);
    let uri = format!("ws://{addr}/");
    let task = tokio::spawn(async move {
        let mut connections = wsline::tokio::reconnecting(&uri, quick_config());
        connections.next().await.map(|result| result.map(drop))
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    while attempts.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let retried = attempts.load(Ordering::SeqCst) >= 2;
    let outcome = if task.is_finished() {
        Some(format!("{:?}", task.await.unwrap()))
    } else {
        task.abort();
        None
    };
    assert!(
        retried,
        "reconnecting gave up after one closed connection: {outcome:?}"
    );
}

// ----- Reconnecting: a proxy that refuses credentials is not transient -----

/// The bug: `is_transient` retried every `Error::Proxy`, including a proxy's `407 Proxy
/// Authentication Required` (wrong or missing credentials): a 4xx refusal that "would
/// repeat", which the doc says ends the connections. The client retries forever instead.
#[test]
fn sync_reconnecting_stops_when_the_proxy_refuses_the_credentials() {
    fn refuse(mut stream: TcpStream, _: usize) {
        support::read_http_head(&mut stream);
        let _ = stream.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\
              Proxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\n\r\n",
        );
    }
    let (proxy, attempts) = counting_listener(refuse);
    let mut config = quick_config();
    config.proxy = Some(format!("http://user:wrong@{proxy}"));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut connections = wsline::sync::client::reconnecting("ws://example.invalid/", config);
        let outcome = connections.next().map(|result| result.map(drop));
        let _ = done_tx.send(format!("{outcome:?}"));
    });
    let outcome = done_rx.recv_timeout(Duration::from_secs(2));
    assert!(
        outcome.is_ok(),
        "still retrying a 407 after {} attempts",
        attempts.load(Ordering::SeqCst)
    );
}

// ----- Reconnecting (tokio): cancelling `next` skips the backoff -----

/// The bug: tokio `Reconnect::next` claimed `next` is cancel-safe, but the backoff sleep is
/// a local of the cancelled future: `retry.delay()` has advanced, and the next call connects
/// at once. In a `select!` loop with any other branch that fires more often than the backoff
/// (a tick, a shutdown check), a failing server is hit at the tick's rate.
#[cfg(feature = "tokio")]
#[tokio::test]
async fn tokio_reconnecting_keeps_its_backoff_when_next_is_cancelled() {
    fn unavailable(mut stream: TcpStream, _: usize) {
        support::read_http_head(&mut stream);
        let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    }
    let (addr, attempts) = counting_listener(unavailable);
    let mut config = quick_config();
    config.backoff = Backoff {
        min: Duration::from_millis(500),
        max: Duration::from_millis(500),
        factor: 1.0,
    };
    let mut connections = wsline::tokio::reconnecting(&format!("ws://{addr}/"), config);
    let end = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < end {
        tokio::select! {
            outcome = connections.next() => panic!("unexpected outcome: {:?}", outcome.map(|r| r.map(drop))),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    let attempts = attempts.load(Ordering::SeqCst);
    // Waits of 250..=500 ms: at most 5 attempts in a second.
    assert!(
        attempts <= 5,
        "{attempts} attempts in 1 s with a 500 ms backoff"
    );
}

// ----- Reconnecting: a backoff without a cap panics -----

/// The bug: `Retry::delay` multiplied the previous wait by the factor before capping
/// it: with `max: Duration::MAX` (no cap), `Duration::mul_f64` overflows after ~64 failures
/// at factor 2 and panics inside `next()`.
#[cfg(feature = "tokio")]
#[tokio::test(start_paused = true)]
async fn tokio_reconnecting_does_not_panic_with_an_uncapped_backoff() {
    let refused = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = refused.local_addr().unwrap();
    drop(refused);
    let mut config = quick_config();
    config.backoff = Backoff {
        min: Duration::from_secs(1),
        max: Duration::MAX,
        factor: 2.0,
    };
    let task = tokio::spawn(async move {
        let mut connections = wsline::tokio::reconnecting(&format!("ws://{addr}/"), config);
        connections.next().await.map(|result| result.map(drop))
    });
    // Paused time: each sleep jumps ahead (tokio caps a sleep at ~30 years).
    for _ in 0..300 {
        if task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(20 * 365 * 86_400)).await;
    }
    if task.is_finished() {
        let outcome = task.await;
        assert!(
            !matches!(&outcome, Err(error) if error.is_panic()),
            "next() panicked: {outcome:?}"
        );
    } else {
        task.abort();
    }
}

// ----- Reconnecting: the password of the URI in the logs -----

/// The bug: both reconnecting clients logged the URI string as given, user
/// info included, at info level on every retry (`WsUri`'s `Display` leaves it out, the raw
/// `String` does not): the password ends up in the logs, which 394d62d set out to prevent
/// for the proxy's.
#[test]
fn reconnecting_does_not_log_the_uri_password() {
    struct Capture(Arc<Mutex<String>>);
    struct Fields<'a>(&'a mut String);
    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={:?} ", field.name(), value));
        }
    }
    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut line = String::new();
            event.record(&mut Fields(&mut line));
            let mut logs = self.0.lock().unwrap();
            logs.push_str(&line);
            logs.push('\n');
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    // First attempt 503 (retried, logged), second 403 (the end).
    fn unavailable_then_forbidden(mut stream: TcpStream, n: usize) {
        support::read_http_head(&mut stream);
        let status = if n == 1 {
            "503 Service Unavailable"
        } else {
            "403 Forbidden"
        };
        let _ =
            stream.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
    }
    let (addr, _) = counting_listener(unavailable_then_forbidden);
    let logs = Arc::new(Mutex::new(String::new()));
    tracing::subscriber::with_default(Capture(Arc::clone(&logs)), || {
        let uri = format!("ws://alice:hunter2@{addr}/");
        let mut connections = wsline::sync::client::reconnecting(&uri, quick_config());
        let outcome = connections.next().map(|result| result.map(drop));
        assert!(matches!(outcome, Some(Err(_))), "{outcome:?}");
    });
    let logs = logs.lock().unwrap();
    assert!(
        !logs.contains("hunter2"),
        "the URI's password was logged:\n{logs}"
    );
}

// ----- HeadScanner: HTAB is valid in a reason phrase -----

/// The bug: `HeadScanner` rejected any byte below 0x20 but CR in the
/// first line, HTAB included; RFC 9112 §4 allows HTAB in a status line's reason phrase
/// (`reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )`), and httparse accepts it. The
/// client now reports a valid 503 as invalid HTTP (which the reconnecting clients then do
/// not retry).
#[test]
fn client_accepts_a_tab_in_the_reason_phrase() {
    let uri: WsUri = "ws://example.com/".parse().unwrap();
    let mut conn =
        wsline::proto::Connection::client(uri, wsline::Config::default(), Instant::now());
    let request = conn.connect_request().unwrap();
    conn.send_request(request).unwrap();
    // RFC 9112 §4: HTAB is allowed in reason-phrase.
    conn.handle_data(b"HTTP/1.1 503 Service\tUnavailable\r\nContent-Length: 0\r\n\r\n");
    conn.handle_eof();
    let mut failure = None;
    while let Some(event) = conn.poll_event() {
        if let Event::Closed(closed) = event {
            failure = closed.failure;
        }
    }
    let failure = failure.or_else(|| conn.close_status().failure.clone());
    assert!(
        matches!(&failure, Some(Failure::Handshake(HandshakeError::Rejected(response))) if response.status == 503),
        "{failure:?}"
    );
}

// ----- Sync TLS handshake and WebSocket handshake: the open timeout -----

#[cfg(feature = "rustls")]
mod tls {
    use super::*;
    use std::io::ErrorKind;

    use rustls::pki_types::ServerName;
    use wsline::sync::server::serve_blocking_on;
    use wsline::tls::rustls;

    use crate::support::server_config;
    use crate::support::tls::Identity;

    const OPEN_TIMEOUT: Duration = Duration::from_millis(500);

    fn start(identity: &Identity) -> wsline::sync::server::Server {
        let mut config = server_config();
        config.tls = Some(identity.server());
        config.protocol.open_timeout = Some(OPEN_TIMEOUT);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        serve_blocking_on(|_ws: &wsline::sync::WebSocket| Ok(()), listener, config).expect("serve")
    }

    /// Whether the server has closed `stream` (drains what it sent).
    fn closed_by_peer(stream: &mut TcpStream) -> bool {
        stream.set_nonblocking(true).unwrap();
        let mut buf = [0; 4096];
        let closed = loop {
            match stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(error) if error.kind() == ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        stream.set_nonblocking(false).unwrap();
        closed
    }

    /// Sends `bytes` one at a time, every 100 ms (well within each socket read timeout),
    /// for up to 4 open timeouts; returns how long the server kept the connection.
    fn trickle(stream: &mut TcpStream, bytes: &[u8]) -> Option<Duration> {
        let started = Instant::now();
        for byte in bytes {
            if closed_by_peer(stream) || stream.write_all(&[*byte]).is_err() {
                return Some(started.elapsed());
            }
            if started.elapsed() > OPEN_TIMEOUT * 4 {
                return None;
            }
            thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The bug: the blocking TLS handshake set the socket timeouts once per
    /// `complete_io`, but rustls' `complete_io` loops until the handshake is done, reading
    /// again after every partial record with the same timeout. A client that sends its
    /// ClientHello a byte at a time, each within the timeout, holds the connection's thread
    /// and `max_connections` slot far past `open_timeout` (a 64 KiB hello at 1 byte/9 s is
    /// a week).
    #[test]
    fn blocking_tls_server_drops_a_client_that_trickles_its_client_hello() {
        let identity = Identity::new();
        let server = start(&identity);
        let mut stream = TcpStream::connect(server.local_addr()).unwrap();
        // A handshake record header announcing 512 bytes, then the bytes, slowly.
        stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
        let kept = trickle(&mut stream, &[0; 512]);
        assert!(
            kept.is_some(),
            "the server still holds a trickling TLS client after {:?} (open timeout {OPEN_TIMEOUT:?})",
            OPEN_TIMEOUT * 4
        );
    }

    /// Control (passes): without TLS, the same trickle is timed out, since each read of
    /// `open_blocking` gets what is left of the deadline.
    #[test]
    fn control_blocking_plain_server_drops_a_client_that_trickles_its_request() {
        let mut config = server_config();
        config.protocol.open_timeout = Some(OPEN_TIMEOUT);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = serve_blocking_on(|_ws: &wsline::sync::WebSocket| Ok(()), listener, config)
            .expect("serve");
        let mut stream = TcpStream::connect(server.local_addr()).unwrap();
        let kept = trickle(
            &mut stream,
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n",
        );
        assert!(kept.is_some(), "a plain trickling client is timed out");
    }

    /// The bug: the same for the WebSocket handshake over TLS. `open_blocking`
    /// sets the read timeout, then calls `StreamOwned::read`, whose
    /// `prepare_read` loops on `complete_io` while no whole record has arrived: a peer that
    /// sends its encrypted request a byte at a time is never timed out. Plain TCP is fine
    /// (each read gets what is left of the deadline); a `wss://` sync client facing such a
    /// server is held the same way.
    #[test]
    fn blocking_tls_server_drops_a_client_that_trickles_its_request_records() {
        let identity = Identity::new();
        let server = start(&identity);
        let mut stream = TcpStream::connect(server.local_addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = rustls::ClientConnection::new(identity.client(), name).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut stream).expect("TLS handshake");
        }
        tls.writer()
            .write_all(
                b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\n\r\n",
            )
            .unwrap();
        let mut records = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut records).unwrap();
        }
        let kept = trickle(&mut stream, &records);
        assert!(
            kept.is_some(),
            "the server still holds a client that trickles its TLS records after {:?} (open timeout {OPEN_TIMEOUT:?})",
            OPEN_TIMEOUT * 4
        );
    }
}

// ----- tokio split: flush after pong -----

/// The bug: split `Sender::pong` handed a pong over with `len` 0, so `Sender::flush`
/// is ready before the driver has even taken
/// the command: "waits until everything handed over so far is written" does not hold for
/// the pong that 394d62d added (nor for an empty message).
#[cfg(feature = "tokio")]
#[tokio::test]
async fn tokio_split_flush_waits_for_a_pong() {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

    /// Records what is written through it.
    struct Recording {
        inner: DuplexStream,
        written: Arc<Mutex<Vec<u8>>>,
    }
    impl AsyncRead for Recording {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }
    impl AsyncWrite for Recording {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = &poll {
                let n = *n;
                self.written.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            poll
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let written = Arc::new(Mutex::new(Vec::new()));
    let client_io = Recording {
        inner: client_io,
        written: Arc::clone(&written),
    };
    let server = tokio::spawn(async move {
        let mut ws = wsline::tokio::accept(server_io).await.expect("accept");
        while let Some(Ok(_)) = ws.recv().await {}
    });
    let ws = wsline::tokio::connect_on(client_io, "ws://localhost/", client_config())
        .await
        .expect("connect");
    let (_read, write) = ws.split();
    tokio::task::yield_now().await;
    // Control: a non-empty message is waited for, and the recording sees it.
    written.lock().unwrap().clear();
    write
        .send(wsline::Message::binary(b"x".to_vec()))
        .await
        .expect("send");
    write.flush().await.expect("flush");
    let first = written.lock().unwrap().first().copied();
    // FIN + binary, RSV1 set if permessage-deflate was negotiated.
    assert_eq!(
        first.map(|byte| byte & 0x8F),
        Some(0x82),
        "control: binary written"
    );
    written.lock().unwrap().clear();
    write.pong(b"hb").await.expect("pong");
    write.flush().await.expect("flush");
    let out = written.lock().unwrap().clone();
    // A masked pong: 0x8A, 0x80 | 2, mask, payload.
    assert!(
        out.first() == Some(&0x8A),
        "flush returned before the pong was written (written: {out:02x?})"
    );
    server.abort();
}
