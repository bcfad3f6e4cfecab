//! RFC 6455 §4 (the opening handshake) through [`Connection`]: the server's checks and the
//! HTTP status of each rejection, the client's request and its checks of the response, and
//! the bytes that follow the head.

mod support;

use support::proto as common;

use std::time::Instant;

use base64::Engine as _;
use common::{client_frame, closed_event, events, no_timers, peak_heap_during, written, Pair};
use wsline::proto::{
    accept_key, Connection, Event, Failure, HandshakeError, Headers, Opcode, Request, Response,
    Side, State,
};
use wsline::{Config, Message};

/// RFC 6455 §1.3: the sample nonce and its accept value.
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The headers of the RFC 6455 §1.2 sample request, minus its optional ones.
fn request_headers() -> Vec<(&'static str, String)> {
    vec![
        ("Host", "server.example.com".into()),
        ("Upgrade", "websocket".into()),
        ("Connection", "Upgrade".into()),
        ("Sec-WebSocket-Key", RFC_KEY.into()),
        ("Sec-WebSocket-Version", "13".into()),
    ]
}

fn request_with(request_line: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut head = format!("{request_line}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn valid_request() -> Vec<u8> {
    request_with("GET /chat HTTP/1.1", &request_headers())
}

/// The request with header `name` removed.
fn request_without(name: &str) -> Vec<u8> {
    let headers: Vec<_> = request_headers()
        .into_iter()
        .filter(|(field, _)| *field != name)
        .collect();
    request_with("GET /chat HTTP/1.1", &headers)
}

/// The request with header `name` set to `value` (added if absent).
fn request_setting(name: &'static str, value: &str) -> Vec<u8> {
    let mut headers: Vec<_> = request_headers()
        .into_iter()
        .filter(|(field, _)| *field != name)
        .collect();
    headers.push((name, value.to_owned()));
    request_with("GET /chat HTTP/1.1", &headers)
}

/// An HTTP response as it went over the wire.
#[derive(Debug)]
struct WireResponse {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

fn parse_response(bytes: &[u8]) -> WireResponse {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut fields);
    let httparse::Status::Complete(len) = response.parse(bytes).expect("a valid HTTP response")
    else {
        panic!("an incomplete response");
    };
    let mut headers = Headers::new();
    for field in response.headers.iter() {
        headers.append(field.name, String::from_utf8_lossy(field.value));
    }
    WireResponse {
        status: response.code.unwrap(),
        headers,
        body: bytes[len..].to_vec(),
    }
}

/// A server's answer to `input`: it accepts with [`Connection::accept`] if a request came.
fn server_answer(config: Config, input: &[u8]) -> (WireResponse, Connection) {
    let mut server = Connection::server(config, Instant::now());
    server.handle_data(input);
    if let Some(Event::Request(request)) = server.poll_event() {
        let response = server.accept(&request).unwrap();
        server.send_response(response).unwrap();
    }
    let out = written(&mut server);
    (parse_response(&out.bytes), server)
}

/// Checks that the server rejected `input` with `status`, a plain-text explanation, and a
/// closed connection.
fn assert_rejected(config: Config, input: &[u8], status: u16) -> WireResponse {
    let mut server = Connection::server(config, Instant::now());
    server.handle_data(input);
    let mut seen = events(&mut server);
    if let Some(Event::Request(request)) = seen.first() {
        let response = server.accept(request).unwrap();
        let shown = String::from_utf8_lossy(input);
        assert_eq!(response.status, status, "{shown:?}");
        server.send_response(response).unwrap();
        seen = events(&mut server);
    }
    let out = written(&mut server);
    assert!(out.shutdown, "the connection is closed after the response");
    let response = parse_response(&out.bytes);
    assert_eq!(
        response.status,
        status,
        "{:?}",
        String::from_utf8_lossy(input)
    );
    assert_eq!(response.headers.get("Connection"), Some("close"));
    assert_eq!(
        response.headers.get("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    let length: usize = response
        .headers
        .get("Content-Length")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(response.body.len(), length);
    assert!(!response.body.is_empty());
    assert_eq!(server.state(), State::Closed);
    let closed = closed_event(&seen);
    let Some(Failure::Handshake(error)) = closed.failure else {
        panic!("a handshake failure, got {closed:?}");
    };
    assert_eq!(error.status(), Some(status));
    response
}

/// RFC 6455 §4.2: the server's side.
mod section_4_2_server {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_sample() {
        assert_eq!(accept_key(RFC_KEY), RFC_ACCEPT);
    }

    #[test]
    fn server_accepts_the_rfc_sample_request() {
        let mut server = Connection::server(no_timers(), Instant::now());
        server.handle_data(&valid_request());
        let Some(Event::Request(request)) = server.poll_event() else {
            panic!("a request");
        };
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/chat");
        assert_eq!(request.headers.get("host"), Some("server.example.com"));
        assert_eq!(server.state(), State::Connecting);
        let response = server.accept(&request).unwrap();
        server.send_response(response).unwrap();
        assert_eq!(server.state(), State::Open);
        let out = written(&mut server);
        assert!(!out.shutdown);
        let response = parse_response(&out.bytes);
        assert_eq!(response.status, 101);
        assert_eq!(response.headers.get("Upgrade"), Some("websocket"));
        assert_eq!(response.headers.get("Connection"), Some("Upgrade"));
        assert_eq!(
            response.headers.get("Sec-WebSocket-Accept"),
            Some(RFC_ACCEPT)
        );
        assert_eq!(response.headers.get("Sec-WebSocket-Protocol"), None);
        assert_eq!(response.headers.get("Sec-WebSocket-Extensions"), None);
        assert!(response.body.is_empty());
    }

    #[test]
    fn server_reads_a_request_that_arrives_one_byte_at_a_time() {
        let input = valid_request();
        let mut server = Connection::server(no_timers(), Instant::now());
        for byte in &input[..input.len() - 1] {
            server.handle_data(std::slice::from_ref(byte));
            assert!(server.poll_event().is_none());
        }
        server.handle_data(&input[input.len() - 1..]);
        assert!(matches!(server.poll_event(), Some(Event::Request(_))));
    }

    #[test]
    fn upgrade_and_connection_are_case_insensitive_token_lists() {
        for (name, value) in [
            ("Upgrade", "WebSocket"),
            ("Upgrade", "h2c, websocket"),
            ("Connection", "keep-alive, Upgrade"),
            ("Connection", "UPGRADE"),
        ] {
            let (response, _) = server_answer(no_timers(), &request_setting(name, value));
            assert_eq!(response.status, 101, "{name}: {value}");
        }
        // The token may also come in a second field of the same name.
        let mut headers = request_headers();
        headers.push(("Connection", "keep-alive".into()));
        headers.swap(2, 5);
        let (response, _) = server_answer(no_timers(), &request_with("GET / HTTP/1.1", &headers));
        assert_eq!(response.status, 101);
    }

    #[test]
    fn non_get_method_is_405_with_allow() {
        for method in ["POST", "PUT", "HEAD", "get"] {
            let input = request_with(&format!("{method} /chat HTTP/1.1"), &request_headers());
            let response = assert_rejected(no_timers(), &input, 405);
            assert_eq!(response.headers.get("Allow"), Some("GET"));
        }
    }

    #[test]
    fn http_1_0_is_505() {
        let input = request_with("GET /chat HTTP/1.0", &request_headers());
        assert_rejected(no_timers(), &input, 505);
    }

    #[test]
    fn missing_host_is_400() {
        assert_rejected(no_timers(), &request_without("Host"), 400);
    }

    #[test]
    fn bad_or_missing_upgrade_is_400() {
        assert_rejected(no_timers(), &request_without("Upgrade"), 400);
        assert_rejected(no_timers(), &request_setting("Upgrade", "h2c"), 400);
        assert_rejected(no_timers(), &request_setting("Upgrade", "websockets"), 400);
    }

    #[test]
    fn bad_or_missing_connection_is_400() {
        assert_rejected(no_timers(), &request_without("Connection"), 400);
        assert_rejected(
            no_timers(),
            &request_setting("Connection", "keep-alive"),
            400,
        );
        assert_rejected(no_timers(), &request_setting("Connection", "upgrades"), 400);
    }

    #[test]
    fn missing_key_is_400() {
        assert_rejected(no_timers(), &request_without("Sec-WebSocket-Key"), 400);
    }

    #[test]
    fn duplicate_key_is_400() {
        let mut headers = request_headers();
        headers.push(("Sec-WebSocket-Key", "x3JJHMbDL1EzLkh9GBhXDw==".into()));
        assert_rejected(no_timers(), &request_with("GET / HTTP/1.1", &headers), 400);
    }

    #[test]
    fn key_that_is_not_base64_of_16_bytes_is_400() {
        let base64 = base64::engine::general_purpose::STANDARD;
        for key in [
            "not base64!".to_owned(),
            base64.encode([0u8; 15]),
            base64.encode([0u8; 17]),
            String::new(),
            "dGhlIHNhbXBsZSBub25jZQ".into(), // unpadded
        ] {
            assert_rejected(
                no_timers(),
                &request_setting("Sec-WebSocket-Key", &key),
                400,
            );
        }
    }

    #[test]
    fn wrong_or_missing_version_is_426_naming_version_13() {
        for input in [
            request_setting("Sec-WebSocket-Version", "8"),
            request_setting("Sec-WebSocket-Version", "14"),
            request_without("Sec-WebSocket-Version"),
        ] {
            let response = assert_rejected(no_timers(), &input, 426);
            assert_eq!(response.headers.get("Sec-WebSocket-Version"), Some("13"));
        }
    }

    fn small_limits() -> Config {
        Config {
            max_line_len: 100,
            max_headers: 8,
            max_head_size: 1024,
            ..no_timers()
        }
    }

    #[test]
    fn request_line_over_the_limit_is_414() {
        let line = format!("GET /{} HTTP/1.1", "a".repeat(100));
        assert_rejected(
            small_limits(),
            &request_with(&line, &request_headers()),
            414,
        );
        // Detected before the line ends.
        let mut server = Connection::server(small_limits(), Instant::now());
        server.handle_data(&line.as_bytes()[..102]);
        assert_eq!(server.state(), State::Closed);
        assert_eq!(parse_response(&written(&mut server).bytes).status, 414);
    }

    #[test]
    fn header_line_over_the_limit_is_431() {
        let input = request_setting("X-Long", &"b".repeat(100));
        assert_rejected(small_limits(), &input, 431);
    }

    #[test]
    fn more_headers_than_the_limit_is_431() {
        let mut headers = request_headers();
        headers.extend((0..3).map(|i| ("X-Extra", i.to_string())));
        assert_eq!(headers.len(), 8);
        let (response, _) =
            server_answer(small_limits(), &request_with("GET / HTTP/1.1", &headers));
        assert_eq!(response.status, 101);
        headers.push(("X-Extra", "9".into()));
        assert_rejected(
            small_limits(),
            &request_with("GET / HTTP/1.1", &headers),
            431,
        );
    }

    #[test]
    fn head_over_the_size_limit_is_431_without_buffering_beyond_it() {
        let input = request_with(
            "GET / HTTP/1.1",
            &vec![("X-Filler", "c".repeat(80)); 12_000],
        );
        assert!(input.len() > 1 << 20);
        let mut server = Connection::server(small_limits(), Instant::now());
        let ((), peak) = peak_heap_during(|| server.handle_data(&input));
        assert!(peak < 16 << 10, "peak {peak} while reading a 1 MiB head");
        assert_rejected(small_limits(), &input, 431);
        // The same head in pieces fails once it passes the limit.
        let mut server = Connection::server(small_limits(), Instant::now());
        for piece in input[..1024].chunks(100) {
            server.handle_data(piece);
        }
        assert_eq!(server.state(), State::Closed);
    }

    #[test]
    fn garbage_is_400() {
        for input in [
            &b"\x00\x01\x02\x03 garbage\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_rejected(no_timers(), input, 400);
        }
    }

    #[test]
    fn server_header_is_configurable() {
        let (response, _) = server_answer(no_timers(), &valid_request());
        let product = format!("wsline/{}", env!("CARGO_PKG_VERSION"));
        assert_eq!(response.headers.get("Server"), Some(product.as_str()));
        let rejected = assert_rejected(no_timers(), &request_without("Host"), 400);
        assert_eq!(rejected.headers.get("Server"), Some(product.as_str()));
        let config = Config {
            server_header: None,
            ..no_timers()
        };
        let (response, _) = server_answer(config, &valid_request());
        assert_eq!(response.headers.get("Server"), None);
        let config = Config {
            server_header: Some("custom/1".into()),
            ..no_timers()
        };
        let (response, _) = server_answer(config, &valid_request());
        assert_eq!(response.headers.get("Server"), Some("custom/1"));
    }

    #[test]
    fn application_can_reject_with_its_own_status() {
        let mut server = Connection::server(no_timers(), Instant::now());
        server.handle_data(&valid_request());
        assert!(matches!(server.poll_event(), Some(Event::Request(_))));
        let response = server.reject(403, "Origin not allowed");
        server.send_response(response).unwrap();
        let out = written(&mut server);
        assert!(out.shutdown);
        let response = parse_response(&out.bytes);
        assert_eq!(response.status, 403);
        assert_eq!(response.body, b"Origin not allowed\n");
        let closed = closed_event(&events(&mut server));
        assert_eq!(
            closed.failure,
            Some(Failure::Handshake(HandshakeError::RejectedByServer {
                status: 403,
                reason: "Forbidden".into()
            }))
        );
    }

    #[test]
    fn application_can_alter_the_response_before_sending_it() {
        let mut server = Connection::server(no_timers(), Instant::now());
        server.handle_data(&valid_request());
        let Some(Event::Request(request)) = server.poll_event() else {
            panic!("a request");
        };
        let mut response = server.accept(&request).unwrap();
        response.headers.append("Set-Cookie", "session=1");
        server.send_response(response).unwrap();
        let response = parse_response(&written(&mut server).bytes);
        assert_eq!(response.status, 101);
        assert_eq!(response.headers.get("Set-Cookie"), Some("session=1"));
    }

    #[test]
    fn send_response_without_a_request_is_an_error() {
        let mut server = Connection::server(no_timers(), Instant::now());
        let response = server.reject(400, "no");
        assert!(server.send_response(response).is_err());
        assert!(written(&mut server).bytes.is_empty());
    }

    /// RFC 6455 §4.2.2 item 4: the server picks one of the client's subprotocols.
    #[test]
    fn server_picks_its_first_supported_subprotocol_the_client_offered() {
        let config = || no_timers().subprotocols(["superchat", "chat"]);
        let input = request_setting("Sec-WebSocket-Protocol", "chat, superchat");
        let (response, server) = server_answer(config(), &input);
        assert_eq!(
            response.headers.get("Sec-WebSocket-Protocol"),
            Some("superchat")
        );
        assert_eq!(server.subprotocol(), Some("superchat"));
        let input = request_setting("Sec-WebSocket-Protocol", "other");
        let (response, server) = server_answer(config(), &input);
        assert_eq!(response.status, 101);
        assert_eq!(response.headers.get("Sec-WebSocket-Protocol"), None);
        assert_eq!(server.subprotocol(), None);
    }

    /// Bytes that follow the head in the same read are the first frames.
    #[test]
    fn server_keeps_frames_that_arrive_with_the_request() {
        let mut input = valid_request();
        input.extend(client_frame(Opcode::Text, true, b"Hello"));
        input.extend(&client_frame(Opcode::Binary, true, b"more")[..3]);
        let mut server = Connection::server(no_timers(), Instant::now());
        server.handle_data(&input);
        // More arrives before the application answers.
        server.handle_data(&client_frame(Opcode::Binary, true, b"more")[3..]);
        let Some(Event::Request(request)) = server.poll_event() else {
            panic!("a request");
        };
        assert!(
            server.poll_event().is_none(),
            "no frames before the response"
        );
        let response = server.accept(&request).unwrap();
        server.send_response(response).unwrap();
        assert_eq!(
            events(&mut server),
            [
                Event::Message(Message::text("Hello")),
                Event::Message(Message::binary(&b"more"[..]))
            ]
        );
    }

    #[test]
    fn frames_after_a_rejected_request_are_dropped() {
        let mut input = request_setting("Sec-WebSocket-Version", "8");
        input.extend(client_frame(Opcode::Text, true, b"Hello"));
        let mut server = Connection::server(no_timers(), Instant::now());
        server.handle_data(&input);
        let Some(Event::Request(request)) = server.poll_event() else {
            panic!("a request");
        };
        let response = server.accept(&request).unwrap();
        server.send_response(response).unwrap();
        let events = events(&mut server);
        assert!(matches!(events[..], [Event::Closed(_)]), "{events:?}");
    }

    #[test]
    fn data_piling_up_before_the_response_is_bounded_by_the_head_limit() {
        let mut server = Connection::server(small_limits(), Instant::now());
        server.handle_data(&valid_request());
        assert!(matches!(server.poll_event(), Some(Event::Request(_))));
        server.handle_data(&[0x82; 1000]);
        assert_eq!(server.state(), State::Connecting);
        server.handle_data(&[0x82; 100]);
        assert_eq!(server.state(), State::Closed);
        assert_eq!(parse_response(&written(&mut server).bytes).status, 431);
    }
}

/// RFC 6455 §4.1: the client's side.
mod section_4_1_client {
    use super::*;

    fn client(uri: &str, config: Config) -> Connection {
        Connection::client(uri.parse().unwrap(), config, Instant::now())
    }

    fn request_of(uri: &str, config: Config) -> Request {
        client(uri, config).connect_request().unwrap()
    }

    #[test]
    fn client_request_follows_rfc6455_4_1() {
        let request = request_of("ws://example.com/chat?room=1", no_timers());
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/chat?room=1");
        let headers = &request.headers;
        assert_eq!(headers.get("Host"), Some("example.com"));
        assert_eq!(headers.get("Upgrade"), Some("websocket"));
        assert_eq!(headers.get("Connection"), Some("Upgrade"));
        assert_eq!(headers.get("Sec-WebSocket-Version"), Some("13"));
        let key = headers.get("Sec-WebSocket-Key").unwrap();
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap();
        assert_eq!(nonce.len(), 16);
        assert_eq!(headers.get("Sec-WebSocket-Protocol"), None);
        assert_eq!(headers.get("Origin"), None);
        assert_eq!(headers.get("Authorization"), None);
        let wire = String::from_utf8(request.to_bytes().to_vec()).unwrap();
        assert!(wire.starts_with("GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\n"));
        assert!(wire.ends_with("\r\n\r\n"));
    }

    /// RFC 6455 §4.1 item 7: "a nonce consisting of a randomly selected 16-byte value".
    #[test]
    fn each_client_picks_a_fresh_key() {
        let key = |request: Request| request.headers.get("Sec-WebSocket-Key").unwrap().to_owned();
        let first = key(request_of("ws://example.com/", no_timers()));
        let second = key(request_of("ws://example.com/", no_timers()));
        assert_ne!(first, second);
    }

    #[test]
    fn host_header_has_the_port_unless_default() {
        let host = |uri: &str| {
            request_of(uri, no_timers())
                .headers
                .get("Host")
                .map(str::to_owned)
        };
        assert_eq!(host("ws://example.com:80/"), Some("example.com".into()));
        assert_eq!(
            host("ws://example.com:8080/"),
            Some("example.com:8080".into())
        );
        assert_eq!(host("wss://example.com/"), Some("example.com".into()));
        assert_eq!(host("wss://example.com:80/"), Some("example.com:80".into()));
        assert_eq!(host("ws://[::1]:9000/"), Some("[::1]:9000".into()));
    }

    #[test]
    fn international_host_goes_out_in_its_idna_form() {
        let request = request_of("ws://bücher.example:8080/x", no_timers());
        assert_eq!(
            request.headers.get("Host"),
            Some("xn--bcher-kva.example:8080")
        );
        assert_eq!(request.path, "/x");
    }

    #[test]
    fn user_info_becomes_basic_authorization() {
        let request = request_of("ws://alice:p%40ss@example.com/", no_timers());
        let expected = base64::engine::general_purpose::STANDARD.encode("alice:p@ss");
        assert_eq!(
            request.headers.get("Authorization"),
            Some(format!("Basic {expected}").as_str())
        );
        assert_eq!(request.headers.get("Host"), Some("example.com"));
    }

    #[test]
    fn user_agent_is_configurable() {
        let product = format!("wsline/{}", env!("CARGO_PKG_VERSION"));
        let request = request_of("ws://example.com/", no_timers());
        assert_eq!(request.headers.get("User-Agent"), Some(product.as_str()));
        let config = Config {
            user_agent: None,
            ..no_timers()
        };
        assert_eq!(
            request_of("ws://example.com/", config)
                .headers
                .get("User-Agent"),
            None
        );
    }

    #[test]
    fn client_offers_its_subprotocols_in_order() {
        let config = no_timers().subprotocols(["chat", "superchat"]);
        let request = request_of("ws://example.com/", config);
        assert_eq!(
            request.headers.get("Sec-WebSocket-Protocol"),
            Some("chat, superchat")
        );
    }

    #[test]
    fn headers_added_to_the_request_go_out() {
        let mut client = client("ws://example.com/", no_timers());
        let mut request = client.connect_request().unwrap();
        request.headers.append("Origin", "http://example.com");
        client.send_request(request).unwrap();
        let wire = String::from_utf8(written(&mut client).bytes).unwrap();
        assert!(
            wire.contains("\r\nOrigin: http://example.com\r\n"),
            "{wire}"
        );
    }

    /// A client that sent its request, and the response head it must accept.
    fn started(config: Config) -> (Connection, String) {
        let mut client = client("ws://example.com/chat", config);
        let request = client.connect_request().unwrap();
        let key = request.headers.get("Sec-WebSocket-Key").unwrap().to_owned();
        client.send_request(request).unwrap();
        let _ = written(&mut client);
        let accept = accept_key(&key);
        (client, accept)
    }

    fn response_101(accept: &str, extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    /// Feeds `response` to a started client and returns why the handshake failed.
    fn client_failure(config: Config, response: impl FnOnce(&str) -> Vec<u8>) -> HandshakeError {
        let (mut client, accept) = started(config);
        client.handle_data(&response(&accept));
        assert_eq!(client.state(), State::Closed);
        assert!(written(&mut client).shutdown);
        let events = events(&mut client);
        assert!(!events
            .iter()
            .any(|event| matches!(event, Event::Response(_))));
        match closed_event(&events).failure {
            Some(Failure::Handshake(error)) => error,
            other => panic!("a handshake failure, got {other:?}"),
        }
    }

    #[test]
    fn client_accepts_a_valid_response() {
        let (mut client, accept) = started(no_timers());
        client.handle_data(&response_101(&accept, ""));
        assert_eq!(client.state(), State::Open);
        let Some(Event::Response(response)) = client.poll_event() else {
            panic!("a response");
        };
        assert_eq!(response.status, 101);
        assert_eq!(
            response.headers.get("sec-websocket-accept"),
            Some(accept.as_str())
        );
    }

    #[test]
    fn client_reads_a_response_that_arrives_one_byte_at_a_time() {
        let (mut client, accept) = started(no_timers());
        let mut input = response_101(&accept, "");
        input.extend(common::server_frame(Opcode::Text, true, b"Hi"));
        for byte in &input {
            client.handle_data(std::slice::from_ref(byte));
        }
        let events = events(&mut client);
        assert!(matches!(events[0], Event::Response(_)));
        assert_eq!(events[1..], [Event::Message(Message::text("Hi"))]);
    }

    #[test]
    fn client_keeps_frames_that_arrive_with_the_response() {
        let (mut client, accept) = started(no_timers());
        let mut input = response_101(&accept, "");
        input.extend(common::server_frame(Opcode::Text, true, b"Hello"));
        input.extend(common::server_frame(Opcode::Ping, true, b"p"));
        client.handle_data(&input);
        let events = events(&mut client);
        assert!(matches!(events[0], Event::Response(_)));
        assert_eq!(
            events[1..],
            [
                Event::Message(Message::text("Hello")),
                Event::Ping(bytes::Bytes::from_static(b"p"))
            ]
        );
        assert_eq!(common::sent_frames(&mut client).len(), 1); // the pong
    }

    #[test]
    fn wrong_accept_fails() {
        let error = client_failure(no_timers(), |_| response_101(RFC_ACCEPT, ""));
        assert_eq!(error, HandshakeError::InvalidAccept);
    }

    #[test]
    fn missing_accept_fails() {
        let error = client_failure(no_timers(), |_| {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .to_vec()
        });
        assert_eq!(error, HandshakeError::MissingHeader("Sec-WebSocket-Accept"));
    }

    #[test]
    fn missing_or_wrong_upgrade_or_connection_fails() {
        let response = |upgrade: &str, connection: &str, accept: &str| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\n{upgrade}{connection}\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .into_bytes()
        };
        let upgrade = "Upgrade: websocket\r\n";
        let connection = "Connection: Upgrade\r\n";
        let error = client_failure(no_timers(), |a| response("", connection, a));
        assert_eq!(error, HandshakeError::MissingHeader("Upgrade"));
        let error = client_failure(no_timers(), |a| response("Upgrade: h2c\r\n", connection, a));
        assert!(matches!(
            error,
            HandshakeError::InvalidHeader {
                name: "Upgrade",
                ..
            }
        ));
        let error = client_failure(no_timers(), |a| response(upgrade, "", a));
        assert_eq!(error, HandshakeError::MissingHeader("Connection"));
        let error = client_failure(no_timers(), |a| {
            response(upgrade, "Connection: close\r\n", a)
        });
        assert!(matches!(
            error,
            HandshakeError::InvalidHeader {
                name: "Connection",
                ..
            }
        ));
    }

    #[test]
    fn subprotocol_not_offered_fails() {
        let chosen = "Sec-WebSocket-Protocol: other\r\n";
        let error = client_failure(no_timers(), |a| response_101(a, chosen));
        assert_eq!(error, HandshakeError::InvalidSubprotocol("other".into()));
        let config = || no_timers().subprotocols(["chat"]);
        let error = client_failure(config(), |a| response_101(a, chosen));
        assert_eq!(error, HandshakeError::InvalidSubprotocol("other".into()));
        let two = "Sec-WebSocket-Protocol: chat, chat\r\n";
        let error = client_failure(config(), |a| response_101(a, two));
        assert!(matches!(error, HandshakeError::InvalidSubprotocol(_)));
    }

    #[test]
    fn extension_not_offered_fails() {
        let answer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
        let error = client_failure(no_timers(), |a| response_101(a, answer));
        let HandshakeError::Negotiation(error) = error else {
            panic!("a negotiation error, got {error:?}");
        };
        assert_eq!(error.name, "permessage-deflate");
    }

    #[test]
    fn http_1_0_or_garbage_response_fails() {
        let error = client_failure(no_timers(), |_| {
            b"HTTP/1.0 101 Switching Protocols\r\n\r\n".to_vec()
        });
        assert_eq!(error, HandshakeError::UnsupportedHttpVersion);
        let error = client_failure(no_timers(), |_| b"HTTP/1.1 abc\r\n\r\n".to_vec());
        assert!(matches!(error, HandshakeError::InvalidHttp(_)), "{error:?}");
    }

    #[test]
    fn response_head_over_the_size_limit_fails_without_buffering_it() {
        let config = Config {
            max_head_size: 1024,
            ..no_timers()
        };
        let (mut client, _) = started(config);
        let mut input = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        for _ in 0..20_000 {
            input.extend_from_slice(b"X-Filler: cccccccccccccccccccccccccccccccccccccccc\r\n");
        }
        let ((), peak) = peak_heap_during(|| client.handle_data(&input));
        assert!(peak < 16 << 10, "peak {peak}");
        assert_eq!(client.state(), State::Closed);
        assert_eq!(
            client.close_status().failure,
            Some(Failure::Handshake(HandshakeError::HeadTooLarge {
                limit: 1024
            }))
        );
    }

    #[test]
    fn eof_during_the_handshake_fails_it() {
        let (mut client, _) = started(no_timers());
        client.handle_data(b"HTTP/1.1 101 Switching");
        client.handle_eof();
        let closed = closed_event(&events(&mut client));
        assert!(matches!(closed.failure, Some(Failure::Handshake(_))));
    }

    /// RFC 6455 §4.1: "If the status code received from the server is not 101, the client
    /// handles the response per HTTP procedures": the caller gets it whole.
    fn rejected(response: &Response) -> (u16, Option<String>, Vec<u8>) {
        (
            response.status,
            response.headers.get("X-Why").map(str::to_owned),
            response.body.to_vec(),
        )
    }

    fn rejection_of(config: Config, pieces: &[&[u8]], eof: bool) -> Response {
        let (mut client, _) = started(config);
        for piece in pieces {
            client.handle_data(piece);
        }
        if eof {
            assert_eq!(
                client.state(),
                State::Connecting,
                "waits for the body's end"
            );
            client.handle_eof();
        }
        assert_eq!(client.state(), State::Closed);
        match closed_event(&events(&mut client)).failure {
            Some(Failure::Handshake(HandshakeError::Rejected(response))) => *response,
            other => panic!("a rejection, got {other:?}"),
        }
    }

    #[test]
    fn non_101_response_is_rejected_with_status_headers_and_content_length_body() {
        let head = b"HTTP/1.1 403 Forbidden\r\nX-Why: origin\r\nContent-Length: 11\r\n\r\n";
        let response = rejection_of(no_timers(), &[head, b"not allowed"], false);
        assert_eq!(
            rejected(&response),
            (403, Some("origin".into()), b"not allowed".to_vec())
        );
        assert_eq!(response.reason, "Forbidden");
        // The body split across reads, with the head.
        let whole = [&head[..], b"not allowed"].concat();
        let (first, second) = whole.split_at(head.len() + 4);
        let response = rejection_of(no_timers(), &[first, second], false);
        assert_eq!(response.body, &b"not allowed"[..]);
        // Bytes past Content-Length are not part of the body.
        let with_extra = [&whole[..], b"extra"].concat();
        let response = rejection_of(no_timers(), &[&with_extra], false);
        assert_eq!(response.body, &b"not allowed"[..]);
    }

    #[test]
    fn non_101_response_with_empty_body_ends_at_once() {
        let head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let response = rejection_of(no_timers(), &[head], false);
        assert_eq!(rejected(&response), (404, None, Vec::new()));
    }

    #[test]
    fn non_101_response_without_length_reads_its_body_until_eof() {
        let head = b"HTTP/1.1 500 Internal Server Error\r\nX-Why: crash\r\n\r\npart one, ";
        let response = rejection_of(no_timers(), &[head, b"part two"], true);
        assert_eq!(
            rejected(&response),
            (500, Some("crash".into()), b"part one, part two".to_vec())
        );
    }

    #[test]
    fn rejection_body_is_bounded_by_max_response_body() {
        let config = || Config {
            max_response_body: 10,
            ..no_timers()
        };
        let body = [b'z'; 100];
        let head = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 100\r\n\r\n";
        let response = rejection_of(config(), &[head, &body], false);
        assert_eq!(response.body, &body[..10]);
        let head = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        let response = rejection_of(config(), &[head, &body, &body], true);
        assert_eq!(response.body, &body[..10]);
    }
}

/// Both ends of the handshake together.
mod pair {
    use super::*;

    #[test]
    fn pair_negotiates_a_subprotocol_on_both_ends() {
        let (pair, request, response) = Pair::open(
            no_timers().subprotocols(["chat", "superchat"]),
            no_timers().subprotocols(["superchat"]),
        );
        assert_eq!(
            request.headers.get("Sec-WebSocket-Protocol"),
            Some("chat, superchat")
        );
        assert_eq!(
            response.headers.get("Sec-WebSocket-Protocol"),
            Some("superchat")
        );
        assert_eq!(pair.client.subprotocol(), Some("superchat"));
        assert_eq!(pair.server.subprotocol(), Some("superchat"));
    }

    #[test]
    fn pair_without_a_common_subprotocol_has_none() {
        let (pair, _, _) = Pair::open(
            no_timers().subprotocols(["chat"]),
            no_timers().subprotocols(["superchat"]),
        );
        assert_eq!(pair.client.subprotocol(), None);
        assert_eq!(pair.server.subprotocol(), None);
    }

    #[test]
    fn pair_exchanges_messages_after_the_handshake() {
        let (mut pair, request, _) = Pair::open(no_timers(), no_timers());
        assert_eq!(request.path, "/chat");
        assert_eq!(pair.client.side(), Side::Client);
        pair.client.send_text("ping?").unwrap();
        pair.drive();
        assert_eq!(
            events(&mut pair.server),
            [Event::Message(Message::text("ping?"))]
        );
        pair.server.send_text("pong!").unwrap();
        pair.drive();
        assert_eq!(
            events(&mut pair.client),
            [Event::Message(Message::text("pong!"))]
        );
    }
}
