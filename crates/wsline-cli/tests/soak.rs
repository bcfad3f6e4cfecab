//! Soak tests: `wsline serve` (both layers) under sustained load and misbehaving-but-valid
//! peers, from this separate process over 127.0.0.1. Each prints its figures (run with
//! `--nocapture` to see them) and asserts the behaviour users rely on — memory bounded, every
//! client served or closed with its code — never a timing beyond generous sanity bounds.
//!
//! Sizes are scaled for CI; `WSLINE_SOAK_SCALE=N` multiplies the client counts, and
//! `WSLINE_SOAK_MESSAGE=BYTES` sets the size of the messages written a byte at a time
//! (default 16 KiB; the full soak is 1 MiB: `WSLINE_SOAK_MESSAGE=1048576`).

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsline::sync::client::connect_with;
use wsline::{ConnectConfig, Message};

use common::process::DEADLINE;
use common::{open_raw, rss_kib, serve};

/// `WSLINE_SOAK_SCALE` (default 1) times `count`.
fn scaled(count: usize) -> usize {
    let scale = std::env::var("WSLINE_SOAK_SCALE")
        .ok()
        .and_then(|scale| scale.parse().ok())
        .unwrap_or(1);
    count * scale
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
    let mut all_args = vec![
        "--no-compression",
        "--send-budget",
        &budget_arg,
        "--trim-memory",
        "1",
    ];
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
    // Once they are gone, what they freed goes back to the OS (glibc: `--trim-memory`).
    let left = Instant::now();
    let given_back = baseline + (32 << 10);
    let mut after = rss_kib(pid).expect("the server's RSS");
    while after > given_back && left.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        after = rss_kib(pid).expect("the server's RSS");
    }
    let given_back_in = left.elapsed();

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
         RSS {} → peak {} KiB ({per_client:.0} KiB per slow client), {} KiB {given_back_in:.1?} \
         after they left; \
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
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert!(
            after <= given_back,
            "the server still held {after} KiB 10 s after the slow readers left \
             ({baseline} KiB before them)"
        );
    }
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

/// Runs `work(i)` for `i` in `0..count` on `threads` threads; returns the results in order.
fn in_parallel<T: Send + 'static>(
    count: usize,
    threads: usize,
    work: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let work = Arc::new(work);
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let work = Arc::clone(&work);
            std::thread::spawn(move || {
                (thread..count)
                    .step_by(threads)
                    .map(|i| (i, work(i)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut results: Vec<(usize, T)> = handles
        .into_iter()
        .flat_map(|handle| handle.join().expect("worker thread"))
        .collect();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, result)| result).collect()
}

/// Fails with what to do when this process may not open `needed` descriptors (the server,
/// started from it, inherits the limit).
fn assert_fd_limit(needed: usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<usize>().ok());
    if let Some(soft) = soft {
        assert!(
            soft >= needed,
            "this test holds {needed} descriptors but the limit is {soft}: raise it (ulimit -n)"
        );
    }
}

