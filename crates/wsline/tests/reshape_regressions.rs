//! Regressions found by reviewing the reshaped core (issue 10) against the single-file core
//! it replaced: each test is named after the behaviour that was lost.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use wsline::proto::{Connection, Event, Side, State};
use wsline::sync::server::serve_blocking_on;
use wsline::sync::WebSocket;
use wsline::{CloseCode, Config};

use support::{close_frame, frame, RawClient, CLOSE, TEXT};

/// Runs a thread-per-connection echo server whose handler takes `handling` per message,
/// sends `messages` and a close frame in one write, and returns what came back up to the
/// server's close frame.
fn echoes_before_the_close(
    handling: Duration,
    messages: &[&[u8]],
    config: wsline::ServerConfig,
) -> Vec<(u8, Vec<u8>)> {
    let _guard = support::shared();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = move |ws: &WebSocket| -> wsline::Result<()> {
        for message in ws {
            let message = message?;
            std::thread::sleep(handling);
            ws.send(message)?;
        }
        Ok(())
    };
    let server = serve_blocking_on(handler, listener, config).unwrap();
    let mut client = RawClient::open(addr);
    let mut burst = Vec::new();
    for message in messages {
        burst.extend(frame(TEXT, true, message));
    }
    burst.extend(close_frame(1000, ""));
    client.send(&burst);
    let mut seen = Vec::new();
    while let Some(frame) = client.read_frame() {
        let opcode = frame.opcode;
        seen.push((opcode, frame.payload));
        if opcode == CLOSE {
            break;
        }
    }
    drop(server);
    seen
}

/// The acknowledge timeout ran from the arrival of the peer's close frame, not from when the
/// application took the last message before it: a blocking handler taking 60 ms per message
/// lost its replies to the second and third message sent before the close.
#[test]
fn blocking_handler_answers_every_message_before_the_close_it_handles_within_the_timeout() {
    let seen = echoes_before_the_close(
        Duration::from_millis(60),
        &[b"one", b"two", b"three"],
        support::server_config(),
    );
    assert_eq!(
        seen,
        vec![
            (TEXT, b"one".to_vec()),
            (TEXT, b"two".to_vec()),
            (TEXT, b"three".to_vec()),
            (CLOSE, vec![0x03, 0xe8])
        ],
        "every echo before the close reply"
    );
}

/// `Config::acknowledge_timeout: None` waits for the application however slow it is.
#[test]
fn without_an_acknowledge_timeout_a_slow_blocking_handler_answers_before_the_close() {
    let mut config = support::server_config();
    config.protocol.acknowledge_timeout = None;
    let seen = echoes_before_the_close(Duration::from_millis(250), &[b"one", b"two"], config);
    assert_eq!(
        seen,
        vec![
            (TEXT, b"one".to_vec()),
            (TEXT, b"two".to_vec()),
            (CLOSE, vec![0x03, 0xe8])
        ],
        "every echo before the close reply"
    );
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(opcode, true, payload)
}

/// Failing the connection while the peer's close frame waited for the events before it
/// threw that close away: `close_status` then reported the 1011 sent, not the 1000 received.
#[test]
fn failing_while_the_peers_close_waits_still_records_the_close_that_was_received() {
    let now = Instant::now();
    let mut server = Connection::after_handshake(Side::Server, Config::default(), now);
    let mut input = masked(TEXT, b"hi");
    input.extend(close_frame(1000, "bye"));
    server.handle_data(&input);
    assert!(matches!(server.poll_event(), Some(Event::Message(_))));
    // The handler fails (handler-error policy, backpressure 1008, ...).
    server.fail(CloseCode::INTERNAL_ERROR, "");
    assert!(server.poll_event().is_none());
    server.acknowledge_events();
    while server.poll_transmit().is_some() {}
    server.handle_eof();
    let status = server.close_status();
    assert_eq!(server.state(), State::Closed);
    assert_eq!(
        status.received.as_ref().map(|close| close.code),
        Some(CloseCode::NORMAL),
        "{status:?}"
    );
    assert!(status.clean, "{status:?}");
}
