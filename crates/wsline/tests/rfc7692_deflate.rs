//! RFC 7692 (permessage-deflate): the §7.2.3 examples byte for byte, negotiation on both
//! sides (§5, §7.1), frame rules (§6.1), context takeover and window sizes (§7.1.1, §7.1.2),
//! decompression limits, and interop with Python `websockets`.
#![cfg(feature = "deflate")]

mod support;

use support::process;
use support::proto as common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{
    closed_event, encode, events, no_timers, open, peak_heap_during, sent_close_code, sent_frames,
    written, Pair,
};
use wsline::extension::deflate::PerMessageDeflate;
use wsline::extension::{Extension, ExtensionFactory, ExtensionParams, FramePosition};
use wsline::proto::{
    parse_extensions, Connection, Event, Failure, Fragment, HandshakeError, Opcode, ProtocolError,
    Rsv, SendOptions, Side, State, Transmit,
};
use wsline::{Config, Message};

// ----- Helpers -----

fn element(header: &str) -> ExtensionParams {
    let mut elements = parse_extensions([header]).expect("a valid extension header");
    assert_eq!(elements.len(), 1, "{header}");
    elements.remove(0)
}

fn with_deflate(deflate: PerMessageDeflate) -> Config {
    Config {
        extensions: vec![Arc::new(deflate)],
        ..no_timers()
    }
}

/// A server whose handshake accepted `offer`.
fn server_with(deflate: PerMessageDeflate, offer: &str) -> Connection {
    let (_, extension) = deflate
        .server_accept(&[element(offer)])
        .expect("the offer is accepted");
    let mut server = open(Side::Server, with_deflate(deflate));
    server.set_extensions(vec![extension]);
    server
}

/// A client whose handshake got `response`.
fn client_with(deflate: PerMessageDeflate, response: &str) -> Connection {
    let extension = deflate
        .client_accept(&element(response))
        .expect("the response is acceptable");
    let mut client = open(Side::Client, with_deflate(deflate));
    client.set_extensions(vec![extension]);
    client
}

/// A client that negotiated permessage-deflate without parameters.
fn deflate_client() -> Connection {
    client_with(PerMessageDeflate::default(), "permessage-deflate")
}

/// A server that negotiated permessage-deflate without parameters.
fn deflate_server() -> Connection {
    server_with(PerMessageDeflate::default(), "permessage-deflate")
}

/// The messages a client that negotiated permessage-deflate reads from `wire`.
fn received_by_client(wire: &[u8]) -> Vec<Message> {
    let mut client = deflate_client();
    client.handle_data(wire);
    messages(&mut client)
}

fn always() -> SendOptions {
    SendOptions {
        compress: Some(true),
    }
}

fn messages(connection: &mut Connection) -> Vec<Message> {
    events(connection)
        .into_iter()
        .filter_map(|event| match event {
            Event::Message(message) => Some(message),
            _ => None,
        })
        .collect()
}

/// JSON-like text: repetitive, as the messages compression is for.
fn json_text(len: usize) -> String {
    let mut text = String::with_capacity(len + 100);
    let mut id = 0;
    while text.len() < len {
        text.push_str(&format!(
            r#"{{"id":{id},"user":"user{}","event":"update","payload":{{"x":{},"ok":true}}}},"#,
            id % 17,
            id * 31 % 1000
        ));
        id += 1;
    }
    text.truncate(len);
    text
}

/// A text that inflates `limit`-fold: repeated bytes.
fn compressible(len: usize) -> Vec<u8> {
    vec![b'a'; len]
}

/// The raw DEFLATE payload of a message the client compressed, unmasked.
fn compressed_payload(client: &mut Connection) -> (Rsv, Vec<u8>) {
    let frames = sent_frames(client);
    assert_eq!(frames.len(), 1);
    (frames[0].rsv, frames[0].payload.to_vec())
}

// ----- RFC 7692 §7.2.3: examples -----