/// Waits until the server's open descriptors are back to `baseline` (connections closing
/// in the background), within [`DEADLINE`]; returns the count last seen.
fn fds_settle(pid: u32, baseline: usize) -> usize {
    let started = Instant::now();
    loop {
        let fds = common::open_fds(pid).expect("the server's descriptors");
        if fds <= baseline || started.elapsed() > DEADLINE {
            return fds;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 20,000 clients in turn (8 at a time) connect, echo one message and close: every one is
/// served, and the server's descriptors and memory come back to where they were.
fn connect_echo_close_cycles(args: &[&str]) {
    let cycles = scaled(20_000);
    let (server, addr) = serve(args);
    let pid = server.id();
    let url = format!("ws://{addr}/");
    // A first cycle warms up what every connection reuses.
    let warm = connect_with(&url, client_config()).expect("connect");
    warm.close(wsline::CloseCode::NORMAL, "").expect("close");
    let fds = fds_settle(pid, 0);
    let rss = rss_kib(pid).expect("the server's RSS");
    let started = Instant::now();
    let failures: Vec<String> = in_parallel(cycles, 8, move |i| {
        let text = format!("cycle {i}");
        let ws = connect_with(&url, client_config()).map_err(|e| format!("{i}: {e}"))?;
        ws.send_text(&text).map_err(|e| format!("{i}: {e}"))?;
        match ws.recv_timeout(DEADLINE) {
            Ok(Some(echo)) if echo == Message::text(text.as_str()) => {}
            other => return Err(format!("{i}: {other:?}")),
        }
        ws.close(wsline::CloseCode::NORMAL, "")
            .map_err(|e| format!("{i}: close: {e}"))
    })
    .into_iter()
    .filter_map(Result::err)
    .collect();
    let elapsed = started.elapsed();
    let fds_after = fds_settle(pid, fds);
    let rss_after = rss_kib(pid).expect("the server's RSS");
    println!(
        "cycles {args:?}: {cycles} connect/echo/close in {elapsed:.1?} ({:.0}/s), {} failed; \
         fds {fds} → {fds_after}; RSS {rss} → {rss_after} KiB",
        cycles as f64 / elapsed.as_secs_f64(),
        failures.len(),
    );
    assert!(
        failures.is_empty(),
        "{:?}",
        &failures[..failures.len().min(5)]
    );
    assert_eq!(fds_after, fds, "every connection's descriptor is closed");
    assert!(
        rss_after <= rss + (16 << 10),
        "the server kept {} KiB after {cycles} connections",
        rss_after - rss
    );
}

#[test]
fn connect_echo_close_cycles_leave_the_sync_server_as_it_was() {
    connect_echo_close_cycles(&[]);
}

#[test]
fn connect_echo_close_cycles_leave_the_tokio_server_as_it_was() {
    connect_echo_close_cycles(&["--tokio"]);
}

/// 5,000 clients complete the handshake, send half a frame and reset the connection
/// (`SO_LINGER` 0): the server serves a normal client meanwhile and after, and closes every
/// descriptor.
fn resets_mid_frame(args: &[&str]) {
    let clients = scaled(5_000);
    let (server, addr) = serve(args);
    let pid = server.id();
    let fds = fds_settle(pid, 0);
    let half = binary_frame(1000)[..500].to_vec();
    let started = Instant::now();
    in_parallel(clients, 8, move |_| {
        let mut stream = open_raw(addr);
        stream.write_all(&half).expect("half a frame");
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        drop(stream);
    });
    let elapsed = started.elapsed();
    let normal = connect_with(&format!("ws://{addr}/"), client_config()).expect("connect");
    normal.send_text("after the resets").unwrap();
    assert_eq!(
        normal.recv_timeout(DEADLINE).unwrap(),
        Some(Message::text("after the resets"))
    );
    drop(normal);
    let fds_after = fds_settle(pid, fds);
    println!("resets {args:?}: {clients} clients reset mid-frame in {elapsed:.1?}; fds {fds} → {fds_after}");
    assert_eq!(
        fds_after, fds,
        "every reset connection's descriptor is closed"
    );
}

#[test]
fn clients_resetting_mid_frame_leave_the_sync_server_serving() {
    resets_mid_frame(&[]);
}

#[test]
fn clients_resetting_mid_frame_leave_the_tokio_server_serving() {
    resets_mid_frame(&["--tokio"]);
}

/// A small deterministic generator (xorshift), so that a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `connections` connections each pipeline `per_connection` messages of random sizes (0 B
/// to 64 KiB, text and binary) without waiting, while reading the echoes: each comes back
/// whole, in order, with its type and checksum. Both sides ping every second with a 20 s
/// timeout: the pongs queue behind the messages, and the busy connections stay open. (With
/// 5 s, a run of the whole suite saw a client's ping time out against the tokio server:
/// these are debug builds, 32 connections pipelining megabytes through one 2-core machine,
/// where a connection went 5 s without a byte back.)
fn pipelined_random_messages(args: &[&str], connections: usize, per_connection: usize) {
    let connections = scaled(connections);
    let keepalive = ["--ping-interval", "1", "--ping-timeout", "20"];
    let (_server, addr) = serve(&[args, &keepalive[..]].concat());
    let started = Instant::now();
    let totals = in_parallel(connections, connections.min(32), move |i| {
        let mut config = client_config();
        config.protocol.max_message_size = Some(1 << 20);
        config.protocol.ping_interval = Some(Duration::from_secs(1));
        config.protocol.ping_timeout = Some(Duration::from_secs(20));
        let ws = Arc::new(connect_with(&format!("ws://{addr}/"), config).expect("connect"));
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ i as u64);
        let messages: Vec<Message> = (0..per_connection)
            .map(|_| {
                let len = (rng.next() % (64 << 10)) as usize;
                let byte = (rng.next() % 26) as u8 + b'a';
                if rng.next() % 2 == 0 {
                    Message::text(String::from_utf8(vec![byte; len]).unwrap())
                } else {
                    Message::binary(vec![byte; len])
                }
            })
            .collect();
        let reader = {
            let ws = Arc::clone(&ws);
            let expected = messages.clone();
            std::thread::spawn(move || {
                for (n, want) in expected.iter().enumerate() {
                    let got = ws
                        .recv_timeout(DEADLINE)
                        .unwrap_or_else(|e| panic!("connection {i}, echo {n}: {e}"))
                        .unwrap_or_else(|| panic!("connection {i}, echo {n} in time"));
                    assert_eq!(got.is_text(), want.is_text(), "connection {i}, echo {n}");
                    assert_eq!(
                        checksum(got.as_bytes()),
                        checksum(want.as_bytes()),
                        "connection {i}, echo {n}"
                    );
                }
            })
        };
        let mut bytes = 0;
        for message in &messages {
            bytes += message.len();
            ws.send(message.clone()).expect("send");
        }
        reader.join().expect("every echo in order");
        ws.close(wsline::CloseCode::NORMAL, "").expect("close");
        bytes
    });
    let bytes: usize = totals.iter().sum();
    println!(
        "pipelined {args:?}: {connections} × {per_connection} messages, {} MiB each way, in {:.1?}",
        bytes >> 20,
        started.elapsed()
    );
}

/// FNV-1a over `bytes` and their length.
fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[test]
fn pipelined_random_messages_come_back_in_order_from_the_sync_server() {
    pipelined_random_messages(&["--no-compression"], 100, 500);
}

#[test]
fn pipelined_random_messages_come_back_in_order_from_the_tokio_server() {
    pipelined_random_messages(&["--tokio", "--no-compression"], 100, 500);
}

/// With permessage-deflate on both sides, fewer: these test binaries (and the `wsline`
/// they run) are debug builds, which compress at a few MB/s.
#[test]
fn pipelined_compressed_messages_come_back_in_order_from_the_sync_server() {
    pipelined_random_messages(&[], 8, 100);
}

#[test]
fn pipelined_compressed_messages_come_back_in_order_from_the_tokio_server() {
    pipelined_random_messages(&["--tokio"], 8, 100);
}

/// Reads the next unmasked server frame from `stream` that is not a ping (pings are
/// answered): its first byte and its payload.
fn read_server_frame(stream: &mut std::net::TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    loop {
        let (first, payload) = read_any_server_frame(stream)?;
        if first != 0x89 {
            return Ok((first, payload));
        }
        stream.write_all(&client_frame(0x8a, &payload))?;
    }
}

fn read_any_server_frame(stream: &mut std::net::TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    use std::io::Read;
    let mut head = [0; 2];
    stream.read_exact(&mut head)?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut len = [0; 2];
            stream.read_exact(&mut len)?;
            usize::from(u16::from_be_bytes(len))
        }
        127 => {
            let mut len = [0; 8];
            stream.read_exact(&mut len)?;
            usize::try_from(u64::from_be_bytes(len)).expect("a length that fits")
        }
        len => usize::from(len),
    };
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload)?;
    Ok((head[0], payload))
}

