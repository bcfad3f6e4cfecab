//! The servers behave alike: the event-loop server (`sync::server::serve_on`), the
//! thread-per-connection server (`serve_blocking_on`) and the tokio server answer the same
//! client the same way, because they share one layer core (the handshake answer with its
//! `on_handshake` hook, the handler-error policy, backpressure and its close reason).
#![cfg(all(feature = "sync", feature = "tokio"))]

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use wsline::proto::{ConnectionClosed, HandshakeError, Request, Response};
use wsline::sync::client::connect_with;
use wsline::sync::server::{serve_blocking_on, BlockingHandler, Connection, Handler};
use wsline::sync::WebSocket;
use wsline::tokio::MaybeTlsStream;
use wsline::{BackpressurePolicy, CloseCode, Error, Message, ServerConfig};

use support::{
    client_config, close_frame, echo, frame, is_timeout, server_config, start, url, RawClient,
    BINARY, DEADLINE, TEXT,
};

/// A running server of any kind, kept alive for as long as the value lives.
enum Running {
    Sync(wsline::sync::server::Server),
    Tokio {
        server: wsline::tokio::Server,
        runtime: tokio::runtime::Runtime,
    },
}

impl Running {
    fn addr(&self) -> SocketAddr {
        match self {
            Self::Sync(server) => server.local_addr(),
            Self::Tokio { server, .. } => server.local_addr(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Self::Tokio { server, runtime } = self {
            runtime
                .block_on(server.shutdown())
                .expect("the tokio server shuts down");
        }
    }
}

fn blocking<H: BlockingHandler>(handler: H, config: ServerConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    Running::Sync(serve_blocking_on(handler, listener, config).expect("serve"))
}

fn tokio_server<H: wsline::tokio::Handler>(handler: H, config: ServerConfig) -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let server = runtime
        .block_on(wsline::tokio::serve_with(handler, "127.0.0.1:0", config))
        .expect("serve");
    Running::Tokio { server, runtime }
}

/// The close status a client saw once the server closed the connection, after reading
/// whatever messages came before the close frame.
fn closed_by_server(ws: &WebSocket) -> ConnectionClosed {
    loop {
        match ws.recv_timeout(DEADLINE) {
            Ok(Some(_)) => {}
            Err(Error::ConnectionClosed(closed)) => return closed,
            other => panic!("expected the server to close the connection, got {other:?}"),
        }
    }
}

// ----- The handshake answer and its hook -----

fn refuse_without_token(request: &Request, response: &mut Response) {
    if request.headers.get("Authorization") != Some("Bearer letmein") {
        *response = Response::text(403, "no token, no entry");
    }
}

/// One gatekeeper for every server: refuses clients without a token, echoes the others.
struct Gatekeeper;

impl Handler for Gatekeeper {
    type State = ();
    fn on_handshake(&self, request: &Request, response: &mut Response) {
        refuse_without_token(request, response);
    }
    fn on_message(&self, conn: &mut Connection<'_>, message: Message) -> wsline::Result<()> {
        conn.send(message)
    }
}

impl BlockingHandler for Gatekeeper {
    fn on_handshake(&self, request: &Request, response: &mut Response) {
        refuse_without_token(request, response);
    }
    fn handle(&self, ws: &WebSocket) -> wsline::Result<()> {
        for message in ws {
            ws.send(message?)?;
        }
        Ok(())
    }
}

impl wsline::tokio::Handler for Gatekeeper {
    fn on_handshake(&self, request: &Request, response: &mut Response) {
        refuse_without_token(request, response);
    }
    async fn handle(
        self: Arc<Self>,
        mut ws: wsline::tokio::WebSocket<MaybeTlsStream>,
    ) -> wsline::Result<()> {
        while let Some(message) = ws.recv().await {
            ws.send(message?).await?;
        }
        Ok(())
    }
}

fn assert_hook_refuses_then_admits(server: &Running) {
    let error = connect_with(&url(server.addr()), client_config()).unwrap_err();
    let Error::Handshake(HandshakeError::Rejected(response)) = &error else {
        panic!("expected a rejected handshake, got {error:?}");
    };
    assert_eq!(response.status, 403);
    assert_eq!(&response.body[..], b"no token, no entry\n");
    let mut config = client_config();
    config.headers = vec![("Authorization".into(), "Bearer letmein".into())];
    let ws = connect_with(&url(server.addr()), config).expect("admitted with the token");
    ws.send_text("in").unwrap();
    assert_eq!(
        ws.recv_timeout(DEADLINE).unwrap(),
        Some(Message::text("in"))
    );
    ws.close(CloseCode::NORMAL, "").unwrap();
}

#[test]
fn on_handshake_rejecting_with_403_works_on_the_event_loop_server() {
    let _shared = support::shared();
    let server = Running::Sync(start(Gatekeeper, server_config()));
    assert_hook_refuses_then_admits(&server);
}

#[test]
fn on_handshake_rejecting_with_403_works_on_the_thread_per_connection_server() {
    let _shared = support::shared();
    assert_hook_refuses_then_admits(&blocking(Gatekeeper, server_config()));
}

#[test]
fn on_handshake_rejecting_with_403_works_on_the_tokio_server() {
    let _shared = support::shared();
    assert_hook_refuses_then_admits(&tokio_server(Gatekeeper, server_config()));
}

// ----- The handler-error policy -----

fn secret_fault() -> Error {
    Error::Io(std::io::Error::other("secret detail"))
}

/// A client that sends one message to a handler that fails on it sees 1011 and no details.
fn assert_handler_error_closes_with_1011_without_details(server: &Running) {
    let ws = connect_with(&url(server.addr()), client_config()).expect("connect");
    ws.send_text("fail").unwrap();
    let closed = closed_by_server(&ws);
    assert_eq!(closed.code(), CloseCode::INTERNAL_ERROR);
    assert_eq!(closed.reason(), "");
}

#[test]
fn handler_error_closes_with_1011_and_no_details_on_the_event_loop_server() {
    let _shared = support::shared();
    let failing = |_: &mut Connection, _: Message| -> wsline::Result<()> { Err(secret_fault()) };
    let server = Running::Sync(start(failing, server_config()));
    assert_handler_error_closes_with_1011_without_details(&server);
}

#[test]
fn handler_error_closes_with_1011_and_no_details_on_the_thread_per_connection_server() {
    let _shared = support::shared();
    let failing = |ws: &WebSocket| -> wsline::Result<()> {
        ws.recv_timeout(DEADLINE)?;
        Err(secret_fault())
    };
    assert_handler_error_closes_with_1011_without_details(&blocking(failing, server_config()));
}

#[test]
fn handler_error_closes_with_1011_and_no_details_on_the_tokio_server() {
    let _shared = support::shared();
    let failing = |mut ws: wsline::tokio::WebSocket<MaybeTlsStream>| async move {
        ws.recv().await.transpose()?;
        Err::<(), Error>(secret_fault())
    };
    assert_handler_error_closes_with_1011_without_details(&tokio_server(failing, server_config()));
}

/// A handler that fails on the first message while the client keeps sending still gets
/// 1011 with no details to the client: the server reads past the messages that keep coming
/// until the client's close frame answers its own.
fn assert_handler_error_closes_with_1011_while_the_client_sends(server: &Running) {
    let ws = connect_with(&url(server.addr()), client_config()).expect("connect");
    for _ in 0..256 {
        if ws.send_binary(&[7; 4096]).is_err() {
            // The server's close frame arrived while sending.
            break;
        }
    }
    let closed = closed_by_server(&ws);
    assert_eq!(closed.code(), CloseCode::INTERNAL_ERROR);
    assert_eq!(closed.reason(), "");
    assert!(closed.clean, "{closed:?}");
}

#[test]
fn handler_error_while_the_client_sends_closes_with_1011_on_the_thread_per_connection_server() {
    let _shared = support::shared();
    let failing = |ws: &WebSocket| -> wsline::Result<()> {
        ws.recv_timeout(DEADLINE)?;
        Err(secret_fault())
    };
    assert_handler_error_closes_with_1011_while_the_client_sends(&blocking(
        failing,
        server_config(),
    ));
}

#[test]
fn handler_error_while_the_client_sends_closes_with_1011_on_the_tokio_server() {
    let _shared = support::shared();
    let failing = |mut ws: wsline::tokio::WebSocket<MaybeTlsStream>| async move {
        ws.recv().await.transpose()?;
        Err::<(), Error>(secret_fault())
    };
    assert_handler_error_closes_with_1011_while_the_client_sends(&tokio_server(
        failing,
        server_config(),
    ));
}

/// A handler that returns `Ok` without closing leaves the server to close: 1000 and a
/// complete closing handshake.
fn assert_handler_done_closes_with_a_clean_1000(server: &Running) {
    let ws = connect_with(&url(server.addr()), client_config()).expect("connect");
    ws.send_text("done").unwrap();
    let closed = closed_by_server(&ws);
    assert_eq!(closed.code(), CloseCode::NORMAL);
    assert!(closed.clean, "{closed:?}");
    assert_eq!(ws.close_status(), Some(closed));
}

#[test]
fn handler_returning_ok_closes_cleanly_with_1000_on_the_thread_per_connection_server() {
    let _shared = support::shared();
    let done = |ws: &WebSocket| -> wsline::Result<()> {
        ws.recv_timeout(DEADLINE)?;
        Ok(())
    };
    assert_handler_done_closes_with_a_clean_1000(&blocking(done, server_config()));
}

#[test]
fn handler_returning_ok_closes_cleanly_with_1000_on_the_tokio_server() {
    let _shared = support::shared();
    let done = |mut ws: wsline::tokio::WebSocket<MaybeTlsStream>| async move {
        ws.recv().await.transpose()?;
        Ok::<(), Error>(())
    };
    assert_handler_done_closes_with_a_clean_1000(&tokio_server(done, server_config()));
}

/// A handler that returns `Ok` leaves the server to run the closing handshake: after its
/// 1000 the server waits for the client's close frame instead of dropping the connection.
fn assert_server_waits_for_the_close_reply(server: &Running) {
    let mut client = RawClient::open(server.addr());
    client.send(&frame(TEXT, true, b"done"));
    let close = client.read_close().expect("the server's close frame");
    assert_eq!(close.close_code(), Some(1000));
    client.stream.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    let early = client.stream.read(&mut [0; 1]);
    assert!(
        early.as_ref().is_err_and(is_timeout),
        "the server ended the connection before the client's close frame: {early:?}"
    );
    client.stream.set_read_timeout(Some(DEADLINE)).unwrap();
    client.send(&close_frame(1000, ""));
    client.expect_eof();
}

/// How long the client waits before answering the server's close frame.
const REPLY_WAIT: Duration = Duration::from_millis(300);

#[test]
fn handler_returning_ok_waits_for_the_close_reply_on_the_thread_per_connection_server() {
    let _shared = support::shared();
    let done = |ws: &WebSocket| -> wsline::Result<()> {
        ws.recv_timeout(DEADLINE)?;
        Ok(())
    };
    assert_server_waits_for_the_close_reply(&blocking(done, server_config()));
}

#[test]
fn handler_returning_ok_waits_for_the_close_reply_on_the_tokio_server() {
    let _shared = support::shared();
    let done = |mut ws: wsline::tokio::WebSocket<MaybeTlsStream>| async move {
        ws.recv().await.transpose()?;
        Ok::<(), Error>(())
    };
    assert_server_waits_for_the_close_reply(&tokio_server(done, server_config()));
}

#[test]
fn handler_panic_closes_with_1011_and_no_details_on_the_tokio_server() {
    let _shared = support::shared();
    async fn panicking(mut ws: wsline::tokio::WebSocket<MaybeTlsStream>) -> wsline::Result<()> {
        ws.recv().await.transpose()?;
        panic!("secret detail");
    }
    assert_handler_error_closes_with_1011_without_details(&tokio_server(
        panicking,
        server_config(),
    ));
}

/// A handler that splits the connection and returns hands it back through the driver: the
/// server closes it, with 1011 after an `Err`.
#[test]
fn handler_error_after_a_split_closes_with_1011_on_the_tokio_server() {
    let _shared = support::shared();
    let failing = |ws: wsline::tokio::WebSocket<MaybeTlsStream>| async move {
        let (mut reader, _writer) = ws.split();
        reader.recv().await.transpose()?;
        Err::<(), Error>(secret_fault())
    };
    assert_handler_error_closes_with_1011_without_details(&tokio_server(failing, server_config()));
}

// ----- Backpressure and its close reason -----

/// Server settings whose high-water mark a few sends pass, closing slow readers. Without
/// compression, so that a few sends are a few times their size.
fn slow_reader_config() -> ServerConfig {
    let mut config = server_config();
    config.protocol.extensions.clear();
    config.io.send_high_water = 256 << 10;
    config.backpressure = BackpressurePolicy::Close;
    config
}

const CHUNK: usize = 64 << 10;

/// A client that asks for a flood and reads none of it until the server has queued more
/// than its high-water mark sees the slow-reader close: 1008 with the shared reason.
fn assert_slow_reader_close(server: &Running) -> ConnectionClosed {
    let ws = connect_with(&url(server.addr()), client_config()).expect("connect");
    ws.send_text("flood").unwrap();
    let closed = closed_by_server(&ws);
    assert_eq!(closed.code(), CloseCode::POLICY_VIOLATION);
    closed
}

#[test]
fn slow_reader_close_reason_is_the_same_on_the_sync_and_tokio_servers() {
    let _shared = support::shared();
    let flood_sync = |conn: &mut Connection, _: Message| -> wsline::Result<()> {
        // The replies are written once the callback returns: the buffer passes the mark here.
        loop {
            conn.send_binary(&[0; CHUNK])?;
        }
    };
    let sync = assert_slow_reader_close(&Running::Sync(start(flood_sync, slow_reader_config())));
    let flood_tokio = |mut ws: wsline::tokio::WebSocket<MaybeTlsStream>| async move {
        ws.recv().await.transpose()?;
        // Queued without waiting: the buffer passes the mark before anything is written.
        while ws.try_send(vec![0; CHUNK]).is_ok() {}
        // Writes the queue and the close frame; the failed connection does not end cleanly.
        let _ = ws.close(CloseCode::NORMAL, "").await;
        Ok::<(), Error>(())
    };
    let tokio = assert_slow_reader_close(&tokio_server(flood_tokio, slow_reader_config()));
    assert!(!sync.reason().is_empty());
    assert_eq!(sync.reason(), tokio.reason());
}

/// The sync server closed a client that pipelined a message larger than the high-water
/// mark and a small one in the same write: the echo of the first passed the mark before
/// the server had tried to write it, and the echo of the second was refused as if the
/// client read too slowly (1008). The mark is for peers that do not read: the event-loop
/// server judges a peer by what it had not taken when the turn began.
fn assert_a_burst_past_the_mark_is_echoed(server: &Running) {
    let mut client = RawClient::open(server.addr());
    let big = vec![7u8; 300 << 10];
    let mut burst = frame(BINARY, true, &big);
    burst.extend_from_slice(&frame(TEXT, true, b"right after"));
    client.send(&burst);
    let first = client.read_frame().expect("the echo of the big message");
    assert_eq!((first.opcode, first.payload.len()), (BINARY, big.len()));
    let second = client.read_frame().expect("the echo of the small one");
    assert_eq!(
        (second.opcode, second.payload.as_slice()),
        (TEXT, &b"right after"[..])
    );
}

#[test]
fn a_burst_past_the_high_water_mark_is_echoed_not_closed_on_the_event_loop_server() {
    let _shared = support::shared();
    assert_a_burst_past_the_mark_is_echoed(&Running::Sync(start(echo, slow_reader_config())));
}

#[test]
fn a_burst_past_the_high_water_mark_is_echoed_not_closed_on_the_thread_per_connection_server() {
    let _shared = support::shared();
    let echo_blocking = |ws: &WebSocket| -> wsline::Result<()> {
        for message in ws {
            ws.send(message?)?;
        }
        Ok(())
    };
    assert_a_burst_past_the_mark_is_echoed(&blocking(echo_blocking, slow_reader_config()));
}

#[test]
fn a_burst_past_the_high_water_mark_is_echoed_not_closed_on_the_tokio_server() {
    let _shared = support::shared();
    assert_a_burst_past_the_mark_is_echoed(&tokio_server(
        support::tokio_common::echo,
        slow_reader_config(),
    ));
}

/// With the high-water mark at 256 KiB, an event-loop handler that sent three 200 KiB
/// messages from `on_open`, or a 300 KiB reply and a small one to a 3-byte request, had its
/// last send refused with 1008 — before the server had written anything to a client that
/// reads. Both now arrive.
#[test]
fn an_event_loop_turn_that_sends_past_the_mark_to_a_reading_client_is_not_refused() {
    let _shared = support::shared();
    struct Large;
    impl Handler for Large {
        type State = ();
        fn on_open(&self, conn: &mut Connection<'_>) -> wsline::Result<()> {
            for byte in 0..3u8 {
                conn.send_binary(&vec![byte; 200 << 10])?;
            }
            Ok(())
        }
        fn on_message(&self, conn: &mut Connection<'_>, _: Message) -> wsline::Result<()> {
            conn.send_binary(&vec![9; 300 << 10])?;
            conn.send_text("end")
        }
    }
    let server = Running::Sync(start(Large, slow_reader_config()));
    let mut client = RawClient::open(server.addr());
    for byte in 0..3u8 {
        let frame = client.read_frame().expect("an on_open message");
        assert_eq!((frame.opcode, frame.payload.len()), (BINARY, 200 << 10));
        assert!(frame.payload.iter().all(|b| *b == byte));
    }
    client.send(&frame(TEXT, true, b"go!"));
    let reply = client.read_frame().expect("the large reply");
    assert_eq!((reply.opcode, reply.payload.len()), (BINARY, 300 << 10));
    let end = client.read_frame().expect("the small reply");
    assert_eq!((end.opcode, end.payload.as_slice()), (TEXT, &b"end"[..]));
}
