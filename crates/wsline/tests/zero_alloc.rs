//! Echoing a message costs no heap allocation in steady state (issue 6's target), for
//! messages that fit the read buffer: the server connection reuses its message buffer, its
//! event queue and its send buffer.
//!
//! The counting global allocator of `support::proto` measures allocations made by this
//! thread while a server
//! `Connection` echoes masked client frames, drained the way the sync event loop drains it
//! (vectored chunks, then `advance`).

mod support;

use std::time::Instant;

use bytes::Buf;
use support::proto::{allocations_during, client_frame};
use wsline::proto::{Connection, Event, Opcode, Side};
use wsline::Config;

/// A batch of `count` masked client frames carrying `payload`.
fn client_frames(opcode: Opcode, payload: &[u8], count: usize) -> Vec<u8> {
    client_frame(opcode, true, payload).repeat(count)
}

/// Feeds `input` in reads of `read_size` bytes, echoes every message, and drains the
/// output; returns the bytes written.
fn echo(server: &mut Connection, input: &[u8], read_size: usize) -> usize {
    let mut written = 0;
    for chunk in input.chunks(read_size) {
        server.handle_data(chunk);
        while let Some(event) = server.poll_event() {
            if let Event::Message(message) = event {
                server.send(message).expect("open");
            }
        }
        let buffer = server.send_buffer();
        while buffer.has_remaining() {
            let n = buffer.chunk().len();
            written += n;
            buffer.advance(n);
        }
    }
    written
}

fn assert_no_allocation_in_steady_state(opcode: Opcode, payload: &[u8], per_read: usize) {
    assert_no_allocation_with_reads(opcode, payload, per_read, usize::MAX);
}

/// As [`assert_no_allocation_in_steady_state`], with reads of at most `read_size` bytes
/// that cut frames anywhere.
fn assert_no_allocation_with_reads(
    opcode: Opcode,
    payload: &[u8],
    per_read: usize,
    read_size: usize,
) {
    let mut server = Connection::after_handshake(Side::Server, Config::default(), Instant::now());
    let input = client_frames(opcode, payload, per_read);
    let read_size = read_size.min(input.len());
    // Warm up: buffers and queues reach their working size.
    for _ in 0..16 {
        echo(&mut server, &input, read_size);
    }
    let (written, allocated) = allocations_during(|| {
        (0..1_000)
            .map(|_| echo(&mut server, &input, read_size))
            .sum::<usize>()
    });
    assert!(written >= 1_000 * per_read * payload.len());
    assert_eq!(
        allocated,
        0,
        "{allocated} allocations for {} echoed messages",
        1_000 * per_read
    );
}

#[test]
fn echoing_small_text_messages_allocates_nothing() {
    assert_no_allocation_in_steady_state(Opcode::Text, b"twenty bytes of text", 32);
}

#[test]
fn echoing_16_kib_binary_messages_allocates_nothing() {
    assert_no_allocation_in_steady_state(Opcode::Binary, &[7u8; 16 << 10], 3);
}

#[test]
fn echoing_one_message_per_read_allocates_nothing() {
    assert_no_allocation_in_steady_state(Opcode::Text, b"hello", 1);
}

#[test]
fn echoing_frames_cut_across_reads_allocates_nothing() {
    assert_no_allocation_with_reads(Opcode::Text, b"twenty bytes of text", 100, 1000);
    assert_no_allocation_with_reads(Opcode::Binary, &[7u8; 16 << 10], 4, 5000);
}
