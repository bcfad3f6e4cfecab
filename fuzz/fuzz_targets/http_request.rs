//! A server connection fed arbitrary bytes as its opening handshake, in arbitrary pieces:
//! no panic, no buffering past the head limits, one HTTP response (a 101 only with the
//! connection open), then valid frames.
//!
//! Input: a config byte (bit 0: small head limits, bit 1: reject instead of accept), a piece
//! size byte (0 for all at once), then the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsline::proto::{Connection, Event, Side, State};
use wsline_fuzz::{live_heap, pieces, EventChecker, Input, WireChecker};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let config = wsline_fuzz::handshake_config(flags & 1 == 1);
    let head_bound = 3 * config.max_head_size + config.max_headers * 64 + (64 << 10);
    let size = input.byte();
    let stream = input.rest();
    let mut events = EventChecker::new(&config);
    let mut wire = WireChecker::new(Side::Server);
    wire.in_head = true;
    let baseline = live_heap();
    let mut server = Connection::server(config, std::time::Instant::now());
    let mut response = Vec::new();
    for piece in pieces(stream, size) {
        server.handle_data(piece);
        if server.state() == State::Connecting {
            let held = live_heap().saturating_sub(baseline);
            assert!(held <= head_bound, "{held} bytes held during the handshake");
        }
        for event in events.drain(&mut server) {
            if let Event::Request(request) = event {
                let answer = if flags & 2 == 2 {
                    server.reject(403, "no")
                } else {
                    server.accept(&request).unwrap()
                };
                server
                    .send_response(answer)
                    .expect("a request awaits its response");
            }
        }
        let out = wire.drain(&mut server);
        if response.is_empty() {
            response = out;
        }
    }
    server.handle_eof();
    wire.drain(&mut server);
    events.drain(&mut server);
    if response.is_empty() {
        return;
    }
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut fields);
    let status = parsed.parse(&response).expect("a valid HTTP response");
    assert!(status.is_complete());
    assert!(parsed
        .code
        .is_some_and(|code| code != 101 || flags & 2 == 0));
});
