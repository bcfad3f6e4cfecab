//! Hostile input against the real sync server on 127.0.0.1 (issue 6): bad handshakes, bad
//! frames, floods and abandoned connections. Each case checks the outcome a raw TCP client
//! reads (an HTTP status or a close code), that nothing piles up past the limits, and that
//! a normal client is served correctly during and after it.

mod support;

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wsline::sync::server::{Connection, Server};
use wsline::{Message, ServerConfig};

use support::{
    assert_echo, close_frame, echo, exclusive, frame, frame_with, request_with, rss_kib,
    server_config, shared, start, wait_until, RawClient, BINARY, CLOSE, CONTINUATION, DEADLINE,
    MASK, PING, PONG, TEXT,
};

fn echo_server() -> Server {
    start(echo, server_config())
}

fn echo_server_with(configure: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = server_config();
    configure(&mut config);
    start(echo, config)
}

// ----- Handshakes -----

/// Sends `request` as the handshake; returns the status and headers of the answer, and
/// checks that the server then closes the connection and still serves a normal client.
fn rejected(server: &Server, request: &[u8]) -> support::Head {
    let mut client = RawClient::connect(server.local_addr());
    // The server may answer and close before it has read everything; what it reads is
    // bounded by its limits either way.
    let _ = client.try_send(request);
    let (head, _body) = client.read_response();
    client.expect_eof();
    assert_echo(server.local_addr());
    head
}

fn status_of(request: impl AsRef<[u8]>) -> u16 {
    let _guard = shared();
    let server = echo_server();
    rejected(&server, request.as_ref()).status
}

