//! The sync layer over real sockets on 127.0.0.1: the event-loop server (`serve`), the
//! thread-per-connection server (`serve_blocking`) and the blocking client, talking to each
//! other and to a raw TCP peer.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering, Ordering::SeqCst};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wsline::proto::{
    ConnectionClosed, Failure, Fragment, HandshakeError, Initiator, PreparedMessage,
};
use wsline::proto::{Request, Response};
use wsline::sync::client::{connect, connect_on, connect_with};
use wsline::sync::server::{
    broadcast, serve, serve_blocking_on, Connection, ConnectionHandle, Handler,
};
use wsline::sync::WebSocket;
use wsline::{BackpressurePolicy, CloseCode, Error, Message, ServerConfig};

use support::{
    assert_echo, client_config, echo, frame, parse_frame, server_config, start, url, wait_until,
    RawClient, BINARY, CLOSE, DEADLINE, PING, PONG, TEXT,
};

/// The next value from `rx`, panicking after [`DEADLINE`].
fn next<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(DEADLINE)
        .expect("event within the deadline")
}

fn recv(ws: &WebSocket) -> Message {
    ws.recv_timeout(DEADLINE)
        .expect("recv")
        .expect("message within the deadline")
}

/// The close status a client saw, once the server closed the connection.
fn closed_by_server(ws: &WebSocket) -> ConnectionClosed {
    match ws.recv_timeout(DEADLINE) {
        Err(Error::ConnectionClosed(closed)) => closed,
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
}

// ----- Echo -----

#[test]
fn echo_server_returns_text_binary_large_and_empty_messages_unchanged() {
    let server = serve(echo, "127.0.0.1", 0).expect("serve on a free port");
    assert_ne!(server.local_addr().port(), 0);
    let ws = connect(&url(server.local_addr())).expect("connect");
    let large: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let large_text = "é".repeat((1 << 20) / 2);
    let messages = [
        Message::text("Hello!"),
        Message::binary(vec![0, 1, 2, 0xFF]),
        Message::text(""),
        Message::binary(Vec::new()),
        Message::binary(large),
        Message::text(large_text),
    ];
    for message in &messages {
        ws.send(message.clone()).expect("send");
        assert_eq!(&recv(&ws), message);
    }
    ws.close(CloseCode::NORMAL, "").expect("close");
}

#[test]
fn echo_works_with_and_without_compression() {
    let mut plain = server_config();
    plain.protocol.extensions.clear();
    for config in [server_config(), plain] {
        let server = start(echo, config);
        for compress in [true, false] {
            let mut client = client_config();
            if !compress {
                client.protocol.extensions.clear();
            }
            let ws = connect_with(&url(server.local_addr()), client).expect("connect");
            let text = "compressible ".repeat(1000);
            ws.send_text(&text).expect("send");
            assert_eq!(recv(&ws), Message::text(text));
            ws.close(CloseCode::NORMAL, "").expect("close");
        }
    }
}

// ----- Handler hooks and per-connection state -----

/// A handler that names each connection on open, counts its messages in its own state, and
/// reports opens and closes.
struct Named {
    next_name: AtomicUsize,
    events: Mutex<Sender<String>>,
}

#[derive(Default)]
struct NamedState {
    name: String,
    messages: usize,
}

impl Handler for Named {
    type State = NamedState;

    fn on_open(&self, conn: &mut Connection<'_, NamedState>) -> wsline::Result<()> {
        let name = format!("user{}", self.next_name.fetch_add(1, Ordering::Relaxed));
        let path = conn.request().map(|request| request.path.clone());
        self.report(format!("open {name} {}", path.unwrap_or_default()));
        conn.state().name = name;
        Ok(())
    }

    fn on_message(
        &self,
        conn: &mut Connection<'_, NamedState>,
        message: Message,
    ) -> wsline::Result<()> {
        let state = conn.state();
        state.messages += 1;
        let reply = format!("{} #{}: {}", state.name, state.messages, message);
        conn.send_text(&reply)
    }

    fn on_close(&self, conn: &mut Connection<'_, NamedState>, closed: &ConnectionClosed) {
        let name = conn.state().name.clone();
        self.report(format!(
            "close {name} {} {} clean={}",
            closed.code(),
            closed.reason(),
            closed.clean
        ));
    }
}

impl Named {
    fn start() -> (wsline::sync::server::Server, Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let handler = Named {
            next_name: AtomicUsize::new(1),
            events: Mutex::new(tx),
        };
        (start(handler, server_config()), rx)
    }

    fn report(&self, event: String) {
        // The test may have finished listening.
        let _ = self.events.lock().expect("lock").send(event);
    }
}

#[test]
fn handler_hooks_see_open_messages_in_per_connection_state_and_close_code_and_reason() {
    let (server, events) = Named::start();
    let addr = server.local_addr();
    let first = connect_with(&format!("ws://{addr}/chat?room=1"), client_config()).unwrap();
    assert_eq!(next(&events), "open user1 /chat?room=1");
    let second = connect_with(&url(addr), client_config()).unwrap();
    assert_eq!(next(&events), "open user2 /");

    first.send_text("a").unwrap();
    assert_eq!(recv(&first), Message::text("user1 #1: a"));
    second.send_text("b").unwrap();
    assert_eq!(recv(&second), Message::text("user2 #1: b"));
    first.send_text("c").unwrap();
    assert_eq!(recv(&first), Message::text("user1 #2: c"));

    first.close(CloseCode::from(4000), "done here").unwrap();
    assert_eq!(next(&events), "close user1 4000 done here clean=true");
    drop(second);
    // Dropping a client closes it cleanly with 1000.
    assert_eq!(next(&events), "close user2 1000  clean=true");
}

/// The event loop removed a connection whose peer closed the TCP connection without
/// dispatching the `Closed` event first, so `on_close` never ran for clients that completed
/// the closing handshake (or vanished): a chat room kept their handles forever.
#[test]
fn on_close_was_skipped_when_the_peer_closed_the_tcp_connection() {
    let (server, events) = Named::start();
    let addr = server.local_addr();
    let ws = connect_with(&url(addr), client_config()).unwrap();
    assert_eq!(next(&events), "open user1 /");
    ws.close(CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(next(&events), "close user1 1000 bye clean=true");
    // A peer that vanishes without a close frame is reported too, with 1006.
    let raw = RawClient::open(addr);
    assert_eq!(next(&events), "open user2 /");
    drop(raw);
    assert_eq!(next(&events), "close user2 1006  clean=false");
}

#[test]
fn handler_error_closes_the_connection_with_1011_without_details() {
    let failing = |conn: &mut Connection, message: Message| -> wsline::Result<()> {
        if message.as_text() == Some("fail") {
            return Err(Error::Io(std::io::Error::other("secret detail")));
        }
        conn.send(message)
    };
    let server = start(failing, server_config());
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    ws.send_text("fine").unwrap();
    assert_eq!(recv(&ws), Message::text("fine"));
    ws.send_text("fail").unwrap();
    let closed = closed_by_server(&ws);
    assert_eq!(closed.code(), CloseCode::INTERNAL_ERROR);
    assert_eq!(closed.reason(), "");
    assert_echo(server.local_addr());
}

// ----- Handles and broadcast -----

/// Keeps a handle to every open connection and tells the test about each one.
struct Room {
    members: Members,
    joined: Mutex<Sender<ConnectionHandle>>,
}

/// The room's open connections, as the test sees them.
#[derive(Clone, Default)]
struct Members(Arc<Mutex<Vec<ConnectionHandle>>>);

impl Members {
    fn handles(&self) -> Vec<ConnectionHandle> {
        self.0.lock().unwrap().clone()
    }
}

impl Room {
    fn start(
        config: ServerConfig,
    ) -> (
        Members,
        wsline::sync::server::Server,
        Receiver<ConnectionHandle>,
    ) {
        let (tx, rx) = mpsc::channel();
        let members = Members::default();
        let room = Room {
            members: members.clone(),
            joined: Mutex::new(tx),
        };
        (members, start(room, config), rx)
    }
}

impl Handler for Room {
    type State = ();

    fn on_open(&self, conn: &mut Connection<'_>) -> wsline::Result<()> {
        self.members.0.lock().unwrap().push(conn.handle());
        let _ = self.joined.lock().unwrap().send(conn.handle());
        Ok(())
    }

    fn on_message(&self, conn: &mut Connection<'_>, message: Message) -> wsline::Result<()> {
        if message.as_text() == Some("prepared") {
            // One encoding, sent on this connection from inside a callback.
            return conn.send_prepared(&PreparedMessage::new(Message::text("encoded once")));
        }
        conn.send(message)
    }

    fn on_close(&self, conn: &mut Connection<'_>, _closed: &ConnectionClosed) {
        let id = conn.id();
        self.members
            .0
            .lock()
            .unwrap()
            .retain(|handle| handle.id() != id);
    }
}

#[test]
fn connection_handle_sends_and_closes_from_another_thread() {
    let (_room, server, joined) = Room::start(server_config());
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    let handle = next(&joined);
    let sender = std::thread::spawn(move || {
        for i in 0..10 {
            handle.send(format!("push {i}"));
        }
        handle.send(Message::binary(vec![7; 100_000]));
        handle.close(CloseCode::from(4100), "pushed enough");
    });
    for i in 0..10 {
        assert_eq!(recv(&ws), Message::text(format!("push {i}")));
    }
    assert_eq!(recv(&ws), Message::binary(vec![7; 100_000]));
    let closed = closed_by_server(&ws);
    assert_eq!(closed.code(), CloseCode::from(4100));
    assert_eq!(closed.reason(), "pushed enough");
    assert_eq!(closed.initiator, Some(Initiator::Remote));
    assert!(closed.clean);
    sender.join().unwrap();
}

#[test]
fn broadcast_reaches_every_connection_exactly_once() {
    let (room, server, joined) = Room::start(server_config());
    let clients: Vec<WebSocket> = (0..25)
        .map(|_| connect_with(&url(server.local_addr()), client_config()).unwrap())
        .collect();
    for _ in &clients {
        next(&joined);
    }
    let members = room.handles();
    assert_eq!(members.len(), clients.len());
    broadcast(&members, "news for everyone");
    broadcast(&members, Message::binary(vec![1; 70_000]));
    for ws in &clients {
        assert_eq!(recv(ws), Message::text("news for everyone"));
        assert_eq!(recv(ws), Message::binary(vec![1; 70_000]));
        // Each connection got each broadcast once: the next message is the echo of this.
        ws.send_text("end").unwrap();
        assert_eq!(recv(ws), Message::text("end"));
    }
}

#[test]
fn prepared_message_goes_out_as_its_one_encoded_frame() {
    let mut config = server_config();
    config.protocol.extensions.clear();
    let (room, server, joined) = Room::start(config);
    let mut raw: Vec<RawClient> = (0..3)
        .map(|_| RawClient::open(server.local_addr()))
        .collect();
    for _ in &raw {
        next(&joined);
    }
    let prepared = PreparedMessage::new(Message::binary(vec![9; 200_000]));
    for handle in room.handles() {
        handle.send_prepared(&prepared);
    }
    let expected = support::parse_frame(prepared.frame())
        .expect("a whole frame")
        .0;
    for client in &mut raw {
        assert_eq!(client.read_frame(), Some(expected.clone()));
        // From a callback too.
        client.send(&frame(TEXT, true, b"prepared"));
        let frame = client.read_frame().unwrap();
        assert_eq!(
            (frame.opcode, &frame.payload[..]),
            (TEXT, &b"encoded once"[..])
        );
    }
}

// ----- Scale -----

#[test]
fn many_concurrent_clients_each_get_their_own_echoes() {
    const THREADS: usize = 8;
    const CLIENTS_PER_THREAD: usize = 25;
    const MESSAGES: usize = 50;
    let server = start(echo, server_config());
    let addr = server.local_addr();
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            std::thread::spawn(move || {
                let clients: Vec<WebSocket> = (0..CLIENTS_PER_THREAD)
                    .map(|_| connect_with(&url(addr), client_config()).expect("connect"))
                    .collect();
                // Pipelined: every client has all its messages in flight at once.
                for (i, ws) in clients.iter().enumerate() {
                    for m in 0..MESSAGES {
                        ws.send_text(&format!("t{thread} c{i} m{m}")).unwrap();
                    }
                }
                for (i, ws) in clients.iter().enumerate() {
                    for m in 0..MESSAGES {
                        let expected = format!("t{thread} c{i} m{m}");
                        assert_eq!(recv(ws), Message::text(expected));
                    }
                }
                for ws in &clients {
                    ws.close(CloseCode::NORMAL, "").unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client thread");
    }
    wait_until("every connection is gone", || {
        server.connection_count() == 0
    });
}

#[test]
fn max_connections_keeps_further_clients_waiting_until_one_closes() {
    let config = ServerConfig {
        max_connections: 2,
        ..server_config()
    };
    let server = start(echo, config);
    let addr = server.local_addr();
    let first = connect_with(&url(addr), client_config()).unwrap();
    let second = connect_with(&url(addr), client_config()).unwrap();
    let (tx, opened) = mpsc::channel();
    let third = std::thread::spawn(move || {
        let ws = connect_with(&url(addr), client_config()).expect("third client connects");
        tx.send(()).unwrap();
        ws.send_text("third").unwrap();
        assert_eq!(recv(&ws), Message::text("third"));
    });
    // The third client waits in the backlog while two connections are open.
    assert!(opened.recv_timeout(Duration::from_millis(500)).is_err());
    assert_eq!(server.connection_count(), 2);
    first.send_text("first").unwrap();
    assert_eq!(recv(&first), Message::text("first"));
    drop(first);
    next(&opened);
    third.join().unwrap();
    second.send_text("second").unwrap();
    assert_eq!(recv(&second), Message::text("second"));
}

// ----- Shutdown -----

fn shutdown_config() -> ServerConfig {
    ServerConfig {
        shutdown_timeout: Duration::from_secs(5),
        ..server_config()
    }
}

#[test]
fn shutdown_from_another_thread_closes_every_client_with_1001_and_returns() {
    let server = start(echo, shutdown_config());
    let addr = server.local_addr();
    let clients: Vec<WebSocket> = (0..5)
        .map(|_| connect_with(&url(addr), client_config()).unwrap())
        .collect();
    for ws in &clients {
        ws.send_text("hi").unwrap();
        assert_eq!(recv(ws), Message::text("hi"));
    }
    let handle = server.handle();
    let (tx, returned) = mpsc::channel();
    let serving = std::thread::spawn(move || {
        let result = server.serve_forever();
        tx.send(Instant::now()).unwrap();
        result
    });
    let asked = Instant::now();
    std::thread::spawn(move || handle.shutdown());
    for ws in &clients {
        let closed = closed_by_server(ws);
        assert_eq!(closed.code(), CloseCode::GOING_AWAY);
        assert_eq!(closed.initiator, Some(Initiator::Remote));
    }
    let returned_at = next(&returned);
    // Within the shutdown timeout (5 s), with room for a loaded machine.
    assert!(returned_at - asked < Duration::from_secs(5) + Duration::from_secs(10));
    serving.join().unwrap().expect("serve_forever returns Ok");
    let refused = connect_with(&url(addr), client_config());
    assert!(matches!(refused, Err(Error::Io(_))), "{refused:?}");
}

#[test]
fn shutdown_gives_up_on_a_peer_that_never_answers_within_the_shutdown_timeout() {
    let config = ServerConfig {
        shutdown_timeout: Duration::from_millis(500),
        ..server_config()
    };
    let server = start(echo, config);
    // Never reads, never answers the close frame.
    let _silent = RawClient::open(server.local_addr());
    wait_until("the connection is open", || server.connection_count() == 1);
    let started = Instant::now();
    server.shutdown();
    server.serve_forever().unwrap();
    assert!(started.elapsed() < DEADLINE);
}

#[test]
fn dropping_the_server_closes_every_client_with_1001() {
    let server = start(echo, shutdown_config());
    let clients: Vec<WebSocket> = (0..3)
        .map(|_| connect_with(&url(server.local_addr()), client_config()).unwrap())
        .collect();
    let dropper = std::thread::spawn(move || drop(server));
    for ws in &clients {
        assert_eq!(closed_by_server(ws).code(), CloseCode::GOING_AWAY);
    }
    dropper.join().unwrap();
}

#[test]
fn serve_on_uses_a_listener_bound_by_the_caller() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = wsline::sync::server::serve_on(echo, listener, server_config()).unwrap();
    assert_eq!(server.local_addr(), addr);
    assert_echo(addr);
}

// ----- Thread-per-connection server -----

#[test]
fn serve_blocking_handler_loops_over_messages_until_the_client_closes() {
    let (tx, ended) = mpsc::channel();
    let tx = Mutex::new(tx);
    let handler = move |ws: &WebSocket| -> wsline::Result<()> {
        let mut count = 0;
        for message in ws {
            ws.send(message?)?;
            count += 1;
        }
        let _ = tx.lock().unwrap().send(count);
        Ok(())
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = serve_blocking_on(handler, listener, server_config()).unwrap();
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    for i in 0..20 {
        ws.send_text(&format!("blocking {i}")).unwrap();
        assert_eq!(recv(&ws), Message::text(format!("blocking {i}")));
    }
    ws.send_binary(&vec![3; 1 << 20]).unwrap();
    assert_eq!(recv(&ws), Message::binary(vec![3; 1 << 20]));
    ws.close(CloseCode::NORMAL, "").unwrap();
    assert_eq!(next(&ended), 21);
}

#[test]
fn serve_blocking_shutdown_closes_clients_with_1001() {
    let handler = |ws: &WebSocket| -> wsline::Result<()> {
        for message in ws {
            ws.send(message?)?;
        }
        Ok(())
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = serve_blocking_on(handler, listener, shutdown_config()).unwrap();
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    ws.send_text("x").unwrap();
    assert_eq!(recv(&ws), Message::text("x"));
    let handle = server.handle();
    let serving = std::thread::spawn(move || server.serve_forever());
    handle.shutdown();
    assert_eq!(closed_by_server(&ws).code(), CloseCode::GOING_AWAY);
    serving.join().unwrap().unwrap();
}

#[test]
fn pongs_and_close_replies_go_out_while_the_handler_is_busy() {
    let (release_tx, release) = mpsc::channel::<()>();
    let release = Mutex::new(release);
    let handler = move |ws: &WebSocket| -> wsline::Result<()> {
        // Busy elsewhere: never reads until the test says so.
        let _ = release.lock().unwrap().recv_timeout(DEADLINE);
        for message in ws {
            ws.send(message?)?;
        }
        Ok(())
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = serve_blocking_on(handler, listener, server_config()).unwrap();
    let mut client = RawClient::open(server.local_addr());
    client.send(&frame(PING, true, b"are you there"));
    let pong = client.read_frame().unwrap();
    assert_eq!(
        (pong.opcode, &pong.payload[..]),
        (PONG, &b"are you there"[..])
    );
    client.send(&support::close_frame(1000, "bye"));
    let reply = client.read_close().expect("close reply");
    assert_eq!(reply.close_code(), Some(1000));
    client.expect_eof();
    release_tx.send(()).unwrap();
}

#[test]
fn event_loop_answers_pings_and_closes_without_calling_the_handler() {
    let (tx, calls) = mpsc::channel();
    let tx = Mutex::new(tx);
    let handler = move |_: &mut Connection, message: Message| -> wsline::Result<()> {
        let _ = tx.lock().unwrap().send(message);
        Ok(())
    };
    let server = start(handler, server_config());
    let mut client = RawClient::open(server.local_addr());
    client.send(&frame(PING, true, b"1"));
    client.send(&frame(PING, true, b"2"));
    assert_eq!(client.read_frame().unwrap().payload, b"1");
    assert_eq!(client.read_frame().unwrap().payload, b"2");
    client.send(&support::close_frame(4444, "done"));
    let reply = client.read_close().unwrap();
    assert_eq!(reply.close_code(), Some(4444));
    client.expect_eof();
    assert!(calls.try_recv().is_err(), "the handler saw no message");
}

// ----- Backpressure -----

/// Sends 64 KiB messages from inside one callback to a client that does not read, until a
/// send fails; reports how far the unwritten bytes went.
struct Flood {
    report: Mutex<Sender<FloodReport>>,
}

#[derive(Debug)]
struct FloodReport {
    sent: usize,
    max_pending: usize,
    error: Option<Error>,
}

const FLOOD_MESSAGE: usize = 64 << 10;
const HIGH_WATER: usize = 256 << 10;

impl Handler for Flood {
    type State = ();

    fn on_message(&self, conn: &mut Connection<'_>, message: Message) -> wsline::Result<()> {
        if message.as_text() != Some("flood") {
            return conn.send(message);
        }
        let mut report = FloodReport {
            sent: 0,
            max_pending: 0,
            error: None,
        };
        for i in 0..1000 {
            match conn.send(Message::binary(vec![i as u8; FLOOD_MESSAGE])) {
                Ok(()) => {
                    report.sent += 1;
                    report.max_pending = report.max_pending.max(conn.pending_send());
                }
                Err(error) => {
                    report.error = Some(error);
                    break;
                }
            }
        }
        let _ = self.report.lock().unwrap().send(report);
        Ok(())
    }
}

/// The most a turn of the flood server may queue before its sends count against the peer:
/// the mark, what the turn received (the request) and the largest message allowed.
fn turn_limit() -> usize {
    let largest = wsline::Config::default()
        .max_message_size
        .unwrap_or(HIGH_WATER)
        .max(HIGH_WATER);
    HIGH_WATER + b"flood".len() + largest
}

/// A client that reads nothing asks the flood server for its flood; returns what the handler
/// reported.
fn flood_a_slow_reader(
    policy: BackpressurePolicy,
) -> (wsline::sync::server::Server, RawClient, FloodReport) {
    let (tx, reports) = mpsc::channel();
    let mut config = server_config();
    config.protocol.extensions.clear();
    config.io.send_high_water = HIGH_WATER;
    config.backpressure = policy;
    let server = start(
        Flood {
            report: Mutex::new(tx),
        },
        config,
    );
    let mut slow = RawClient::open(server.local_addr());
    slow.send(&frame(TEXT, true, b"flood"));
    let report = next(&reports);
    // Nothing queued past the most one turn may queue (the mark, what the turn received and
    // the largest message allowed) and one message with its frame header: not the flood.
    assert!(
        report.max_pending <= turn_limit() + FLOOD_MESSAGE + 14,
        "{report:?}"
    );
    (server, slow, report)
}

/// Reads the flood's data frames; returns how many came.
fn read_flood(client: &mut RawClient) -> (usize, support::RawFrame) {
    let mut count = 0;
    loop {
        let frame = client.read_frame().expect("a frame");
        if frame.opcode != BINARY {
            return (count, frame);
        }
        assert_eq!(frame.payload, vec![count as u8; FLOOD_MESSAGE]);
        count += 1;
    }
}

#[test]
fn slow_reader_past_the_high_water_mark_is_closed_with_1008_under_the_close_policy() {
    let (server, mut slow, report) = flood_a_slow_reader(BackpressurePolicy::Close);
    let Some(Error::SendBufferFull { pending, limit }) = report.error else {
        panic!("a send past the mark fails: {report:?}");
    };
    assert_eq!(limit, HIGH_WATER);
    assert!(pending > turn_limit());
    assert!(pending <= turn_limit() + FLOOD_MESSAGE + 14);
    assert_echo(server.local_addr());
    let (received, close) = read_flood(&mut slow);
    assert_eq!(received, report.sent);
    assert_eq!(close.opcode, CLOSE);
    assert_eq!(close.close_code(), Some(1008));
    slow.expect_eof();
}

#[test]
fn slow_reader_past_the_high_water_mark_gets_send_errors_under_the_error_policy() {
    let (server, mut slow, report) = flood_a_slow_reader(BackpressurePolicy::Error);
    assert!(
        matches!(
            report.error,
            Some(Error::SendBufferFull {
                limit: HIGH_WATER,
                ..
            })
        ),
        "{report:?}"
    );
    assert_echo(server.local_addr());
    // The connection is still open: the queued messages arrive, then it echoes and closes.
    slow.send(&frame(TEXT, true, b"still open"));
    slow.send(&support::close_frame(1000, ""));
    let (received, echo) = read_flood(&mut slow);
    assert_eq!(received, report.sent);
    assert_eq!((echo.opcode, &echo.payload[..]), (TEXT, &b"still open"[..]));
    assert_eq!(slow.close_code(), Some(1000));
}

#[test]
fn slow_reader_fed_from_another_thread_is_closed_with_1008_and_others_are_served() {
    const MESSAGES: usize = 1024;
    let mut config = server_config();
    config.workers = 1;
    config.protocol.extensions.clear();
    config.io.send_high_water = HIGH_WATER;
    config.protocol.close_timeout = Some(DEADLINE);
    let (_room, server, joined) = Room::start(config);
    let addr = server.local_addr();
    let mut slow = RawClient::open(addr);
    let slow_handle = next(&joined);
    let marker = connect_with(&url(addr), client_config()).unwrap();
    let marker_handle = next(&joined);
    // 64 MiB for a client that reads nothing: the server must not queue it.
    let payload = bytes::Bytes::from(vec![5; FLOOD_MESSAGE]);
    for _ in 0..MESSAGES {
        slow_handle.send(Message::binary(payload.clone()));
    }
    // One event loop runs the commands in order: once this arrives, the flood was handled.
    marker_handle.send("marker");
    assert_eq!(recv(&marker), Message::text("marker"));
    assert_echo(addr);
    let mut received = 0;
    let close = loop {
        let frame = slow.read_frame().expect("a frame");
        if frame.opcode != BINARY {
            break frame;
        }
        received += frame.payload.len();
    };
    assert_eq!(close.close_code(), Some(1008));
    // What reached the client is what the kernel buffers took plus the mark, not 64 MiB.
    assert!(received < 16 << 20, "received {received} bytes");
    slow.expect_eof();
}

/// A request that arrives while a connection's replies are piled up past the high-water mark
/// is read once they drain.
#[test]
fn request_sent_while_replies_pile_up_is_read_once_they_drain() {
    const REPLY: usize = 8 << 20;
    let big_reply = |conn: &mut Connection, message: Message| -> wsline::Result<()> {
        if message.as_text() == Some("big") {
            return conn.send(Message::binary(vec![1; REPLY]));
        }
        conn.send(message)
    };
    let mut config = server_config();
    config.io.send_high_water = 64 << 10;
    config.protocol.extensions.clear();
    let server = start(big_reply, config);
    let mut client = RawClient::open(server.local_addr());
    client.send(&frame(TEXT, true, b"big"));
    // Once the reply starts coming, the server is past its high-water mark (the kernel
    // holds a few MiB at most, and the client reads nothing yet).
    client.stream.peek(&mut [0]).expect("the reply starts");
    client.send(&frame(TEXT, true, b"after"));
    let reply = client.read_frame().expect("the big reply");
    assert_eq!(reply.payload.len(), REPLY);
    let echo = client
        .read_frame()
        .expect("the echo of the request sent meanwhile");
    assert_eq!(echo.payload, b"after");
}

/// After a short read, the event loop took the socket as drained even when readiness had
/// also reported the peer's end of stream (FIN or reset arriving with the last bytes): the
/// end was never read, and the connection stayed open until a timer, if any, ended it.
#[test]
fn end_of_stream_arriving_with_the_last_bytes_went_unnoticed() {
    let server = start(echo, server_config());
    let mut client = RawClient::open(server.local_addr());
    client.send(&frame(TEXT, true, b"last words"));
    client.shutdown_write();
    assert_eq!(
        client.read_frame().expect("the echo").payload,
        b"last words"
    );
    client.expect_eof();
    wait_until("the half-closed connection is gone", || {
        server.connection_count() == 0
    });
    let mut client = RawClient::open(server.local_addr());
    let whole = frame(BINARY, true, &[7; 1000]);
    client.send(&whole[..500]);
    client.reset();
    wait_until("the reset connection is gone", || {
        server.connection_count() == 0
    });
}

// ----- Timeouts and keepalive -----

#[test]
fn client_that_never_finishes_its_handshake_is_dropped_at_the_open_timeout() {
    let mut config = server_config();
    config.protocol.open_timeout = Some(Duration::from_millis(500));
    let server = start(echo, config);
    let mut slowloris = RawClient::connect(server.local_addr());
    let started = Instant::now();
    slowloris.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    // Others are served meanwhile.
    assert_echo(server.local_addr());
    slowloris.expect_eof();
    assert!(started.elapsed() >= Duration::from_millis(500));
    wait_until("the slowloris is gone", || server.connection_count() == 0);
}

/// The server of the two keepalive tests below: a ping after every [`PING_INTERVAL`] of
/// silence, answered within [`PING_TIMEOUT`] or the connection fails.
fn keepalive_config() -> ServerConfig {
    let mut config = server_config();
    config.protocol.ping_interval = Some(PING_INTERVAL);
    config.protocol.ping_timeout = Some(PING_TIMEOUT);
    config
}

const PING_INTERVAL: Duration = Duration::from_millis(100);
const PING_TIMEOUT: Duration = Duration::from_millis(300);

/// The negative twin of [`keepalive_keeps_a_peer_that_answers_pings`]: the same server
/// closes a peer that stays silent.
#[test]
fn keepalive_closes_a_peer_that_never_answers_pings_with_1011() {
    let (tx, closes) = mpsc::channel();
    struct Dead(Mutex<Sender<ConnectionClosed>>);
    impl Handler for Dead {
        type State = ();
        fn on_message(&self, conn: &mut Connection<'_>, message: Message) -> wsline::Result<()> {
            conn.send(message)
        }
        fn on_close(&self, _: &mut Connection<'_>, closed: &ConnectionClosed) {
            let _ = self.0.lock().unwrap().send(closed.clone());
        }
    }
    let server = start(Dead(Mutex::new(tx)), keepalive_config());
    let mut dead = RawClient::open(server.local_addr());
    let ping = dead.read_frame().expect("a keepalive ping");
    assert_eq!(ping.opcode, PING);
    let close = dead.read_close().expect("a close frame");
    assert_eq!(close.close_code(), Some(1011));
    dead.expect_eof();
    drop(dead);
    let closed = next(&closes);
    assert_eq!(closed.failure, Some(Failure::KeepaliveTimeout));
    assert_echo(server.local_addr());
}

/// With pings due every 100 ms and a 300 ms timeout, a client that stays idle for four
/// timeouts is still connected, and the pings and pongs really went over the wire.
#[test]
fn keepalive_keeps_a_peer_that_answers_pings() {
    let server = start(echo, keepalive_config());
    let relay = CountingRelay::start(server.local_addr());
    // The client's driver answers pings while the application sleeps.
    let ws = connect_with(&url(relay.addr), client_config()).unwrap();
    std::thread::sleep(4 * PING_TIMEOUT);
    ws.send_text("alive").unwrap();
    assert_eq!(recv(&ws), Message::text("alive"));
    let (pings, pongs) = (relay.pings.load(SeqCst), relay.pongs.load(SeqCst));
    assert!(pings >= 3, "{pings} pings in {:?}", 4 * PING_TIMEOUT);
    assert!(pongs >= 3, "{pongs} pongs to {pings} pings");
}

/// A TCP relay in front of a server for one connection: pipes the bytes both ways unchanged
/// and counts the ping frames the server sends and the pong frames the client sends.
struct CountingRelay {
    addr: SocketAddr,
    pings: Arc<AtomicUsize>,
    pongs: Arc<AtomicUsize>,
}

impl CountingRelay {
    fn start(server: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Self {
            addr: listener.local_addr().unwrap(),
            pings: Arc::default(),
            pongs: Arc::default(),
        };
        let (pings, pongs) = (Arc::clone(&relay.pings), Arc::clone(&relay.pongs));
        std::thread::spawn(move || {
            let (client, _) = listener.accept().expect("the client connects");
            let upstream = TcpStream::connect(server).expect("the server accepts");
            let (client_reader, upstream_writer) =
                (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || pipe_counting(client_reader, upstream_writer, PONG, &pongs));
            pipe_counting(upstream, client, PING, &pings);
        });
        relay
    }
}

/// Copies `from` to `to` until `from` ends, counting the frames with `opcode` after the
/// HTTP head.
fn pipe_counting(mut from: TcpStream, mut to: TcpStream, opcode: u8, count: &AtomicUsize) {
    let mut seen = Vec::new();
    let mut in_head = true;
    let mut chunk = [0; 16 << 10];
    while let Ok(n @ 1..) = from.read(&mut chunk) {
        if to.write_all(&chunk[..n]).is_err() {
            break;
        }
        seen.extend_from_slice(&chunk[..n]);
        if in_head {
            let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            seen.drain(..end + 4);
            in_head = false;
        }
        while let Some((frame, used)) = parse_frame(&seen) {
            if frame.opcode == opcode {
                count.fetch_add(1, SeqCst);
            }
            seen.drain(..used);
        }
    }
    // The other side sees the end too.
    let _ = to.shutdown(Shutdown::Write);
}

// ----- Client API -----

#[test]
fn client_recv_text_returns_text_and_rejects_binary() {
    let server = start(echo, server_config());
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    ws.send_text("plain text").unwrap();
    assert_eq!(ws.recv_text().unwrap(), "plain text");
    ws.send_binary(b"bytes").unwrap();
    assert!(matches!(ws.recv_text(), Err(Error::NotText { len: 5 })));
}

#[test]
fn client_iterates_until_the_server_closes_normally() {
    let handler = |conn: &mut Connection, message: Message| -> wsline::Result<()> {
        for i in 0..3 {
            conn.send(format!("{message} {i}"))?;
        }
        conn.close(CloseCode::NORMAL, "that was all")
    };
    let server = start(handler, server_config());
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    ws.send_text("part").unwrap();
    let messages: Vec<Message> = (&ws).map(|message| message.unwrap()).collect();
    assert_eq!(messages, ["part 0", "part 1", "part 2"].map(Message::text));
    let status = ws.close_status().expect("closed");
    assert_eq!(status.code(), CloseCode::NORMAL);
    assert_eq!(status.reason(), "that was all");
}

#[test]
fn client_iteration_yields_an_abnormal_close_as_an_error_once() {
    let handler = |conn: &mut Connection, _: Message| -> wsline::Result<()> {
        conn.close(CloseCode::from(4009), "custom")
    };
    let server = start(handler, server_config());
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    ws.send_text("go").unwrap();
    let items: Vec<_> = (&ws).collect();
    assert_eq!(items.len(), 1);
    let Err(Error::ConnectionClosed(closed)) = &items[0] else {
        panic!("{items:?}");
    };
    assert_eq!(
        (closed.code(), closed.reason()),
        (CloseCode::from(4009), "custom")
    );
}

#[test]
fn client_ping_returns_the_round_trip_time() {
    let server = start(echo, server_config());
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    let latency = ws.ping().expect("pong");
    assert!(latency < DEADLINE);
    // Messages still flow after pings.
    ws.send_text("after ping").unwrap();
    assert_eq!(recv(&ws), Message::text("after ping"));
}

#[test]
fn client_connect_on_uses_a_stream_opened_by_the_caller() {
    let server = start(echo, server_config());
    let stream = TcpStream::connect(server.local_addr()).unwrap();
    let ws = connect_on(stream, &url(server.local_addr()), client_config()).unwrap();
    ws.send_text("over my stream").unwrap();
    assert_eq!(recv(&ws), Message::text("over my stream"));
}

#[test]
fn client_send_fragmented_arrives_as_one_message_in_several_frames() {
    let (tx, fragments) = mpsc::channel();
    let tx = Mutex::new(tx);
    let mut config = server_config();
    config.protocol.deliver_fragments = true;
    config.protocol.extensions.clear();
    let server = start(
        move |_: &mut Connection, fragment: Message| -> wsline::Result<()> {
            let _ = tx.lock().unwrap().send(fragment);
            Ok(())
        },
        config,
    );
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    // Nine bytes of two-byte characters in four-byte pieces: no character is cut.
    ws.send_fragmented(&Message::text("ééééé"), 4).unwrap();
    ws.send_fragmented(&Message::binary(vec![1, 2, 3, 4, 5]), 2)
        .unwrap();
    // Fragments are at least four bytes long, so that every text piece holds a character.
    let received: Vec<Message> = (0..5).map(|_| next(&fragments)).collect();
    assert_eq!(
        received,
        [
            Message::text("éé"),
            Message::text("éé"),
            Message::text("é"),
            Message::binary(vec![1, 2, 3, 4]),
            Message::binary(vec![5]),
        ]
    );
}

/// A thread-per-connection server that sends every message back in four-byte fragments,
/// without compression (so that the frames on the wire are the fragments sent).
fn fragmenting_echo_server() -> wsline::sync::server::Server {
    let handler = |ws: &WebSocket| -> wsline::Result<()> {
        for message in ws {
            ws.send_fragmented(&message?, 4)?;
        }
        Ok(())
    };
    let mut config = server_config();
    config.protocol.extensions.clear();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    serve_blocking_on(handler, listener, config).unwrap()
}

fn recv_fragment(ws: &WebSocket) -> Fragment {
    ws.recv_fragment().expect("fragment")
}

#[test]
fn client_recv_fragment_gets_a_message_in_three_frames_as_three_fragments_with_their_flags() {
    let server = fragmenting_echo_server();
    let mut config = client_config();
    config.protocol.deliver_fragments = true;
    config.protocol.extensions.clear();
    let ws = connect_with(&url(server.local_addr()), config).unwrap();
    ws.send_text("abcdefghijkl").unwrap();
    let fragment = |data: &str, first, fin| Fragment {
        data: Message::text(data),
        first,
        fin,
    };
    assert_eq!(recv_fragment(&ws), fragment("abcd", true, false));
    assert_eq!(recv_fragment(&ws), fragment("efgh", false, false));
    assert_eq!(recv_fragment(&ws), fragment("ijkl", false, true));
    // A message that fits one frame is one fragment, first and last.
    ws.send_binary(b"xy").unwrap();
    let whole = Fragment {
        data: Message::binary(b"xy".to_vec()),
        first: true,
        fin: true,
    };
    assert_eq!(recv_fragment(&ws), whole);
}

#[test]
fn client_recv_fragment_without_deliver_fragments_gets_each_whole_message_as_one_fragment() {
    let server = fragmenting_echo_server();
    let mut config = client_config();
    config.protocol.extensions.clear();
    let ws = connect_with(&url(server.local_addr()), config).unwrap();
    ws.send_text("abcdefghijkl").unwrap();
    let whole = Fragment {
        data: Message::text("abcdefghijkl"),
        first: true,
        fin: true,
    };
    assert_eq!(recv_fragment(&ws), whole);
}

#[test]
fn client_send_fragmented_is_reassembled_by_the_echo_server() {
    let server = start(echo, server_config());
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    let text = "fragmented ∑ message ".repeat(100);
    ws.send_fragmented(&Message::text(text.clone()), 7).unwrap();
    assert_eq!(recv(&ws), Message::text(text));
    let data: Vec<u8> = (0..100_000).map(|i| i as u8).collect();
    ws.send_fragmented(&Message::binary(data.clone()), 4096)
        .unwrap();
    assert_eq!(recv(&ws), Message::binary(data));
}

#[test]
fn client_close_code_and_reason_reach_the_server_and_server_close_reaches_the_client() {
    let (server, events) = Named::start();
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    next(&events);
    ws.close(CloseCode::from(4321), "client says bye").unwrap();
    assert_eq!(next(&events), "close user1 4321 client says bye clean=true");
    let status = ws.close_status().unwrap();
    assert_eq!(status.initiator, Some(Initiator::Local));
    assert!(status.clean);

    let handler = |conn: &mut Connection, _: Message| -> wsline::Result<()> {
        conn.close(CloseCode::from(4322), "server says bye")
    };
    let server = start(handler, server_config());
    let ws = connect_with(&url(server.local_addr()), client_config()).unwrap();
    ws.send_text("close me").unwrap();
    let closed = closed_by_server(&ws);
    assert_eq!(
        (closed.code(), closed.reason(), closed.initiator),
        (
            CloseCode::from(4322),
            "server says bye",
            Some(Initiator::Remote)
        )
    );
    // Sending after the close says the connection is closed.
    let error = ws.send_text("too late").unwrap_err();
    assert!(error.is_closed(), "{error}");
}

#[test]
fn client_connect_to_a_closed_port_is_refused() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let error = connect_with(&format!("ws://127.0.0.1:{port}/"), client_config()).unwrap_err();
    let Error::Io(io) = &error else {
        panic!("expected an I/O error, got {error:?}");
    };
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn client_sees_a_rejected_handshake_with_its_status_and_body() {
    struct Gatekeeper;
    impl Handler for Gatekeeper {
        type State = ();
        fn on_handshake(&self, request: &Request, response: &mut Response) {
            if request.headers.get("Authorization") != Some("Bearer letmein") {
                *response = Response::text(403, "no token, no entry");
            }
        }
        fn on_message(&self, conn: &mut Connection<'_>, message: Message) -> wsline::Result<()> {
            conn.send(message)
        }
    }
    let server = start(Gatekeeper, server_config());
    let addr = server.local_addr();
    let error = connect_with(&url(addr), client_config()).unwrap_err();
    let Error::Handshake(HandshakeError::Rejected(response)) = &error else {
        panic!("expected a rejected handshake, got {error:?}");
    };
    assert_eq!(response.status, 403);
    assert_eq!(&response.body[..], b"no token, no entry\n");
    let mut config = client_config();
    config.headers = vec![("Authorization".into(), "Bearer letmein".into())];
    let ws = connect_with(&url(addr), config).expect("with the token");
    ws.send_text("in").unwrap();
    assert_eq!(recv(&ws), Message::text("in"));
}

#[test]
fn client_open_timeout_bounds_a_server_that_never_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut config = client_config();
    config.protocol.open_timeout = Some(Duration::from_millis(300));
    let error = connect_with(&url(addr), config).unwrap_err();
    assert!(
        matches!(error, Error::Timeout(Failure::OpenTimeout)),
        "{error:?}"
    );
    drop(listener);
}

/// An HTTP server of its own answers the upgrade; `WebSocket::from_upgraded` takes over the
/// socket with the bytes read past the request head (a first message sent with it).
#[test]
fn from_upgraded_takes_over_a_socket_upgraded_elsewhere_with_the_bytes_read_past_the_head() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut read = Vec::new();
        let mut buf = [0; 4096];
        let head_end = loop {
            let n = std::io::Read::read(&mut stream, &mut buf).unwrap();
            read.extend_from_slice(&buf[..n]);
            if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        let head = String::from_utf8_lossy(&read[..head_end]).into_owned();
        let key = head
            .lines()
            .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            wsline::proto::accept_key(key)
        );
        std::io::Write::write_all(&mut stream, response.as_bytes()).unwrap();
        let ws = WebSocket::from_upgraded(
            stream,
            wsline::proto::Side::Server,
            wsline::Config::default(),
            &read[head_end..],
        )
        .unwrap();
        for message in &ws {
            ws.send(message.unwrap()).unwrap();
        }
    });
    // The request and a first frame in one write: the upgrading server reads both.
    let mut client_core = wsline::proto::Connection::client(
        format!("ws://{addr}/").parse().unwrap(),
        wsline::Config::default(),
        Instant::now(),
    );
    let request = client_core.connect_request().unwrap();
    client_core.send_request(request).unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut first = Vec::new();
    while let Some(wsline::proto::Transmit::Bytes(bytes)) = client_core.poll_transmit() {
        first.extend_from_slice(&bytes);
    }
    let mut frame_writer = wsline::proto::Connection::after_handshake(
        wsline::proto::Side::Client,
        wsline::Config::default(),
        Instant::now(),
    );
    frame_writer.send_text("early").unwrap();
    while let Some(wsline::proto::Transmit::Bytes(bytes)) = frame_writer.poll_transmit() {
        first.extend_from_slice(&bytes);
    }
    std::io::Write::write_all(&mut stream, &first).unwrap();
    let client = connect_on_upgraded(stream);
    assert_eq!(recv(&client), Message::text("early"));
    client.send_text("later").unwrap();
    assert_eq!(recv(&client), Message::text("later"));
    client.close(CloseCode::NORMAL, "").unwrap();
    server.join().unwrap();
}

/// Reads the 101 head off `stream`, then wraps it as the client side.
fn connect_on_upgraded(mut stream: TcpStream) -> WebSocket {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut stream, &mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    WebSocket::from_upgraded(
        stream,
        wsline::proto::Side::Client,
        wsline::Config::default(),
        &[],
    )
    .unwrap()
}

/// A blocking server whose handshake was answered outside wsline's servers (here by hand,
/// with `proto::negotiate`): `WebSocket::from_negotiated` keeps the negotiated
/// permessage-deflate, and the bytes read past the head.
#[test]
fn from_negotiated_keeps_deflate_after_a_handshake_done_elsewhere() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut received = Vec::new();
        let mut buf = [0; 4096];
        let head_end = loop {
            let n = stream.read(&mut buf).unwrap();
            received.extend_from_slice(&buf[..n]);
            if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut fields);
        parsed.parse(&received[..head_end]).unwrap();
        let mut headers = wsline::proto::Headers::new();
        for field in parsed.headers.iter() {
            headers.append(
                field.name,
                String::from_utf8_lossy(field.value).into_owned(),
            );
        }
        let request = Request {
            method: parsed.method.unwrap().to_owned(),
            path: parsed.path.unwrap().to_owned(),
            protocol: None,
            headers,
        };
        let config = Arc::new(ServerConfig::default().protocol);
        let negotiated = wsline::proto::negotiate(&request, &config).unwrap();
        stream.write_all(&negotiated.response().to_bytes()).unwrap();
        let ws =
            WebSocket::from_negotiated(stream, negotiated, config, &received[head_end..]).unwrap();
        assert_eq!(
            ws.extension_names().collect::<Vec<_>>(),
            ["permessage-deflate"]
        );
        let message = ws.recv().unwrap();
        ws.send(message).unwrap();
        let _ = ws.recv();
    });
    let ws = connect(&format!("ws://{addr}/")).unwrap();
    assert_eq!(
        ws.extension_names().collect::<Vec<_>>(),
        ["permessage-deflate"]
    );
    let compressible = Message::text("compressible ".repeat(10_000));
    ws.send(compressible.clone()).unwrap();
    assert_eq!(ws.recv().unwrap(), compressible);
    ws.close(CloseCode::NORMAL, "").unwrap();
    server.join().unwrap();
}
