//! permessage-deflate costs: raw compress/decompress throughput of JSON-like text, the same
//! messages through a `Connection` with deflate on and off, and (printed before the
//! benchmarks) the resident memory of 1,000 connections with and without deflate.
//!
//! `cargo bench --bench deflate`; `cargo bench --bench deflate -- memory` prints only the
//! memory report.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput};
use wsline::extension::deflate::PerMessageDeflate;
use wsline::extension::{Extension, ExtensionFactory, ExtensionParams, FramePosition};
use wsline::proto::{Connection, Event, Side, Transmit};
use wsline::Config;

const SIZES: [(usize, &str); 3] = [(1 << 10, "1KiB"), (16 << 10, "16KiB"), (1 << 20, "1MiB")];

const WHOLE: FramePosition = FramePosition {
    first: true,
    fin: true,
};

/// Typical API traffic: a JSON array of small, similar objects.
fn json(len: usize) -> String {
    let mut out = String::from("[");
    let mut n = 0u64;
    while out.len() < len {
        out.push_str(&format!(
            "{{\"id\":{n},\"name\":\"item-{}\",\"price\":{}.{:02},\"tags\":[\"a{}\",\"b\"],\"active\":{}}},",
            n * 7919 % 1000,
            n * 31 % 500,
            n % 100,
            n % 13,
            n % 3 == 0
        ));
        n += 1;
    }
    out.truncate(len);
    out
}

fn config(deflate: Option<PerMessageDeflate>) -> Config {
    Config {
        max_message_size: Some(2 << 20),
        ping_interval: None,
        open_timeout: None,
        extensions: deflate
            .into_iter()
            .map(|d| Arc::new(d) as Arc<dyn ExtensionFactory>)
            .collect(),
        ..Config::default()
    }
}

/// The offer (and answer) of both ends resetting their window after each message, so that
/// every benchmarked message costs the same; with `takeover`, the plain offer.
fn params(takeover: bool) -> ExtensionParams {
    let params = ExtensionParams::new("permessage-deflate");
    if takeover {
        return params;
    }
    params
        .param("server_no_context_takeover", None)
        .param("client_no_context_takeover", None)
}

/// The extension a server negotiates for [`params`].
fn negotiated(deflate: &PerMessageDeflate, takeover: bool) -> Box<dyn Extension> {
    deflate
        .server_accept(&[params(takeover)])
        .expect("the offer is valid")
        .1
}

fn level(level: u8) -> PerMessageDeflate {
    PerMessageDeflate {
        compression_level: level,
        ..PerMessageDeflate::default()
    }
}

fn compress_decompress(c: &mut Criterion) {
    for (len, name) in SIZES {
        let text = json(len);
        let mut group = c.benchmark_group(format!("deflate/{name}"));
        group.throughput(Throughput::Bytes(len as u64));
        for lvl in [1, 2, 6] {
            let mut extension = negotiated(&level(lvl), false);
            let mut out = BytesMut::new();
            extension
                .encode(text.as_bytes(), WHOLE, Some(true), &mut out)
                .expect("compresses");
            println!(
                "deflate level {lvl}: {name} of JSON compresses to {} bytes ({:.1}%)",
                out.len(),
                100.0 * out.len() as f64 / len as f64
            );
            group.bench_function(BenchmarkId::new("compress", format!("level{lvl}")), |b| {
                b.iter(|| {
                    out.clear();
                    extension
                        .encode(black_box(text.as_bytes()), WHOLE, Some(true), &mut out)
                        .expect("compresses");
                    black_box(out.len())
                });
            });
            let compressed = out.clone().freeze();
            let mut decoder = negotiated(&level(lvl), false);
            group.bench_function(BenchmarkId::new("decompress", format!("level{lvl}")), |b| {
                b.iter(|| {
                    let mut message = BytesMut::new();
                    decoder
                        .decode(black_box(&compressed), &mut message, usize::MAX)
                        .expect("decodes");
                    decoder
                        .finish_decode(&mut message, usize::MAX)
                        .expect("ends");
                    assert_eq!(message.len(), len);
                    black_box(message)
                });
            });
        }
        group.finish();
    }
}