#[test]
fn rfc7692_7_2_3_1_hello_compressed_in_one_block_decodes() {
    assert_eq!(
        received_by_client(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
        [Message::text("Hello")]
    );
}

#[test]
fn rfc7692_7_2_3_1_hello_compressed_in_one_block_encodes() {
    let mut server = deflate_server();
    server.send_with(Message::text("Hello"), always()).unwrap();
    assert_eq!(
        written(&mut server).bytes,
        [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
    );
}

#[test]
fn rfc7692_7_2_3_1_fragmented_compressed_hello_decodes() {
    // RFC 7692 §7.2.3.1: "the same message [...] fragmented into two frames".
    let mut client = deflate_client();
    client.handle_data(&[0x41, 0x03, 0xf2, 0x48, 0xcd]);
    client.handle_data(&[0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00]);
    assert_eq!(messages(&mut client), [Message::text("Hello")]);
}

#[test]
fn rfc7692_7_2_3_2_second_hello_shares_the_window() {
    // zlib's default level gives the example's bytes; level 1 finds the same match and codes
    // it in fewer bits.
    let level_6 = PerMessageDeflate {
        compression_level: 6,
        ..PerMessageDeflate::default()
    };
    let mut server = server_with(level_6, "permessage-deflate");
    server.send_with(Message::text("Hello"), always()).unwrap();
    server.send_with(Message::text("Hello"), always()).unwrap();
    let wire = written(&mut server).bytes;
    assert_eq!(
        wire,
        [
            0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, // first "Hello"
            0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00, // second, a back-reference
        ]
    );
    assert_eq!(
        received_by_client(&wire),
        [Message::text("Hello"), Message::text("Hello")]
    );
}

#[test]
fn rfc7692_7_2_3_3_block_with_no_compression() {
    let frame = [
        0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(received_by_client(&frame), [Message::text("Hello")]);
    // Compression level 0 stores the data, which gives the example's bytes.
    let store = PerMessageDeflate {
        compression_level: 0,
        ..PerMessageDeflate::default()
    };
    let mut server = server_with(store, "permessage-deflate");
    server.send_with(Message::text("Hello"), always()).unwrap();
    assert_eq!(written(&mut server).bytes, frame);
}

#[test]
fn rfc7692_7_2_3_4_block_with_bfinal_set_decodes_and_the_next_message_too() {
    let mut client = deflate_client();
    client.handle_data(&[0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]);
    // After a final block the sender starts a new DEFLATE stream.
    client.handle_data(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    assert_eq!(
        messages(&mut client),
        [Message::text("Hello"), Message::text("Hello")]
    );
}

#[test]
fn rfc7692_7_2_3_5_two_deflate_blocks_in_one_message() {
    assert_eq!(
        received_by_client(&[
            0xc1, 0x0d, 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07,
            0x00,
        ]),
        [Message::text("Hello")]
    );
}

#[test]
fn rfc7692_7_2_3_6_empty_fragment_at_the_end_of_a_message() {
    // A compressed message whose last fragment is empty: the sender flushed with the data of
    // the first fragments and ends the message with nothing left to send.
    let mut server = deflate_server();
    server.send_text_fragment("Hel", false).unwrap();
    server.send_continuation(b"lo", false).unwrap();
    server.send_continuation(b"", true).unwrap();
    let frames = sent_frames(&mut server);
    assert_eq!(frames.len(), 3);
    let wire: Vec<u8> = frames
        .iter()
        .flat_map(|frame| encode(frame.opcode, frame.fin, frame.rsv, &frame.payload, None))
        .collect();
    assert_eq!(received_by_client(&wire), [Message::text("Hello")]);
}

#[test]
fn an_empty_message_compresses_to_a_single_byte_every_time() {
    let mut server = deflate_server();
    server.send_with(Message::text(""), always()).unwrap();
    server.send_with(Message::text(""), always()).unwrap();
    let wire = written(&mut server).bytes;
    assert_eq!(wire, [0xc1, 0x01, 0x00, 0xc1, 0x01, 0x00]);
    assert_eq!(
        received_by_client(&wire),
        [Message::text(""), Message::text("")]
    );
}

// ----- RFC 7692 §6.1: the Per-Message Compressed bit -----

#[test]
fn client_marks_only_the_first_frame_of_a_compressed_message() {
    let mut client = deflate_client();
    client.send_text_fragment(&json_text(300), false).unwrap();
    client
        .send_continuation(json_text(300).as_bytes(), true)
        .unwrap();
    let frames = sent_frames(&mut client);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].rsv, Rsv::RSV1);
    assert_eq!(frames[0].opcode, Opcode::Text);
    assert_eq!(frames[1].rsv, Rsv::NONE);
    assert_eq!(frames[1].opcode, Opcode::Continuation);
}

#[test]
fn reserved_bits_outside_the_first_frame_of_a_compressed_message_fail_with_1002() {
    // RFC 7692 §6.1: "An endpoint MUST NOT set the "Per-Message Compressed" bit of control
    // frames and non-first fragments of a data message", and RFC 6455 §5.2 fails bits that
    // no negotiated extension defines.
    let first_fragment = [0x41, 0x03, 0xf2, 0x48, 0xcd];
    let continuation = encode(
        Opcode::Continuation,
        true,
        Rsv::RSV1,
        &[0xc9, 0xc9, 0x07, 0x00],
        None,
    );
    let cases: [(&str, bool, Vec<u8>); 4] = [
        (
            "RSV1 on a continuation frame",
            true,
            [&first_fragment[..], &continuation].concat(),
        ),
        (
            "RSV1 on a ping",
            true,
            encode(Opcode::Ping, true, Rsv::RSV1, b"ping", None),
        ),
        (
            "RSV1 without permessage-deflate",
            false,
            vec![0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        ),
        (
            "RSV2 with permessage-deflate",
            true,
            encode(Opcode::Text, true, Rsv::RSV2, b"Hello", None),
        ),
    ];
    for (case, negotiated, input) in cases {
        let mut client = if negotiated {
            deflate_client()
        } else {
            open(Side::Client, no_timers())
        };
        client.handle_data(&input);
        assert_eq!(
            client.close_status().failure,
            Some(Failure::Protocol(ProtocolError::ReservedBits)),
            "{case}"
        );
        assert_eq!(sent_close_code(&mut client), Some(1002), "{case}");
    }
}

#[test]
fn uncompressed_messages_still_arrive_with_deflate_negotiated() {
    let mut client = deflate_client();
    client.handle_data(b"\x81\x05Hello");
    client.handle_data(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    client.handle_data(b"\x82\x02hi");
    assert_eq!(
        messages(&mut client),
        [
            Message::text("Hello"),
            Message::text("Hello"),
            Message::binary(&b"hi"[..])
        ]
    );
}

#[test]
fn invalid_deflate_data_fails_with_1007() {
    let mut client = deflate_client();
    // BTYPE 11 is reserved (RFC 1951 §3.2.3).
    client.handle_data(&[0xc2, 0x02, 0xff, 0xff]);
    assert!(matches!(
        client.close_status().failure,
        Some(Failure::Protocol(ProtocolError::Extension(_)))
    ));
    assert_eq!(sent_close_code(&mut client), Some(1007));
}

#[test]
fn compressed_text_that_is_not_utf8_fails_with_1007() {
    let mut server = deflate_server();
    let mut client = deflate_client();
    server
        .send_with(Message::binary(&[0xff, 0xfe, 0xfd][..]), always())
        .unwrap();
    let mut wire = written(&mut server).bytes;
    wire[0] = 0xc1; // the same compressed payload, now claiming to be text
    client.handle_data(&wire);
    assert_eq!(
        client.close_status().failure,
        Some(Failure::Protocol(ProtocolError::InvalidUtf8))
    );
    assert_eq!(sent_close_code(&mut client), Some(1007));
}

// ----- RFC 7692 §5 and §7.1: negotiation, server side -----

/// The server's answer to `offers` (one header value), or `None` when declined.
fn answer(deflate: &PerMessageDeflate, offers: &str) -> Option<String> {
    let offers = parse_extensions([offers]).expect("a valid extension header");
    deflate
        .server_accept(&offers)
        .map(|(answer, _)| answer.to_string())
}

/// Checks the server's answer to each offer.
fn assert_answers(deflate: &PerMessageDeflate, cases: &[(&str, &str)]) {
    for (offer, expected) in cases {
        assert_eq!(
            answer(deflate, offer).as_deref(),
            Some(*expected),
            "{offer}"
        );
    }
}

#[test]
fn server_accepts_valid_offers_with_the_rfc_answers() {
    let deflate = PerMessageDeflate::default();
    let cases = [
        ("permessage-deflate", "permessage-deflate"),
        // A value-less client_max_window_bits only says the client supports the parameter.
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_max_window_bits=\"10\"",
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover; \
             client_max_window_bits=9; server_max_window_bits=15",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=15; client_max_window_bits=9",
        ),
    ];
    assert_answers(&deflate, &cases);
}

#[test]
fn server_accepts_every_window_size_from_8_to_15() {
    let deflate = PerMessageDeflate::default();
    for bits in 8..=15 {
        for param in ["server_max_window_bits", "client_max_window_bits"] {
            let offer = format!("permessage-deflate; {param}={bits}");
            assert_eq!(answer(&deflate, &offer), Some(offer.clone()));
        }
    }
}

#[test]
fn server_declines_invalid_offers() {
    // RFC 7692 §7: a server declines an offer with an unknown parameter, an invalid value, or
    // a parameter given twice.
    let deflate = PerMessageDeflate::default();
    let invalid = [
        "permessage-deflate; foo",
        "permessage-deflate; Server_No_Context_Takeover",
        "permessage-deflate; server_no_context_takeover=true",
        "permessage-deflate; client_no_context_takeover=1",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; server_max_window_bits=+9",
        "permessage-deflate; server_max_window_bits=abc",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
    ];
    for offer in invalid {
        assert_eq!(answer(&deflate, offer), None, "{offer}");
    }
}

#[test]
fn server_picks_the_first_acceptable_offer() {
    let deflate = PerMessageDeflate::default();
    let offers = "permessage-deflate; server_max_window_bits=16, \
                  permessage-deflate; server_max_window_bits=9, \
                  permessage-deflate";
    assert_eq!(
        answer(&deflate, offers).as_deref(),
        Some("permessage-deflate; server_max_window_bits=9")
    );
}

#[test]
fn server_settings_shape_the_answer() {
    let deflate = PerMessageDeflate {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: Some(11),
        client_max_window_bits: Some(11),
        ..PerMessageDeflate::default()
    };
    let cases = [
        (
            "permessage-deflate",
            // client_max_window_bits only when the client offered the parameter.
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=11",
        ),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=11; client_max_window_bits=11",
        ),
        (
            "permessage-deflate; client_max_window_bits=9; server_max_window_bits=13",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=11; client_max_window_bits=9",
        ),
        (
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9",
        ),
    ];
    assert_answers(&deflate, &cases);
}

// ----- RFC 7692 §5 and §7.1: negotiation, client side -----

#[test]
fn client_offers_client_max_window_bits_with_or_without_a_value() {
    let offer = |deflate: PerMessageDeflate| {
        let offers = deflate.client_offers();
        assert_eq!(offers.len(), 1);
        offers[0].to_string()
    };
    assert_eq!(
        offer(PerMessageDeflate::default()),
        "permessage-deflate; client_max_window_bits"
    );
    assert_eq!(
        offer(PerMessageDeflate {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(9),
            ..PerMessageDeflate::default()
        }),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=10; client_max_window_bits=9"
    );
}

#[test]
fn client_accepts_valid_responses() {
    let deflate = PerMessageDeflate::default();
    for response in [
        "permessage-deflate",
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=15; server_max_window_bits=15",
    ] {
        assert!(
            deflate.client_accept(&element(response)).is_ok(),
            "{response}"
        );
    }
}

#[test]
fn client_rejects_invalid_responses_with_a_clear_error() {
    let cases = [
        (
            PerMessageDeflate::default(),
            "permessage-deflate; foo",
            "unknown parameter foo",
        ),
        (
            PerMessageDeflate::default(),
            "permessage-deflate; client_max_window_bits",
            "client_max_window_bits needs a value",
        ),
        (
            PerMessageDeflate::default(),
            "permessage-deflate; server_max_window_bits=16",
            "server_max_window_bits must be 8 to 15",
        ),
        (
            PerMessageDeflate::default(),
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "duplicate parameter client_no_context_takeover",
        ),
        (
            PerMessageDeflate {
                server_no_context_takeover: true,
                ..PerMessageDeflate::default()
            },
            "permessage-deflate",
            "server_no_context_takeover was requested but not accepted",
        ),
        (
            PerMessageDeflate {
                server_max_window_bits: Some(10),
                ..PerMessageDeflate::default()
            },
            "permessage-deflate",
            "server_max_window_bits=10 was requested but not accepted",
        ),
        (
            PerMessageDeflate {
                server_max_window_bits: Some(10),
                ..PerMessageDeflate::default()
            },
            "permessage-deflate; server_max_window_bits=11",
            "server_max_window_bits=11 exceeds the 10 requested",
        ),
        (
            PerMessageDeflate {
                client_max_window_bits: Some(10),
                ..PerMessageDeflate::default()
            },
            "permessage-deflate; client_max_window_bits=12",
            "client_max_window_bits=12 exceeds the 10 offered",
        ),
    ];
    for (deflate, response, reason) in cases {
        let error = deflate
            .client_accept(&element(response))
            .expect_err(response);
        assert_eq!(error.name, "permessage-deflate");
        assert!(
            error.reason.contains(reason),
            "{response}: {}",
            error.reason
        );
    }
}

#[test]
fn handshake_negotiates_deflate_between_default_configs() {
    let config = || with_deflate(PerMessageDeflate::default());
    let (mut pair, request, response) = Pair::open(config(), config());
    pair.client_wire.clear();
    pair.server_wire.clear();
    assert_eq!(
        request.headers.get("Sec-WebSocket-Extensions"),
        Some("permessage-deflate; client_max_window_bits")
    );
    assert_eq!(
        response.headers.get("Sec-WebSocket-Extensions"),
        Some("permessage-deflate")
    );
    assert_eq!(pair.client.extensions()[0].name(), "permessage-deflate");
    assert_eq!(pair.server.extensions()[0].name(), "permessage-deflate");
    let text = json_text(4096);
    pair.client.send_text(&text).unwrap();
    pair.server.send_text(&text).unwrap();
    pair.drive();
    assert_eq!(messages(&mut pair.server), [Message::text(text.clone())]);
    assert_eq!(messages(&mut pair.client), [Message::text(text.clone())]);
    // Both went out compressed: RSV1 set and far fewer bytes than the text.
    for wire in [&pair.client_wire, &pair.server_wire] {
        let frames = common::parse_frames(wire);
        let data = frames.last().expect("the message frame");
        assert_eq!(data.frame.rsv, Rsv::RSV1);
        assert!(data.frame.payload.len() < text.len() / 4);
    }
}

#[test]
fn handshake_without_deflate_on_the_server_sends_uncompressed() {
    let (mut pair, _, response) =
        Pair::open(with_deflate(PerMessageDeflate::default()), no_timers());
    assert_eq!(response.headers.get("Sec-WebSocket-Extensions"), None);
    assert!(pair.client.extensions().is_empty());
    let text = json_text(4096);
    pair.client.send_text(&text).unwrap();
    pair.drive();
    assert_eq!(messages(&mut pair.server), [Message::text(text)]);
}

#[test]
fn client_fails_the_handshake_on_an_unacceptable_response() {
    let config = || with_deflate(PerMessageDeflate::default());
    let mut pair = Pair::connecting("ws://example.com/", config(), config());
    let request = pair.client.connect_request().unwrap();
    pair.client.send_request(request).unwrap();
    pair.drive();
    let Some(Event::Request(request)) = pair.server.poll_event() else {
        panic!("expected the request");
    };
    let mut response = pair.server.accept(&request).unwrap();
    response.headers.insert(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    );
    pair.server.send_response(response).unwrap();
    pair.drive();
    assert_eq!(pair.client.state(), State::Closed);
    let Some(Failure::Handshake(HandshakeError::Negotiation(error))) =
        pair.client.close_status().failure.clone()
    else {
        panic!(
            "expected a negotiation failure: {:?}",
            pair.client.close_status()
        );
    };
    assert_eq!(error.name, "permessage-deflate");
    assert!(error
        .reason
        .contains("client_max_window_bits needs a value"));
}

#[test]
fn io_layer_defaults_offer_deflate_and_the_core_default_does_not() {
    assert!(Config::default().extensions.is_empty());
    for config in [
        wsline::ServerConfig::default().protocol,
        wsline::ConnectConfig::default().protocol,
    ] {
        let names: Vec<&str> = config.extensions.iter().map(|e| e.name()).collect();
        assert_eq!(names, ["permessage-deflate"]);
    }
}

// ----- RFC 7692 §7.1.1: context takeover -----

/// The wire sizes of the same text sent twice by a client that negotiated `response`.
fn sizes_of_two_sends(response: &str) -> (usize, usize) {
    let mut client = client_with(PerMessageDeflate::default(), response);
    let text = json_text(2000);
    let mut sizes = Vec::new();
    let mut server = server_with(PerMessageDeflate::default(), "permessage-deflate");
    for _ in 0..2 {
        client.send_text(&text).unwrap();
        let wire = written(&mut client).bytes;
        sizes.push(wire.len());
        server.handle_data(&wire);
    }
    // The server decodes both whatever the takeover mode (its decompressor reads either).
    assert_eq!(
        messages(&mut server),
        [Message::text(text.clone()), Message::text(text)]
    );
    (sizes[0], sizes[1])
}

#[test]
fn context_takeover_shrinks_a_repeated_message() {
    let (first, second) = sizes_of_two_sends("permessage-deflate");
    assert!(second * 4 < first, "first {first} bytes, second {second}");
}

#[test]
fn no_context_takeover_compresses_each_message_alone() {
    let (first, second) = sizes_of_two_sends("permessage-deflate; client_no_context_takeover");
    assert_eq!(first, second);
}

#[test]
fn server_no_context_takeover_round_trips_many_messages() {
    let config = PerMessageDeflate {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..PerMessageDeflate::default()
    };
    let (mut pair, _, response) = Pair::open(with_deflate(config.clone()), with_deflate(config));
    assert_eq!(
        response.headers.get("Sec-WebSocket-Extensions"),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    for len in [100, 5000, 70_000, 10] {
        let text = json_text(len);
        pair.client.send_text(&text).unwrap();
        pair.server.send_text(&text).unwrap();
        pair.drive();
        assert_eq!(messages(&mut pair.server), [Message::text(text.clone())]);
        assert_eq!(messages(&mut pair.client), [Message::text(text)]);
    }
}

#[test]
fn connections_without_context_takeover_hold_no_zlib_state_between_messages() {
    // 200 connections that each received and sent a compressed message: with a compressor
    // (~150 KiB) and a decompressor (~40 KiB) each, they would hold some 38 MiB; parked in
    // the thread's small pool between messages, a few MiB at most.
    let offer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    let text = json_text(2000);
    let mut client = client_with(PerMessageDeflate::default(), offer);
    client.send_text(&text).unwrap();
    let wire = written(&mut client).bytes;
    let (connections, peak) = peak_heap_during(|| {
        let mut connections = Vec::new();
        for _ in 0..200 {
            let mut server = server_with(PerMessageDeflate::default(), offer);
            server.handle_data(&wire);
            assert_eq!(messages(&mut server), [Message::text(text.clone())]);
            server.send_text(&text).unwrap();
            assert_eq!(sent_frames(&mut server)[0].rsv, Rsv::RSV1);
            connections.push(server);
        }
        connections
    });
    assert_eq!(connections.len(), 200);
    assert!(peak < 4 << 20, "peak heap {peak} bytes");
}

// ----- RFC 7692 §7.1.2: window sizes -----

/// Compresses `data` with a client whose compression window is `bits`, and inflates the
/// result with a decompressor whose window is exactly `bits`: any distance beyond the
/// window would fail.
fn compresses_within_window(bits: u8, data: &[u8]) {
    let response = format!("permessage-deflate; client_max_window_bits={bits}");
    let mut client = client_with(
        PerMessageDeflate {
            window_bits: 15,
            ..PerMessageDeflate::default()
        },
        &response,
    );
    client.send_binary(data).unwrap();
    let (rsv, mut payload) = compressed_payload(&mut client);
    assert_eq!(rsv, Rsv::RSV1);
    payload.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut inflate = zlib_rs::Inflate::new(false, bits);
    let mut out = vec![0; data.len() + 1];
    inflate
        .decompress(&payload, &mut out, zlib_rs::InflateFlush::SyncFlush)
        .unwrap_or_else(|error| panic!("window {bits}: {error:?}"));
    let produced = usize::try_from(inflate.total_out()).unwrap();
    assert_eq!(&out[..produced], data, "window {bits}");
}

#[test]
fn client_compresses_within_the_window_the_server_allows() {
    // Repeats 1 KiB apart fit 10-bit and larger windows only, so that a compressor that
    // ignored a smaller window would produce distances the strict decompressor refuses.
    let block: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let data: Vec<u8> = block.iter().chain(&block).chain(&block).copied().collect();
    for bits in 8..=15 {
        compresses_within_window(bits, &data);
    }
}

#[test]
fn an_eight_bit_window_compresses_runs() {
    // zlib cannot use a 256-byte window; runs still compress in one.
    let mut client = client_with(
        PerMessageDeflate::default(),
        "permessage-deflate; client_max_window_bits=8",
    );
    client.send_binary(&compressible(10_000)).unwrap();
    let (_, payload) = compressed_payload(&mut client);
    assert!(payload.len() < 200, "{} bytes", payload.len());
    compresses_within_window(8, &compressible(10_000));
}

#[test]
fn server_reads_a_peer_that_used_nine_bits_when_eight_were_agreed() {
    // zlib peers asked for 8 bits compress with 9 (zlib's 8 → 9 quirk); the decompressor
    // keeps a 15-bit window and reads them.
    let block: Vec<u8> = (0..400u32).map(|i| (i * 13 % 241) as u8).collect();
    let data: Vec<u8> = block.iter().chain(&block).copied().collect();
    let mut deflate = zlib_rs::Deflate::new(6, false, 9);
    let mut payload = vec![0; 4096];
    deflate
        .compress(&data, &mut payload, zlib_rs::DeflateFlush::SyncFlush)
        .unwrap();
    payload.truncate(usize::try_from(deflate.total_out()).unwrap() - 4);
    let mut server = server_with(
        PerMessageDeflate::default(),
        "permessage-deflate; client_max_window_bits=8",
    );
    let frame = encode(
        Opcode::Binary,
        true,
        Rsv::RSV1,
        &payload,
        Some(common::RFC_KEY),
    );
    server.handle_data(&frame);
    assert_eq!(messages(&mut server), [Message::binary(data)]);
}

// ----- Decompression limits -----

/// A server that negotiated permessage-deflate, with a message size limit.
fn limited_server(max_message_size: usize) -> Connection {
    let config = Config {
        max_message_size: Some(max_message_size),
        ..no_timers()
    };
    let (_, extension) = PerMessageDeflate::default()
        .server_accept(&[element("permessage-deflate")])
        .expect("a valid offer");
    let mut server = open(Side::Server, config);
    server.set_extensions(vec![extension]);
    server
}

#[test]
fn decompression_bomb_closes_with_1009_and_memory_stays_bounded() {
    // 64 MiB of one byte compresses to some 64 KiB; with the default 1 MiB limit, the
    // server must stop inflating at the limit instead of following the ratio.
    let mut client = client_with(
        PerMessageDeflate {
            compression_level: 9,
            ..PerMessageDeflate::default()
        },
        "permessage-deflate",
    );
    client.send_binary(&compressible(64 << 20)).unwrap();
    let wire = written(&mut client).bytes;
    assert!(wire.len() < 128 << 10, "bomb of {} bytes", wire.len());
    let mut server = limited_server(1 << 20);
    let ((), peak) = peak_heap_during(|| {
        for chunk in wire.chunks(16 << 10) {
            server.handle_data(chunk);
        }
    });
    assert_eq!(sent_close_code(&mut server), Some(1009));
    assert!(messages(&mut server).is_empty());
    // The limit, the buffer's doubling, and the decompressor's state.
    assert!(peak < (5 << 20) / 2, "peak heap {peak} bytes");
}

#[test]
fn a_message_that_inflates_to_exactly_the_limit_is_accepted_and_one_more_byte_is_not() {
    for (len, accepted) in [(10_000, true), (10_001, false)] {
        let mut client = deflate_client();
        client.send_binary(&compressible(len)).unwrap();
        let wire = written(&mut client).bytes;
        let mut server = limited_server(10_000);
        server.handle_data(&wire);
        if accepted {
            assert_eq!(messages(&mut server), [Message::binary(compressible(len))]);
        } else {
            assert_eq!(sent_close_code(&mut server), Some(1009));
            let closed = failure_text(&mut server);
            assert!(closed.contains("10000"), "{closed}");
        }
    }
}

fn failure_text(connection: &mut Connection) -> String {
    connection
        .close_status()
        .failure
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

#[test]
fn the_limit_counts_decompressed_bytes_across_fragments() {
    let mut client = deflate_client();
    client
        .send_binary_fragment(&compressible(6000), false)
        .unwrap();
    client.send_continuation(&compressible(6000), true).unwrap();
    let wire = written(&mut client).bytes;
    let mut server = limited_server(10_000);
    server.handle_data(&wire);
    assert_eq!(sent_close_code(&mut server), Some(1009));
}

#[test]
fn decoder_never_grows_its_output_past_the_limit() {
    let (_, mut extension) = PerMessageDeflate::default()
        .server_accept(&[element("permessage-deflate")])
        .unwrap();
    let mut client = deflate_client();
    client.send_binary(&compressible(1 << 20)).unwrap();
    let frames = sent_frames(&mut client);
    let mut out = BytesMut::new();
    let error = extension
        .decode(&frames[0].payload, &mut out, 100_000)
        .expect_err("past the limit");
    assert_eq!(error.close_code().as_u16(), 1009);
    assert_eq!(out.len(), 100_000);
    assert!(out.capacity() <= 2 * 100_001, "capacity {}", out.capacity());
}

// ----- Fragmented messages, both directions -----

#[test]
fn fragmented_compressed_messages_round_trip_both_ways() {
    let config = || with_deflate(PerMessageDeflate::default());
    let (mut pair, _, _) = Pair::open(config(), config());
    pair.client_wire.clear();
    let text = json_text(30_000);
    let pieces: Vec<&str> = vec![&text[..10_000], &text[10_000..10_001], &text[10_001..]];
    for connection in [&mut pair.client, &mut pair.server] {
        connection.send_text_fragment(pieces[0], false).unwrap();
        connection
            .send_continuation(pieces[1].as_bytes(), false)
            .unwrap();
        connection
            .send_continuation(pieces[2].as_bytes(), true)
            .unwrap();
    }
    pair.drive();
    assert_eq!(messages(&mut pair.server), [Message::text(text.clone())]);
    assert_eq!(messages(&mut pair.client), [Message::text(text.clone())]);
    let frames = common::parse_frames(&pair.client_wire);
    let rsv: Vec<Rsv> = frames[frames.len() - 3..]
        .iter()
        .map(|f| f.frame.rsv)
        .collect();
    assert_eq!(rsv, [Rsv::RSV1, Rsv::NONE, Rsv::NONE]);
}

#[test]
fn compressed_fragments_are_delivered_decompressed_with_deliver_fragments() {
    let mut server = deflate_server();
    let text = json_text(20_000);
    server
        .send_with(Message::text(text.clone()), always())
        .unwrap();
    let wire = written(&mut server).bytes;
    let (_, payload) = {
        let frames = common::parse_frames(&wire);
        (frames[0].frame.rsv, frames[0].frame.payload.to_vec())
    };
    // Split the compressed payload into three frames.
    let third = payload.len() / 3;
    let mut input = encode(Opcode::Text, false, Rsv::RSV1, &payload[..third], None);
    input.extend(encode(
        Opcode::Continuation,
        false,
        Rsv::NONE,
        &payload[third..2 * third],
        None,
    ));
    input.extend(encode(
        Opcode::Continuation,
        true,
        Rsv::NONE,
        &payload[2 * third..],
        None,
    ));
    let extension = PerMessageDeflate::default()
        .client_accept(&element("permessage-deflate"))
        .unwrap();
    let mut client = open(
        Side::Client,
        Config {
            deliver_fragments: true,
            ..no_timers()
        },
    );
    client.set_extensions(vec![extension]);
    client.handle_data(&input);
    let mut received = String::new();
    let mut last = false;
    for event in events(&mut client) {
        let Event::Fragment(Fragment { data, fin, .. }) = event else {
            panic!("expected fragments, got {event:?}");
        };
        received.push_str(data.as_text().unwrap());
        last = fin;
    }
    assert!(last);
    assert_eq!(received, text);
}

// ----- Threshold and per-message override -----

#[test]
fn messages_below_the_threshold_go_out_uncompressed() {
    let deflate = PerMessageDeflate {
        compression_threshold: 100,
        ..PerMessageDeflate::default()
    };
    let mut server = server_with(deflate, "permessage-deflate");
    server.send_text(&json_text(99)).unwrap();
    server.send_text(&json_text(100)).unwrap();
    let frames = sent_frames(&mut server);
    assert_eq!(frames[0].rsv, Rsv::NONE);
    assert_eq!(&frames[0].payload[..], json_text(99).as_bytes());
    assert_eq!(frames[1].rsv, Rsv::RSV1);
}

#[test]
fn by_default_every_message_is_compressed() {
    let mut server = deflate_server();
    server.send_text("hi").unwrap();
    server.send_binary(b"").unwrap();
    let frames = sent_frames(&mut server);
    let rsv: Vec<Rsv> = frames.iter().map(|frame| frame.rsv).collect();
    assert_eq!(rsv, [Rsv::RSV1, Rsv::RSV1]);
}

#[test]
fn send_options_override_the_threshold_per_message() {
    let deflate = PerMessageDeflate {
        compression_threshold: 100,
        ..PerMessageDeflate::default()
    };
    let mut client = client_with(deflate, "permessage-deflate");
    let big = json_text(10_000);
    client
        .send_with(
            Message::text(big.clone()),
            SendOptions {
                compress: Some(false),
            },
        )
        .unwrap();
    client.send_with(Message::text("hi"), always()).unwrap();
    client
        .send_with(Message::text(big.clone()), SendOptions::default())
        .unwrap();
    let frames = sent_frames(&mut client);
    let rsv: Vec<Rsv> = frames.iter().map(|frame| frame.rsv).collect();
    assert_eq!(rsv, [Rsv::NONE, Rsv::RSV1, Rsv::RSV1]);
    assert_eq!(frames[0].payload.len(), big.len());
}

#[test]
fn extension_encodes_through_the_public_trait() {
    // A custom I/O layer or test can drive the negotiated extension directly.
    let mut extension: Box<dyn Extension> = PerMessageDeflate::default()
        .client_accept(&element("permessage-deflate"))
        .unwrap();
    assert_eq!(extension.rsv(), Rsv::RSV1);
    let mut out = BytesMut::new();
    let whole = FramePosition {
        first: true,
        fin: true,
    };
    assert!(!extension
        .encode(b"Hello", whole, Some(false), &mut out)
        .unwrap());
    assert!(out.is_empty());
    assert!(extension
        .encode(b"Hello", whole, Some(true), &mut out)
        .unwrap());
    assert_eq!(&out[..], [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
}

// ----- Interop with Python websockets -----

/// Kills the Python helper when the test ends, passed or not.
struct Helper(Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Drives `connection` over `stream` until `done` says so, collecting events.
fn drive(
    connection: &mut Connection,
    stream: &mut TcpStream,
    mut done: impl FnMut(&mut Connection, &Event) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut buf = vec![0; 64 << 10];
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    loop {
        while let Some(transmit) = connection.poll_transmit() {
            match transmit {
                Transmit::Bytes(bytes) => stream.write_all(&bytes).unwrap(),
                Transmit::Shutdown => {
                    let _ = stream.shutdown(Shutdown::Write);
                }
            }
        }
        while let Some(event) = connection.poll_event() {
            let stop = done(connection, &event);
            seen.push(event);
            if stop {
                return seen;
            }
        }
        if connection.is_closed() && connection.pending_send() == 0 {
            return seen;
        }
        assert!(Instant::now() < deadline, "timed out; events {seen:?}");
        match stream.read(&mut buf) {
            Ok(0) => connection.handle_eof(),
            Ok(n) => connection.handle_data(&buf[..n]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => panic!("read: {error}"),
        }
    }
}

const PY_ECHO_SERVER: &str = r#"
import sys
from websockets.sync.server import serve
def echo(ws):
    print("EXT", [e.name for e in ws.protocol.extensions], flush=True)
    for message in ws:
        ws.send(message)
with serve(echo, "127.0.0.1", 0) as server:
    print("PORT", server.socket.getsockname()[1], flush=True)
    server.serve_forever()
"#;

#[test]
fn interop_client_against_python_websockets_server() {
    let Some(python) = process::venv_python() else {
        return;
    };
    let mut child = Command::new(python)
        .args(["-c", PY_ECHO_SERVER])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let _helper = Helper(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let port: u16 = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();

    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let uri = format!("ws://127.0.0.1:{port}/").parse().unwrap();
    let mut client = Connection::client(
        uri,
        with_deflate(PerMessageDeflate::default()),
        Instant::now(),
    );
    let request = client.connect_request().unwrap();
    client.send_request(request).unwrap();
    let events = drive(&mut client, &mut stream, |_, event| {
        matches!(event, Event::Response(_) | Event::Closed(_))
    });
    let Some(Event::Response(response)) = events.last() else {
        panic!("no response: {events:?}");
    };
    // Python websockets answers with its defaults: 12-bit windows both ways.
    assert_eq!(
        response.headers.get("Sec-WebSocket-Extensions"),
        Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")
    );
    let texts = [
        json_text(10),
        json_text(5000),
        json_text(200_000),
        json_text(5000),
    ];
    for text in &texts {
        client.send_text(text).unwrap();
    }
    client.send_text_fragment(&texts[1], false).unwrap();
    client.send_continuation(texts[2].as_bytes(), true).unwrap();
    let mut expected: Vec<Message> = texts.iter().map(|t| Message::text(t.clone())).collect();
    expected.push(Message::text(format!("{}{}", texts[1], texts[2])));
    let mut count = 0;
    let events = drive(&mut client, &mut stream, |_, event| {
        count += usize::from(matches!(event, Event::Message(_)));
        count == expected.len() || matches!(event, Event::Closed(_))
    });
    let received: Vec<Message> = events
        .into_iter()
        .filter_map(|event| match event {
            Event::Message(message) => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(received, expected);
    client.send_close(wsline::CloseCode::NORMAL, "").unwrap();
    let events = drive(&mut client, &mut stream, |_, event| {
        matches!(event, Event::Closed(_))
    });
    assert!(closed_event(&events).clean);
}

const PY_CLIENT: &str = r#"
import json, sys
from websockets.sync.client import connect
port = int(sys.argv[1])
with connect(f"ws://127.0.0.1:{port}/") as ws:
    print("EXT", ws.response.headers.get("Sec-WebSocket-Extensions"), flush=True)
    texts = [("x" * 10), json.dumps(list(range(3000))), json.dumps(list(range(40000)))]
    for text in texts:
        ws.send(text)
        assert ws.recv() == text, "echo differs"
    ws.send([text.encode() for text in texts])  # fragmented, compressed by Python
    assert ws.recv() == "".join(texts).encode(), "fragmented echo differs"
print("OK", flush=True)
"#;

#[test]
fn interop_server_against_python_websockets_client() {
    let Some(python) = process::venv_python() else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = Command::new(python)
        .args(["-c", PY_CLIENT, &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut helper = Helper(child);
    let (mut stream, _) = listener.accept().unwrap();
    let mut server = Connection::server(with_deflate(PerMessageDeflate::default()), Instant::now());
    let events = drive(&mut server, &mut stream, |connection, event| {
        match event {
            Event::Request(request) => {
                let response = connection.accept(request).unwrap();
                connection.send_response(response).unwrap();
            }
            Event::Message(message) => connection.send(message.clone()).unwrap(),
            _ => {}
        }
        matches!(event, Event::Closed(_))
    });
    let requests: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            Event::Request(request) => Some(request),
            _ => None,
        })
        .collect();
    assert_eq!(
        requests[0].headers.get("Sec-WebSocket-Extensions"),
        Some("permessage-deflate; client_max_window_bits")
    );
    assert_eq!(server.extensions()[0].name(), "permessage-deflate");
    assert!(closed_event(&events).clean, "{events:?}");
    let mut output = String::new();
    helper
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    assert!(output.contains("EXT permessage-deflate"), "{output}");
    assert!(output.ends_with("OK\n"), "{output}");
    assert_eq!(server.state(), State::Closed);
}