#[test]
fn garbage_request_line_gets_400() {
    assert_eq!(status_of("HELLO THERE\r\n\r\n"), 400);
    assert_eq!(
        status_of(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
        400
    );
}

#[test]
fn missing_key_gets_400() {
    let request = request_with("").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_eq!(status_of(request), 400);
}

#[test]
fn duplicate_key_gets_400() {
    let request = request_with("Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n");
    assert_eq!(status_of(request), 400);
}

#[test]
fn invalid_key_gets_400() {
    for key in ["not base64!", "c2hvcnQ=", "dGhlIHNhbXBsZSBub25jZQ==dGhl"] {
        let request = request_with("").replace("dGhlIHNhbXBsZSBub25jZQ==", key);
        assert_eq!(status_of(request), 400, "key {key:?}");
    }
}

#[test]
fn wrong_version_gets_426_with_the_supported_version() {
    let _guard = shared();
    let server = echo_server();
    let request = request_with("").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let head = rejected(&server, request.as_bytes());
    assert_eq!(head.status, 426);
    assert_eq!(head.header("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn non_get_method_gets_405() {
    let request = request_with("").replacen("GET", "POST", 1);
    assert_eq!(status_of(request), 405);
}

#[test]
fn http_1_0_gets_505() {
    let request = request_with("").replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_eq!(status_of(request), 505);
}

#[test]
fn missing_host_gets_400() {
    let request = request_with("").replace("Host: 127.0.0.1\r\n", "");
    assert_eq!(status_of(request), 400);
}

#[test]
fn one_mebibyte_header_line_gets_431() {
    let huge = format!("X-Huge: {}\r\n", "a".repeat(1 << 20));
    assert_eq!(status_of(request_with(&huge)), 431);
}

#[test]
fn one_mebibyte_request_line_gets_414() {
    let request = request_with("").replacen("/", &format!("/{}", "a".repeat(1 << 20)), 1);
    assert_eq!(status_of(request), 414);
}

#[test]
fn ten_thousand_headers_get_431() {
    let headers: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(status_of(request_with(&headers)), 431);
}

#[test]
fn slow_headers_are_dropped_at_the_open_timeout_while_others_are_served() {
    let _guard = shared();
    let server = echo_server_with(|config| {
        config.protocol.open_timeout = Some(Duration::from_millis(1000));
    });
    let addr = server.local_addr();
    let request = request_with("");
    let started = Instant::now();
    let slowloris: Vec<_> = (0..3)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || {
                let mut client = RawClient::connect(addr);
                // One byte every 100 ms: the head would take seconds.
                for byte in request.bytes() {
                    if client.try_send(&[byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();
    while slowloris.iter().any(|thread| !thread.is_finished()) {
        assert_echo(addr);
        assert!(
            started.elapsed() < DEADLINE,
            "the slow clients were not dropped"
        );
    }
    for thread in slowloris {
        thread.join().unwrap();
    }
    // Dropped at the timeout, not after sending the whole head.
    assert!(started.elapsed() < Duration::from_millis(100) * request.len() as u32);
    wait_until("the slow clients are gone", || {
        server.connection_count() == 0
    });
}

// ----- Frames -----

/// Opens a connection, sends `input`, and returns the code of the server's close frame;
/// checks that a normal client is served afterwards.
fn close_code_after(input: &[u8]) -> Option<u16> {
    let _guard = shared();
    let server = echo_server();
    let mut client = RawClient::open(server.local_addr());
    client.send(input);
    let code = client.close_code();
    client.expect_eof();
    assert_echo(server.local_addr());
    code
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    let unmasked = frame_with(0x81, 5, b"Hello", None); // RFC 6455 §5.7
    assert_eq!(close_code_after(&unmasked), Some(1002));
}

#[test]
fn reserved_bits_close_with_1002() {
    for rsv in [0x40, 0x20, 0x10] {
        let input = frame_with(0x80 | rsv | TEXT, 2, b"hi", Some(MASK));
        assert_eq!(close_code_after(&input), Some(1002), "RSV {rsv:#x}");
    }
}

#[test]
fn reserved_opcodes_close_with_1002() {
    for opcode in [0x3, 0x7, 0xB, 0xF] {
        assert_eq!(
            close_code_after(&frame(opcode, true, b"")),
            Some(1002),
            "opcode {opcode:#x}"
        );
    }
}

#[test]
fn oversized_control_frame_closes_with_1002() {
    assert_eq!(close_code_after(&frame(PING, true, &[0; 126])), Some(1002));
}

#[test]
fn fragmented_control_frame_closes_with_1002() {
    assert_eq!(close_code_after(&frame(PING, false, b"part")), Some(1002));
}

#[test]
fn continuation_without_a_start_closes_with_1002() {
    assert_eq!(
        close_code_after(&frame(CONTINUATION, true, b"orphan")),
        Some(1002)
    );
}

#[test]
fn new_message_inside_a_fragmented_one_closes_with_1002() {
    let mut input = frame(TEXT, false, b"first half");
    input.extend(frame(TEXT, true, b"another start"));
    assert_eq!(close_code_after(&input), Some(1002));
}

#[test]
fn invalid_utf8_closes_with_1007() {
    assert_eq!(
        close_code_after(&frame(TEXT, true, b"\xce\xba\xe1\xbd")),
        Some(1007)
    );
    assert_eq!(close_code_after(&frame(TEXT, true, b"\xff")), Some(1007));
}

#[test]
fn invalid_utf8_split_across_fragments_closes_with_1007() {
    // "\xce" may start a character; "\x28" cannot continue it.
    let mut input = frame(TEXT, false, b"ok \xce");
    input.extend(frame(CONTINUATION, true, b"\x28"));
    assert_eq!(close_code_after(&input), Some(1007));
}

#[test]
fn invalid_utf8_in_an_unfinished_message_closes_with_1007_at_once() {
    // The message never ends: the server fails it on the bad fragment, not at the end.
    assert_eq!(
        close_code_after(&frame(TEXT, false, b"\xf8\x88\x80\x80")),
        Some(1007)
    );
}

#[test]
fn invalid_close_codes_close_with_1002() {
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        assert_eq!(
            close_code_after(&close_frame(code, "")),
            Some(1002),
            "code {code}"
        );
    }
}

#[test]
fn one_byte_close_payload_closes_with_1002() {
    assert_eq!(close_code_after(&frame(CLOSE, true, &[0x03])), Some(1002));
}

#[test]
fn close_reason_with_invalid_utf8_closes_with_1007() {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.push(0xff);
    assert_eq!(close_code_after(&frame(CLOSE, true, &payload)), Some(1007));
}

#[test]
fn length_of_two_to_the_62_closes_with_1009_without_allocating() {
    let claim = frame_with(0x82, 1 << 62, b"", Some(MASK));
    assert_eq!(close_code_after(&claim), Some(1009));
}

#[test]
fn length_with_the_top_bit_set_closes_with_1002() {
    // RFC 6455 §5.2: "the most significant bit MUST be 0".
    let claim = frame_with(0x82, (1 << 63) | 5, b"", Some(MASK));
    assert_eq!(close_code_after(&claim), Some(1002));
}

#[test]
fn sixty_four_mebibyte_frame_closes_with_1009_at_its_header() {
    // Only the header is sent: the server must not wait for (or reserve) the payload.
    let header = frame_with(0x82, 64 << 20, b"", Some(MASK));
    assert_eq!(close_code_after(&header), Some(1009));
}

#[test]
fn sixty_four_mebibyte_fragmented_message_closes_with_1009_soon_after_the_limit() {
    const LIMIT: usize = 1 << 20;
    const FRAGMENT: usize = 64 << 10;
    let _guard = shared();
    let server = echo_server();
    let mut client = RawClient::open(server.local_addr());
    // A small send buffer, so that what was sent is close to what the server received.
    socket2::SockRef::from(&client.stream)
        .set_send_buffer_size(FRAGMENT)
        .unwrap();
    let fragment = frame(CONTINUATION, false, &[b'x'; FRAGMENT]);
    client.send(&frame(BINARY, false, &[b'x'; FRAGMENT]));
    let mut sent = FRAGMENT;
    // Up to 64 MiB, looking for the server's answer after every fragment.
    while sent < 64 << 20 {
        client.stream.set_nonblocking(true).unwrap();
        let answered = match client.stream.peek(&mut [0]) {
            Ok(_) => true,
            Err(error) if error.kind() == ErrorKind::WouldBlock => false,
            Err(error) => panic!("peek: {error}"),
        };
        client.stream.set_nonblocking(false).unwrap();
        if answered {
            break;
        }
        if client.try_send(&fragment).is_err() {
            break;
        }
        sent += FRAGMENT;
    }
    assert_eq!(client.close_code(), Some(1009));
    // What was sent before the answer is the limit plus what the socket buffers held.
    assert!(sent > LIMIT);
    assert!(sent < 16 << 20, "the server answered after {sent} bytes");
    drop(client);
    assert_echo(server.local_addr());
}

#[test]
fn sixty_five_thousand_one_byte_fragments_are_reassembled_at_the_cost_of_their_bytes() {
    const FRAGMENTS: usize = 65_536;
    let _guard = shared();
    let server = echo_server();
    let mut client = RawClient::open(server.local_addr());
    let mut input = frame(BINARY, false, &[0]);
    for i in 1..FRAGMENTS {
        input.extend(frame(CONTINUATION, i == FRAGMENTS - 1, &[i as u8]));
    }
    let expected: Vec<u8> = (0..FRAGMENTS).map(|i| i as u8).collect();
    let writer = {
        let mut stream = client.stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&input))
    };
    let echoed = client.read_frame().expect("the echo");
    writer.join().unwrap().expect("all fragments sent");
    assert_eq!((echoed.opcode, echoed.fin), (BINARY, true));
    assert_eq!(echoed.payload, expected);
    assert_echo(server.local_addr());
}

#[test]
fn pings_from_a_client_that_never_reads_stop_being_read_past_the_high_water_mark() {
    const HIGH_WATER: usize = 16 << 10;
    const MAX_PINGS: u32 = 1_000_000;
    let _guard = shared();
    let server = echo_server_with(|config| config.io.send_high_water = HIGH_WATER);
    let mut client = RawClient::open(server.local_addr());
    client.stream.set_nonblocking(true).unwrap();
    // Pings with 125-byte payloads until the server stops taking them (its replies pile up
    // unread, so it stops reading): a server that kept reading would queue 125 MB of pongs.
    let mut ping = Vec::new();
    let mut written = 0;
    let mut pings = 0;
    let mut stalled_since: Option<Instant> = None;
    loop {
        if written == ping.len() {
            assert!(
                pings < MAX_PINGS,
                "the server read {MAX_PINGS} pings it could not answer"
            );
            let mut payload = [b'p'; 125];
            payload[..4].copy_from_slice(&pings.to_be_bytes());
            ping = frame(PING, true, &payload);
            written = 0;
            pings += 1;
        }
        match client.stream.write(&ping[written..]) {
            Ok(n) => {
                written += n;
                stalled_since = None;
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("write: {error}"),
        }
    }
    eprintln!("the server stopped reading after {pings} pings");
    // Others are served while this connection is stuck.
    assert_echo(server.local_addr());
    // Once the client reads, the server resumes: every ping sent gets its answer in order.
    client.stream.set_nonblocking(false).unwrap();
    let mut reader = RawClient::from_stream(client.stream.try_clone().unwrap());
    let (tx, last_pong) = mpsc::channel();
    std::thread::spawn(move || {
        let mut last = None;
        while let Some(frame) = reader.read_frame() {
            assert_eq!(frame.opcode, PONG);
            if frame.payload == b"last" {
                break;
            }
            last = Some(u32::from_be_bytes(frame.payload[..4].try_into().unwrap()));
        }
        let _ = tx.send(last);
    });
    client.send(&ping[written..]);
    client.send(&frame(PING, true, b"last"));
    let last = last_pong
        .recv_timeout(DEADLINE)
        .expect("pongs drained in time");
    assert_eq!(last, Some(pings - 1));
}

// ----- Connections -----

#[test]
fn two_thousand_idle_connections_are_held_in_bounded_memory() {
    const CONNECTIONS: usize = 2_000;
    let _guard = exclusive();
    if !support::ensure_open_files(2 * CONNECTIONS as u64 + 1_000) {
        eprintln!(
            "skipped: the open files limit ({:?}) is below {} and cannot be raised",
            support::open_files_limit(),
            2 * CONNECTIONS + 1_000
        );
        return;
    }
    let server = echo_server_with(|config| config.protocol.extensions.clear());
    let addr = server.local_addr();
    assert_echo(addr);
    let before = rss_kib().expect("RSS from /proc/self/status");
    let mut clients: Vec<RawClient> = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(RawClient::open(addr));
    }
    wait_until("every connection is open", || {
        server.connection_count() == CONNECTIONS
    });
    let after = rss_kib().expect("RSS");
    let per_connection = after.saturating_sub(before) as f64 / CONNECTIONS as f64;
    eprintln!("RSS {before} KiB -> {after} KiB: {per_connection:.1} KiB per idle connection");
    // Generous: the budget is 16 KiB; this bounds runaway growth, not the exact figure.
    assert!(
        per_connection < 64.0,
        "{per_connection:.1} KiB per idle connection"
    );
    // Served while they idle, and every idle one is still alive.
    assert_echo(addr);
    for client in clients.iter_mut().step_by(97) {
        client.send(&frame(TEXT, true, b"awake?"));
        assert_eq!(client.read_frame().unwrap().payload, b"awake?");
    }
    drop(clients);
    wait_until("every connection is gone", || {
        server.connection_count() == 0
    });
}

#[test]
fn resets_mid_handshake_and_mid_frame_leave_nothing_behind() {
    let _guard = shared();
    let server = echo_server();
    let addr = server.local_addr();
    for _ in 0..20 {
        let mut client = RawClient::connect(addr);
        client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr");
        client.reset();
        let mut client = RawClient::open(addr);
        let whole = frame(BINARY, true, &[7; 50_000]);
        client.send(&whole[..20_000]);
        client.reset();
    }
    assert_echo(addr);
    wait_until("the reset connections are gone", || {
        server.connection_count() == 0
    });
}

#[test]
fn half_closed_client_gets_its_replies_then_the_connection_ends() {
    let _guard = shared();
    let server = echo_server();
    let mut client = RawClient::open(server.local_addr());
    client.send(&frame(TEXT, true, b"last words"));
    client.shutdown_write();
    let reply = client.read_frame().expect("the echo");
    assert_eq!(reply.payload, b"last words");
    client.expect_eof();
    assert_echo(server.local_addr());
    wait_until("the connection is gone", || server.connection_count() == 0);
}

/// Replies of 8 MiB to "flood me": more than the kernel buffers hold for a client that does
/// not read. Echoes other messages.
fn flood(conn: &mut Connection, message: Message) -> wsline::Result<()> {
    if message.as_text() != Some("flood me") {
        return conn.send(message);
    }
    for _ in 0..32 {
        conn.send(Message::binary(vec![0; 256 << 10]))?;
    }
    Ok(())
}

/// Regression: a connection that closed (here at the client's end of stream) with replies
/// still unwritten stayed in the server for as long as the client kept its socket open
/// without reading: the event loop removed a closed connection only once its send buffer
/// was empty. It now gets the close timeout to drain.
#[test]
fn closed_connection_with_unread_replies_stayed_forever_after_a_half_close() {
    let _guard = shared();
    let mut config = server_config();
    config.io.send_high_water = 64 << 20;
    config.protocol.close_timeout = Some(Duration::from_millis(500));
    let server = start(flood, config);
    let mut client = RawClient::open(server.local_addr());
    client.send(&frame(TEXT, true, b"flood me"));
    client.stream.peek(&mut [0]).expect("the replies start");
    client.shutdown_write();
    wait_until("the abandoned connection is gone", || {
        server.connection_count() == 0
    });
    assert_echo(server.local_addr());
}

/// Regression: the same, for a connection closed by keepalive and the close timeout.
#[test]
fn closed_connection_with_unread_replies_stayed_forever_after_the_close_timeout() {
    let _guard = shared();
    let mut config = server_config();
    config.io.send_high_water = 64 << 20;
    config.protocol.ping_interval = Some(Duration::from_millis(200));
    config.protocol.ping_timeout = Some(Duration::from_millis(300));
    config.protocol.close_timeout = Some(Duration::from_millis(300));
    let server = start(flood, config);
    let mut client = RawClient::open(server.local_addr());
    client.send(&frame(TEXT, true, b"flood me"));
    client.stream.peek(&mut [0]).expect("the replies start");
    wait_until("the stuck connection is gone", || {
        server.connection_count() == 0
    });
    assert_echo(server.local_addr());
}

#[test]
fn abrupt_disconnects_with_unread_replies_leave_nothing_behind() {
    let _guard = shared();
    let server = echo_server();
    let addr: SocketAddr = server.local_addr();
    for _ in 0..20 {
        let mut client = RawClient::open(addr);
        for _ in 0..20 {
            client.send(&frame(BINARY, true, &[1; 60_000]));
        }
        drop(client);
    }
    assert_echo(addr);
    wait_until("the connections are gone", || {
        server.connection_count() == 0
    });
}