/// A server connection whose handshake negotiated `deflate`, if any.
fn server(deflate: Option<&PerMessageDeflate>, takeover: bool) -> Connection {
    let mut connection =
        Connection::after_handshake(Side::Server, config(deflate.cloned()), Instant::now());
    if let Some(deflate) = deflate {
        connection.set_extensions(vec![negotiated(deflate, takeover)]);
    }
    connection
}

/// What a client with `deflate` (and no context takeover) writes for one text message.
fn client_wire(deflate: Option<&PerMessageDeflate>, text: &str) -> Vec<u8> {
    let mut client =
        Connection::after_handshake(Side::Client, config(deflate.cloned()), Instant::now());
    if let Some(deflate) = deflate {
        let extension = deflate
            .client_accept(&params(false))
            .expect("the response is valid");
        client.set_extensions(vec![extension]);
    }
    client.send_text(text).expect("open");
    let mut wire = Vec::new();
    while let Some(Transmit::Bytes(bytes)) = client.poll_transmit() {
        wire.extend_from_slice(&bytes);
    }
    wire
}

fn through_connection(c: &mut Criterion) {
    let modes = [
        ("off", None),
        ("default", Some(PerMessageDeflate::default())),
    ];
    for (len, name) in SIZES {
        let text = json(len);
        let mut group = c.benchmark_group(format!("connection/{name}"));
        group.throughput(Throughput::Bytes(len as u64));
        for (mode, deflate) in &modes {
            let mut sender = server(deflate.as_ref(), false);
            group.bench_function(BenchmarkId::new("send", mode), |b| {
                b.iter(|| {
                    sender.send_text(black_box(&text)).expect("open");
                    let mut sent = 0;
                    while let Some(Transmit::Bytes(bytes)) = sender.poll_transmit() {
                        sent += bytes.len();
                    }
                    black_box(sent)
                });
            });
            let wire = client_wire(deflate.as_ref(), &text);
            let mut receiver = server(deflate.as_ref(), false);
            group.bench_function(BenchmarkId::new("receive", mode), |b| {
                b.iter(|| {
                    receiver.handle_data(black_box(&wire));
                    match receiver.poll_event() {
                        Some(Event::Message(message)) => black_box(message),
                        other => panic!("expected a message, got {other:?}"),
                    }
                });
            });
        }
        group.finish();
    }
}

/// Resident memory of this process in bytes (Linux), 0 elsewhere.
fn resident() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Prints the resident memory per connection of 1,000 server connections: idle after the
/// handshake, then after each received and sent one 1 KiB message.
fn memory_per_connection() {
    const CONNECTIONS: usize = 1000;
    let text = json(1 << 10);
    let wide = PerMessageDeflate {
        window_bits: 15,
        memory_level: 8,
        ..PerMessageDeflate::default()
    };
    let cases = [
        ("deflate off", None, true),
        (
            "deflate defaults (12-bit window, memLevel 5)",
            Some(PerMessageDeflate::default()),
            true,
        ),
        ("deflate 15-bit window, memLevel 8", Some(wide), true),
        (
            "deflate defaults, no context takeover",
            Some(PerMessageDeflate::default()),
            false,
        ),
    ];
    for (name, deflate, takeover) in cases {
        let wire = client_wire(deflate.as_ref(), &text);
        let before = resident();
        let mut connections: Vec<Connection> = (0..CONNECTIONS)
            .map(|_| server(deflate.as_ref(), takeover))
            .collect();
        let idle = resident();
        for connection in &mut connections {
            connection.handle_data(&wire);
            let Some(Event::Message(message)) = connection.poll_event() else {
                panic!("expected the message");
            };
            connection.send(message).expect("open");
            while connection.poll_transmit().is_some() {}
        }
        let active = resident();
        println!(
            "memory per connection, {name}: idle {} B, after one message each way {} B",
            idle.saturating_sub(before) / CONNECTIONS,
            active.saturating_sub(before) / CONNECTIONS
        );
        drop(connections);
    }
}

fn main() {
    memory_per_connection();
    if std::env::args().any(|arg| arg == "memory") {
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    compress_decompress(&mut criterion);
    through_connection(&mut criterion);
    criterion.final_summary();
}
