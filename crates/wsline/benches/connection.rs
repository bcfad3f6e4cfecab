//! A whole server `Connection` without sockets: a buffer of masked client frames fed in
//! 64 KiB reads, messages drained; and the same work through tungstenite's `WebSocket` over an
//! in-memory stream. Also the send side: messages queued and the bytes taken.

mod common;

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use common::{masked_frames, text, LoopStream, READ_CHUNK};
use criterion::{BenchmarkId, Criterion, Throughput};
use tungstenite::protocol::Role;
use tungstenite::WebSocket;
use wsline::proto::{Connection, Event, Opcode, Side};
use wsline::{Config, Message};

/// The cases: message size and how many messages make one buffer.
const CASES: [(&str, usize, usize); 2] = [("20B", 20, 5_000), ("16KiB", 16 << 10, 64)];

fn config() -> Config {
    Config {
        ping_interval: None,
        ..Config::default()
    }
}

fn receive(c: &mut Criterion) {
    let mut group = c.benchmark_group("server_receive");
    for (name, size, count) in CASES {
        for (kind, opcode) in [("text", Opcode::Text), ("binary", Opcode::Binary)] {
            let input = masked_frames(opcode, text(size, true).as_bytes(), count);
            group.throughput(Throughput::Elements(count as u64));
            let id = format!("{kind}_{name}");
            let mut server = Connection::after_handshake(Side::Server, config(), Instant::now());
            group.bench_function(BenchmarkId::new("wsline", &id), |b| {
                b.iter(|| {
                    let mut messages = 0;
                    for chunk in input.chunks(READ_CHUNK) {
                        server.handle_data(chunk);
                        while let Some(event) = server.poll_event() {
                            if let Event::Message(message) = event {
                                black_box(message);
                                messages += 1;
                            }
                        }
                    }
                    assert_eq!(messages, count);
                });
            });
            let stream = LoopStream::new(input);
            let mut socket = WebSocket::from_raw_socket(stream, Role::Server, None);
            group.bench_function(BenchmarkId::new("tungstenite", &id), |b| {
                b.iter(|| {
                    for _ in 0..count {
                        black_box(socket.read().unwrap());
                    }
                });
            });
        }
    }
    group.finish();
}

fn send(c: &mut Criterion) {
    let mut group = c.benchmark_group("server_send");
    for (name, size, count) in CASES {
        let payload = Bytes::from(vec![0x42; size]);
        group.throughput(Throughput::Elements(count as u64));
        let id = format!("binary_{name}");
        let mut server = Connection::after_handshake(Side::Server, config(), Instant::now());
        group.bench_function(BenchmarkId::new("wsline", &id), |b| {
            b.iter(|| {
                for _ in 0..count {
                    server.send(Message::Binary(payload.clone())).unwrap();
                }
                let mut written = 0;
                while let Some(transmit) = server.poll_transmit() {
                    if let wsline::proto::Transmit::Bytes(bytes) = transmit {
                        written += black_box(bytes).len();
                    }
                }
                assert!(written >= count * size);
            });
        });
        let stream = LoopStream::new(vec![0]);
        let mut socket = WebSocket::from_raw_socket(stream, Role::Server, None);
        group.bench_function(BenchmarkId::new("tungstenite", &id), |b| {
            b.iter(|| {
                for _ in 0..count {
                    let message = tungstenite::Message::Binary(payload.clone());
                    socket.write(message).unwrap();
                }
                socket.flush().unwrap();
            });
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    receive(&mut criterion);
    send(&mut criterion);
    criterion.final_summary();
}
