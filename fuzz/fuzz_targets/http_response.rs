//! A client connection fed arbitrary bytes as the server's handshake response, in arbitrary
//! pieces: no panic, bounded buffering of the head and of a rejection's body, and once open
//! only valid masked frames out.
//!
//! The RFC 6455 sample accept value `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=` in the input is replaced
//! with the one that matches this client's random key, so the fuzzer can reach the open
//! state.
//!
//! Input: a config byte (bit 0: small limits; bit 1: offer subprotocol "chat"), a piece size
//! byte (0 for all at once), then the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsline::proto::{accept_key, Connection, Event, Failure, HandshakeError, Side, State};
use wsline_fuzz::{live_heap, pieces, EventChecker, Input, WireChecker};

const SAMPLE_ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let mut config = wsline_fuzz::handshake_config(flags & 1 == 1);
    if flags & 2 == 2 {
        config = config.subprotocols(["chat"]);
    }
    let max_body = config.max_response_body;
    let head_bound = 3 * config.max_head_size + max_body + (64 << 10);
    let size = input.byte();
    let mut client = Connection::client(
        "ws://example.com/chat".parse().unwrap(),
        config.clone(),
        std::time::Instant::now(),
    );
    let request = client.connect_request().unwrap();
    let key = request.headers.get("Sec-WebSocket-Key").unwrap().to_owned();
    client.send_request(request).unwrap();
    let mut wire = WireChecker::new(Side::Client);
    wire.in_head = true;
    wire.drain(&mut client);
    let mut stream = input.rest().to_vec();
    let accept = accept_key(&key);
    let mut at = 0;
    while let Some(found) = stream[at..]
        .windows(SAMPLE_ACCEPT.len())
        .position(|w| w == SAMPLE_ACCEPT)
    {
        let start = at + found;
        stream[start..start + SAMPLE_ACCEPT.len()].copy_from_slice(accept.as_bytes());
        at = start + SAMPLE_ACCEPT.len();
    }
    let mut events = EventChecker::new(&config);
    let baseline = live_heap();
    for piece in pieces(&stream, size) {
        client.handle_data(piece);
        if client.state() == State::Connecting {
            let held = live_heap().saturating_sub(baseline);
            assert!(held <= head_bound, "{held} bytes held during the handshake");
        }
        wire.drain(&mut client);
        for event in events.drain(&mut client) {
            if let Event::Closed(closed) = event {
                if let Some(Failure::Handshake(HandshakeError::Rejected(response))) = closed.failure
                {
                    assert!(response.body.len() <= max_body);
                }
            }
        }
    }
    client.handle_eof();
    wire.drain(&mut client);
    events.drain(&mut client);
    assert!(client.is_closed());
});
