//! One test per bug found in the core (by tests or by fuzzing), named after the bug.

mod support;

use support::proto as common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{allocations_during, client_frame, events, open, peak_heap_during, written};
use wsline::proto::{Connection, Event, Failure, Fragment, Frame, Opcode, Side, State};
use wsline::{Config, Message};

/// With `deliver_fragments`, a non-final binary fragment subtracted its length from the
/// message's count of validated UTF-8 bytes (always 0 for binary): an arithmetic overflow,
/// a panic in debug builds, on peer input.
#[test]
fn binary_fragment_in_deliver_fragments_mode_overflowed_the_utf8_counter() {
    let config = Config {
        deliver_fragments: true,
        ..common::no_timers()
    };
    let mut server = open(Side::Server, config);
    let mut input = client_frame(Opcode::Binary, false, b"ab");
    input.extend(client_frame(Opcode::Continuation, false, b"cd"));
    input.extend(client_frame(Opcode::Continuation, true, b"ef"));
    server.handle_data(&input);
    let fragment = |data: &'static [u8], first, fin| {
        Event::Fragment(Fragment {
            data: Message::binary(data),
            first,
            fin,
        })
    };
    assert_eq!(
        events(&mut server),
        [
            fragment(b"ab", true, false),
            fragment(b"cd", false, false),
            fragment(b"ef", false, true),
        ]
    );
    assert!(written(&mut server).bytes.is_empty());
}

/// The open timeout was armed by the first `handle_timeout` call instead of at construction,
/// so a layer whose first clock reading came late (or `poll_timeout` before any reading)
/// extended the handshake deadline; `Connection::server` documents that `now` starts it.
#[test]
fn open_timeout_started_at_the_first_handle_timeout_instead_of_construction() {
    let t0 = Instant::now();
    let config = Config {
        open_timeout: Some(Duration::from_secs(10)),
        ..common::no_timers()
    };
    let mut server = Connection::server(config, t0);
    assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    server.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(server.state(), State::Closed);
    assert_eq!(server.close_status().failure, Some(Failure::OpenTimeout));
}

/// The message buffer grew by exactly each frame's payload, so every small message took its
/// own allocation (plus bookkeeping for sharing it): half of the instructions spent on a
/// 20-byte message went to the allocator. Now small messages are slices of one shared block,
/// and a connection whose messages are dropped reuses its block without allocating.
#[test]
fn each_small_message_took_its_own_allocation() {
    let mut server = open(Side::Server, common::no_timers());
    let frame = client_frame(Opcode::Binary, true, &[7; 20]);
    let burst = frame.repeat(1000);
    let (messages, allocations) = allocations_during(|| {
        server.handle_data(&burst);
        events(&mut server).len()
    });
    assert_eq!(messages, 1000);
    assert!(
        allocations < 50,
        "{allocations} allocations for 1000 messages"
    );
    // Steady state: one message in, taken and dropped, again and again.
    let ((), allocations) = allocations_during(|| {
        for _ in 0..1000 {
            server.handle_data(&frame);
            let event = server.poll_event();
            assert!(matches!(event, Some(Event::Message(_))));
        }
    });
    assert_eq!(allocations, 0);
}

/// Found by the `frame_decode` fuzz target: `Frame::decode` reserved room for the whole
/// payload a header claimed, so with a generous limit (`u64::MAX`) a 10-byte header claiming
/// 2^56 bytes aborted the process on allocation.
#[test]
fn frame_decode_reserved_the_whole_claimed_payload() {
    // Text, not final, masked, a 64-bit length of 2^56: fuzz/artifacts crash-33c41a24.
    let claim = [
        0x01, 0xFF, 0x01, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0x83, 0x37, 0xFA, 0x21, 0x3D,
    ];
    let mut buf = BytesMut::from(&claim[..]);
    let (decoded, peak) = peak_heap_during(|| Frame::decode(&mut buf, u64::MAX));
    assert_eq!(decoded, Ok(None));
    assert!(peak <= 64 << 10, "peak {peak}");
    assert_eq!(buf.len(), claim.len());
    // The frame still decodes once its payload is there.
    let mut buf = BytesMut::new();
    Frame::new(Opcode::Binary, vec![9; 100_000]).encode(Some([1, 2, 3, 4]), &mut buf);
    let mut input = BytesMut::new();
    for piece in buf.chunks(7_000) {
        input.extend_from_slice(piece);
        if let Some(frame) = Frame::decode(&mut input, u64::MAX).unwrap() {
            assert_eq!(frame.payload.len(), 100_000);
            assert!(input.is_empty());
            return;
        }
    }
    panic!("the frame never decoded");
}
