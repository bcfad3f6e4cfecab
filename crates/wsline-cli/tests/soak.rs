//! Soak tests: `wsline serve` (both layers) under sustained load and misbehaving-but-valid
//! peers, from this separate process over 127.0.0.1. Each prints its figures (run with
//! `--nocapture` to see them) and asserts the behaviour users rely on — memory bounded, every
//! client served or closed with its code — never a timing beyond generous sanity bounds.
//!
//! Sizes are scaled for CI; `WSLINE_SOAK_SCALE=N` multiplies the client counts.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsline::sync::client::connect_with;
use wsline::{ConnectConfig, Message};

use common::process::DEADLINE;
use common::{rss_kib, serve};

/// `WSLINE_SOAK_SCALE` (default 1) times `count`.
fn scaled(count: usize) -> usize {
    let scale = std::env::var("WSLINE_SOAK_SCALE")
        .ok()
        .and_then(|scale| scale.parse().ok())
        .unwrap_or(1);
    count * scale
}

/// A raw client that completed the handshake (and read the 101 to its end).
fn open_raw(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the response head");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    stream
}

/// A masked binary frame of `len` bytes (the all-zero key: masking is still applied).
fn binary_frame(len: usize) -> Vec<u8> {
    let mut frame = vec![0x82];
    match len {
        0..=125 => frame.push(0x80 | len as u8),
        126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0; 4]);
    frame.resize(frame.len() + len, b'x');
    frame
}

/// The `q` quantile of `samples` (sorted in place).
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[index]
}

fn client_config() -> ConnectConfig {
    let mut config = ConnectConfig::default();
    config.protocol.open_timeout = Some(DEADLINE);
    config.protocol.close_timeout = Some(DEADLINE);
    config.protocol.ping_interval = None;
    config
}

/// 300 clients send 64 KiB messages as fast as they can and never read their echoes, while
/// a normal client measures its echo latency. Reading a connection stops once its unread
/// echoes reach the high-water mark, so the server's memory is bounded by the clients times
/// that mark (and a message in flight each), and the normal client stays fast.
/// With a `budget` (bytes), the server's queued output stays near it: the bound is the
/// budget instead of the clients times the mark.
fn slow_readers(args: &[&str], budget: Option<usize>) {
    let slow = scaled(300);
    let message = 64 << 10;
    let high_water = wsline::DEFAULT_SEND_HIGH_WATER;
    let budget_arg = budget.unwrap_or(0).to_string();
    let mut all_args = vec!["--no-compression", "--send-budget", &budget_arg];
    all_args.extend_from_slice(args);
    let (server, addr) = serve(&all_args);
    let pid = server.id();
    let normal = connect_with(&format!("ws://{addr}/"), client_config()).expect("connect");
    normal.send_text("warm up").unwrap();
    normal.recv_timeout(DEADLINE).unwrap().expect("an echo");
    let baseline = rss_kib(pid).expect("the server's RSS");

    let stop = Arc::new(AtomicBool::new(false));
    let frame = Arc::new(binary_frame(message));
    let floods: Vec<_> = (0..slow)
        .map(|_| {
            let stream = open_raw(addr);
            let (stop, frame) = (Arc::clone(&stop), Arc::clone(&frame));
            std::thread::spawn(move || {
                let mut stream = stream;
                stream
                    .set_write_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                let mut written = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    match stream.write(&frame[written % frame.len()..]) {
                        Ok(n) => written += n,
                        Err(error)
                            if matches!(
                                error.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
                written
            })
        })
        .collect();

    let window = Duration::from_secs(4);
    let started = Instant::now();
    let mut peak = baseline;
    let mut curve = Vec::new();
    let mut latencies = Vec::new();
    while started.elapsed() < window {
        let sent = Instant::now();
        normal.send_text("are you there?").unwrap();
        let echo = normal.recv_timeout(DEADLINE).unwrap();
        assert_eq!(echo, Some(Message::text("are you there?")));
        latencies.push(sent.elapsed());
        let rss = rss_kib(pid).expect("the server's RSS");
        peak = peak.max(rss);
        if curve
            .last()
            .is_none_or(|(at, _)| sent - *at >= Duration::from_millis(500))
        {
            curve.push((sent, rss));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let flooded: usize = floods
        .into_iter()
        .map(|flood| flood.join().expect("flood thread"))
        .sum();
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid).expect("the server's RSS");

    let p50 = quantile(&mut latencies, 0.5);
    let p99 = quantile(&mut latencies, 0.99);
    let per_client = (peak - baseline) as f64 / slow as f64;
    let curve: Vec<String> = curve
        .iter()
        .map(|(at, rss)| format!("{:.1}s:{}MiB", (*at - started).as_secs_f64(), rss >> 10))
        .collect();
    println!(
        "slow readers {args:?}: {slow} clients × {message} B messages, high-water {high_water} B, \
         budget {budget:?}: \
         RSS {} → peak {} KiB ({per_client:.0} KiB per slow client), {} KiB after they left; \
         curve {}; normal client p50 {p50:?} p99 {p99:?} over {} echoes; {} MiB flooded",
        baseline,
        peak,
        after,
        curve.join(" "),
        latencies.len(),
        flooded >> 20,
    );
    // The queued output (the clients times the mark, or the budget), and per slow client
    // what input and turn overshoot hold: the message being read, the buffer it was read
    // into, an echo queued past the mark that still pins its message's buffer — with slack
    // for the allocator. At the old 4 MiB mark and no budget the same run held 4.2 MiB per
    // client, 1.25 GiB in all.
    let queued = budget.map_or(slow * high_water, |budget| budget.min(slow * high_water));
    let bound_kib = (queued + slow * 6 * message) >> 10;
    let grown_kib = peak - baseline;
    assert!(
        grown_kib <= bound_kib,
        "the server grew by {grown_kib} KiB, over {bound_kib} KiB"
    );
}

#[test]
fn slow_readers_keep_the_memory_of_the_sync_server_bounded() {
    slow_readers(&[], None);
}

#[test]
fn slow_readers_keep_the_memory_of_the_tokio_server_bounded() {
    slow_readers(&["--tokio"], None);
}

#[test]
fn slow_readers_keep_the_sync_server_within_its_send_budget() {
    slow_readers(&[], Some(16 << 20));
}

#[test]
fn slow_readers_keep_the_tokio_server_within_its_send_budget() {
    slow_readers(&["--tokio"], Some(16 << 20));
}