/// A masked client frame (the all-zero key) with `first` as its first byte.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = binary_frame(payload.len());
    frame[0] = first;
    let start = frame.len() - payload.len();
    frame[start..].copy_from_slice(payload);
    frame
}

/// Closes a raw client cleanly: a masked 1000, the server's 1000 back, then its TCP close.
fn close_raw(stream: &mut std::net::TcpStream) -> Result<(), String> {
    use std::io::Read;
    stream
        .write_all(&client_frame(0x88, &1000u16.to_be_bytes()))
        .map_err(|e| format!("close: {e}"))?;
    let (first, payload) = read_server_frame(stream).map_err(|e| format!("close reply: {e}"))?;
    if first != 0x88 || payload.get(..2) != Some(&1000u16.to_be_bytes()[..]) {
        return Err(format!("close reply {first:#x} {payload:?}"));
    }
    match stream.read(&mut [0; 1]) {
        Ok(0) => Ok(()),
        other => Err(format!("after the close: {other:?}")),
    }
}

/// A storm of 5,000 handshakes from 64 threads, every connection held open: each gets its
/// 101, then echoes a message and closes cleanly, and the server's descriptors come back.
fn handshake_storm(args: &[&str]) {
    let clients = scaled(5_000);
    assert_fd_limit(clients + 100);
    // The raw clients answer no ping until their echo, however long the storm takes.
    let (server, addr) = serve(&[args, &["--ping-interval", "0"][..]].concat());
    let pid = server.id();
    let fds = fds_settle(pid, 0);
    let started = Instant::now();
    let held = in_parallel(clients, 64, move |_| open_raw(addr));
    let elapsed = started.elapsed();
    let fds_held = common::open_fds(pid).expect("the server's descriptors");
    let rss_held = rss_kib(pid).expect("the server's RSS");
    let failures: Vec<String> = held
        .into_iter()
        .enumerate()
        .filter_map(|(i, mut stream)| {
            let text = format!("storm {i}");
            let echoed = stream
                .write_all(&client_frame(0x81, text.as_bytes()))
                .map_err(|e| e.to_string())
                .and_then(|()| read_server_frame(&mut stream).map_err(|e| e.to_string()));
            match echoed {
                Ok((0x81, payload)) if payload == text.as_bytes() => close_raw(&mut stream),
                other => Err(format!("echo: {other:?}")),
            }
            .err()
            .map(|e| format!("{i}: {e}"))
        })
        .collect();
    let fds_after = fds_settle(pid, fds);
    println!(
        "handshake storm {args:?}: {clients} handshakes in {elapsed:.1?} ({:.0}/s), all held: \
         fds {fds} → {fds_held} → {fds_after}, RSS {rss_held} KiB held; {} failed",
        clients as f64 / elapsed.as_secs_f64(),
        failures.len(),
    );
    assert!(
        failures.is_empty(),
        "{:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(
        fds_held >= fds + clients,
        "{fds_held} descriptors for {clients} held connections"
    );
    assert_eq!(fds_after, fds, "every connection's descriptor is closed");
}

