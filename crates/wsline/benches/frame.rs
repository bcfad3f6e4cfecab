//! Frame headers (RFC 6455 §5.2) and whole frames: parse, encode and decode, beside
//! tungstenite's public frame API where it offers the same operation.

use std::hint::black_box;
use std::io::Cursor;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{FrameHeader as TungsteniteHeader, FrameSocket};
use wsline::proto::{Frame, FrameHeader, Opcode, Rsv};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Headers of the three sizes: 7-bit length unmasked, 16-bit length masked, 64-bit length
/// masked.
fn headers() -> [(&'static str, FrameHeader); 3] {
    let header = |mask, payload_len| FrameHeader {
        fin: true,
        rsv: Rsv::NONE,
        opcode: Opcode::Binary,
        mask,
        payload_len,
    };
    [
        ("2_bytes", header(None, 20)),
        ("8_bytes", header(Some(KEY), 16 << 10)),
        ("14_bytes", header(Some(KEY), 1 << 20)),
    ]
}

fn tungstenite_header(header: &FrameHeader) -> TungsteniteHeader {
    TungsteniteHeader {
        is_final: header.fin,
        opcode: OpCode::Data(Data::Binary),
        mask: header.mask,
        ..TungsteniteHeader::default()
    }
}

fn header_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_parse");
    for (name, header) in headers() {
        let mut bytes = Vec::new();
        header.encode(&mut bytes);
        group.bench_function(BenchmarkId::new("wsline", name), |b| {
            b.iter(|| FrameHeader::parse(black_box(&bytes)).unwrap().unwrap());
        });
        group.bench_function(BenchmarkId::new("tungstenite", name), |b| {
            b.iter(|| {
                let mut cursor = Cursor::new(black_box(&bytes[..]));
                TungsteniteHeader::parse(&mut cursor).unwrap().unwrap()
            });
        });
    }
    group.finish();
}

fn header_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("header_encode");
    for (name, header) in headers() {
        let mut out = Vec::with_capacity(16);
        group.bench_function(BenchmarkId::new("wsline", name), |b| {
            b.iter(|| {
                out.clear();
                black_box(&header).encode(&mut out);
                black_box(out.len())
            });
        });
        let theirs = tungstenite_header(&header);
        group.bench_function(BenchmarkId::new("tungstenite", name), |b| {
            b.iter(|| {
                out.clear();
                black_box(&theirs)
                    .format(black_box(header.payload_len), &mut out)
                    .unwrap();
                black_box(out.len())
            });
        });
    }
    group.finish();
}

/// A buffer of `count` frames of `size` bytes each, masked with `mask` if given.
fn frames(count: usize, size: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = BytesMut::new();
    let frame = Frame::new(Opcode::Binary, vec![0x42; size]);
    for _ in 0..count {
        frame.encode(mask, &mut out);
    }
    out.to_vec()
}

/// Whole frames off a buffer: wsline's `Frame::decode` against tungstenite's `FrameSocket`
/// (which leaves payloads masked, so the shared comparison uses unmasked frames; the masked
/// case shows what unmasking in place adds).
fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_decode");
    for (name, count, size) in [("20B", 10_000, 20), ("16KiB", 64, 16 << 10)] {
        for mask in [None, Some(KEY)] {
            let input = frames(count, size, mask);
            let masked = if mask.is_some() { "masked" } else { "unmasked" };
            group.throughput(Throughput::Bytes(input.len() as u64));
            group.bench_function(BenchmarkId::new(format!("wsline/{masked}"), name), |b| {
                b.iter(|| {
                    let mut buf = BytesMut::from(&input[..]);
                    let mut n = 0;
                    while let Some(frame) = Frame::decode(&mut buf, 1 << 20).unwrap() {
                        black_box(&frame.payload);
                        n += 1;
                    }
                    assert_eq!(n, count);
                });
            });
            if mask.is_some() {
                continue;
            }
            group.bench_function(BenchmarkId::new("tungstenite/unmasked", name), |b| {
                b.iter(|| {
                    let mut socket = FrameSocket::new(Cursor::new(&input[..]));
                    let mut n = 0;
                    while let Some(frame) = socket.read(Some(1 << 20)).unwrap() {
                        black_box(frame.payload());
                        n += 1;
                    }
                    assert_eq!(n, count);
                });
            });
        }
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    header_parse(&mut criterion);
    header_encode(&mut criterion);
    decode(&mut criterion);
    criterion.final_summary();
}
