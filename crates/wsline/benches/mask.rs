//! Unmasking (RFC 6455 §5.3): the fast path against its byte-by-byte twin, 16 B to 1 MiB.
//! The target is at least 4 GB/s for 64 KiB payloads.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use wsline::proto::{apply_mask, apply_mask_scalar};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const SIZES: [usize; 6] = [16, 128, 1 << 10, 16 << 10, 64 << 10, 1 << 20];

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in SIZES {
        let mut buf = vec![0x5Au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("fast", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY), 0));
        });
        group.bench_with_input(BenchmarkId::new("scalar", size), &size, |b, _| {
            b.iter(|| apply_mask_scalar(black_box(&mut buf), black_box(KEY), 0));
        });
    }
    group.finish();

    // A payload that starts at an odd address and key phase, as the second piece of a frame
    // read in two parts does.
    let mut group = c.benchmark_group("mask_unaligned");
    let size = 64 << 10;
    let mut buf = vec![0x5Au8; size + 1];
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function(BenchmarkId::new("fast", size), |b| {
        b.iter(|| apply_mask(black_box(&mut buf[1..]), black_box(KEY), 3));
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    mask(&mut criterion);
    criterion.final_summary();
}