#[test]
fn a_storm_of_handshakes_is_served_by_the_sync_server() {
    handshake_storm(&[]);
}

#[test]
fn a_storm_of_handshakes_is_served_by_the_tokio_server() {
    handshake_storm(&["--tokio"]);
}

/// The size of the fragmented messages: `WSLINE_SOAK_MESSAGE` bytes (default 16 KiB, so
/// that CI writes 4.5 million single bytes; 1 MiB is the full soak).
fn fragmented_message_size() -> usize {
    std::env::var("WSLINE_SOAK_MESSAGE")
        .ok()
        .and_then(|size| size.parse().ok())
        .unwrap_or(16 << 10)
        .max(1)
}

/// 200 connections each send a message as 16-byte fragments, written one byte at a time
/// (each its own TCP segment) and interleaved across the connections, so that all of them
/// are mid-message at once; text messages have characters cut across fragments. Each comes
/// back whole, and the server's memory stays within the messages being reassembled.
fn fragments_byte_by_byte(args: &[&str]) {
    let connections = scaled(200);
    let size = fragmented_message_size();
    let max = (size + 1024).to_string();
    let mut all_args = vec!["--no-compression", "--max-message-size", &max];
    all_args.extend_from_slice(args);
    let (server, addr) = serve(&all_args);
    let pid = server.id();
    let baseline = rss_kib(pid).expect("the server's RSS");
    let mut text = String::with_capacity(size);
    for ch in "héllo wörld ✓ ".chars().cycle() {
        if text.len() + ch.len_utf8() > size {
            break;
        }
        text.push(ch);
    }
    let messages: Vec<(u8, Vec<u8>)> = (0..connections)
        .map(|i| {
            if i % 2 == 0 {
                (0x1, text.as_bytes().to_vec())
            } else {
                (0x2, (0..size).map(|b| (b * 7 + i) as u8).collect())
            }
        })
        .collect();
    let wires: Vec<Vec<u8>> = messages
        .iter()
        .map(|(opcode, payload)| {
            let chunks: Vec<&[u8]> = payload.chunks(16).collect();
            let last = chunks.len() - 1;
            chunks
                .iter()
                .enumerate()
                .flat_map(|(n, chunk)| {
                    let opcode = if n == 0 { *opcode } else { 0x0 };
                    let fin = if n == last { 0x80 } else { 0x00 };
                    client_frame(fin | opcode, chunk)
                })
                .collect()
        })
        .collect();
    let written: usize = wires.iter().map(Vec::len).sum();
    let threads = 32;
    let started = Instant::now();
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(baseline));
    let wires = Arc::new(wires);
    let messages = Arc::new(messages);
    let failures: Vec<String> = {
        let peak = Arc::clone(&peak);
        in_parallel(threads, threads, move |thread| {
            let mine: Vec<usize> = (thread..wires.len()).step_by(threads).collect();
            let mut streams: Vec<_> = mine.iter().map(|_| open_raw(addr)).collect();
            for stream in &streams {
                stream.set_nodelay(true).unwrap();
            }
            let longest = mine.iter().map(|&i| wires[i].len()).max().unwrap_or(0);
            for at in 0..longest {
                for (stream, &i) in streams.iter_mut().zip(&mine) {
                    if let Some(byte) = wires[i].get(at) {
                        stream.write_all(&[*byte]).expect("one byte");
                    }
                }
                if at % 4096 == 0 {
                    let rss = rss_kib(pid).expect("the server's RSS");
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
            }
            mine.iter()
                .zip(&mut streams)
                .filter_map(|(&i, stream)| {
                    let (opcode, payload) = &messages[i];
                    match read_server_frame(stream) {
                        Ok((first, echo)) if first == 0x80 | opcode && echo == *payload => {
                            close_raw(stream).err()
                        }
                        Ok((first, echo)) => Some(format!(
                            "echo {first:#x} of {} bytes, checksum {:x}",
                            echo.len(),
                            checksum(&echo)
                        )),
                        Err(e) => Some(format!("echo: {e}")),
                    }
                    .map(|e| format!("connection {i}: {e}"))
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect()
    };
    let elapsed = started.elapsed();
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "fragments {args:?}: {connections} connections × {size} B messages in 16 B fragments, \
         {written} single-byte writes in {elapsed:.1?}; RSS {baseline} → peak {peak} KiB; {} failed",
        failures.len(),
    );
    assert!(
        failures.is_empty(),
        "{:?}",
        &failures[..failures.len().min(5)]
    );
    // Each connection reassembles its message and queues its echo: a few copies each, with
    // slack for the allocator.
    let bound_kib = (connections * 4 * size + (8 << 20)) >> 10;
    assert!(
        peak - baseline <= bound_kib,
        "the server grew by {} KiB, over {bound_kib} KiB",
        peak - baseline
    );
}

#[test]
fn fragments_written_byte_by_byte_are_reassembled_by_the_sync_server() {
    fragments_byte_by_byte(&[]);
}

#[test]
fn fragments_written_byte_by_byte_are_reassembled_by_the_tokio_server() {
    fragments_byte_by_byte(&["--tokio"]);
}
