//! UTF-8 validation of text messages (RFC 6455 §8.1): the validator the core uses
//! (`simdutf8`) beside the standard library's, and what validation costs a `Connection`
//! receiving text instead of binary.

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{masked_frames, text};
use criterion::{BenchmarkId, Criterion, Throughput};
use wsline::proto::{Connection, Event, Opcode, Side};
use wsline::Config;

const SIZES: [usize; 4] = [20, 1 << 10, 64 << 10, 1 << 20];

fn validators(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8_validate");
    for size in SIZES {
        for (kind, ascii) in [("ascii", true), ("mixed", false)] {
            let text = text(size, ascii).into_bytes();
            group.throughput(Throughput::Bytes(text.len() as u64));
            let id = format!("{kind}_{size}");
            group.bench_function(BenchmarkId::new("simdutf8", &id), |b| {
                b.iter(|| simdutf8::basic::from_utf8(black_box(&text)).is_ok());
            });
            group.bench_function(BenchmarkId::new("std", &id), |b| {
                b.iter(|| std::str::from_utf8(black_box(&text)).is_ok());
            });
        }
    }
    group.finish();
}

/// One 64 KiB message, as text (validated) and as binary, through a server connection.
fn in_connection(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8_in_connection");
    let size = 64 << 10;
    for (kind, ascii) in [("ascii", true), ("mixed", false)] {
        let payload = text(size, ascii);
        group.throughput(Throughput::Bytes(payload.len() as u64));
        for (name, opcode) in [("text", Opcode::Text), ("binary", Opcode::Binary)] {
            let input = masked_frames(opcode, payload.as_bytes(), 1);
            let config = Config {
                ping_interval: None,
                ..Config::default()
            };
            let mut server = Connection::after_handshake(Side::Server, config, Instant::now());
            group.bench_function(BenchmarkId::new(name, kind), |b| {
                b.iter(|| {
                    server.handle_data(black_box(&input));
                    let Some(Event::Message(message)) = server.poll_event() else {
                        panic!("a message");
                    };
                    black_box(message)
                });
            });
        }
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    validators(&mut criterion);
    in_connection(&mut criterion);
    criterion.final_summary();
}
