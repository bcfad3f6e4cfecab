//! RFC 6455 §5 (data framing) and §10.3 (masking keys), through [`Connection`], in
//! client/server pairs.

#[macro_use]
mod support;

use support::proto as common;

use bytes::Bytes;
use common::{
    client, client_frame, encode, events, frame_to, open, peak_heap_during, sent_close_code,
    sent_frames, server, server_frame, written, Pair, RFC_KEY,
};
use wsline::proto::{
    Connection, Event, Failure, Fragment, Frame, Opcode, ProtocolError, Rsv, Side, State,
};
use wsline::{Config, Message};

/// Feeds `input` to a fresh connection on `side` and checks that it failed with `code` for
/// `error`: a close frame with that code written, later input ignored, and (server only) the
/// TCP connection shut down at once (RFC 6455 §7.1.7).
fn assert_fails(side: Side, config: Config, input: &[u8], code: u16, error: ProtocolError) {
    let mut connection = open(side, config);
    connection.handle_data(input);
    assert_fails_now(&mut connection, code, error);
}

fn assert_fails_now(connection: &mut Connection, code: u16, error: ProtocolError) {
    let side = connection.side();
    assert_eq!(
        connection.close_status().failure,
        Some(Failure::Protocol(error))
    );
    assert_eq!(connection.state(), State::Closing);
    let out = written(connection);
    assert_eq!(out.shutdown, side == Side::Server, "{side:?} shutdown");
    let frames = common::parse_frames(&out.bytes);
    let close = frames.last().expect("a close frame");
    assert_eq!(close.frame.opcode, Opcode::Close);
    assert_eq!(close.frame.payload[..2], code.to_be_bytes());
    let _ = events(connection);
    // RFC 6455 §7.1.7: "An endpoint MUST NOT continue to attempt to process data [...] after
    // being instructed to _Fail the WebSocket Connection_."
    connection.handle_data(&frame_to(side, Opcode::Text, true, b"after"));
    assert!(
        events(connection).is_empty(),
        "input after failing is ignored"
    );
    assert!(written(connection).bytes.is_empty());
}

fn received(side: Side, config: Config, input: &[u8]) -> Vec<Event> {
    let mut connection = open(side, config);
    connection.handle_data(input);
    assert_eq!(connection.close_status().failure, None);
    events(&mut connection)
}

fn messages(side: Side, input: &[u8]) -> Vec<Event> {
    received(side, common::no_timers(), input)
}

fn text(text: &str) -> Event {
    Event::Message(Message::text(text.to_owned()))
}

fn binary(data: &[u8]) -> Event {
    Event::Message(Message::binary(data.to_vec()))
}

/// RFC 6455 §5.7, byte for byte, on the wire in both directions.
mod section_5_7_examples {
    use super::*;

    const MASKED_HELLO: &[u8] = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";

    #[test]
    fn server_sends_single_frame_unmasked_text() {
        let mut server = server();
        server.send_text("Hello").unwrap();
        assert_eq!(written(&mut server).bytes, b"\x81\x05Hello");
    }

    #[test]
    fn client_receives_single_frame_unmasked_text() {
        assert_eq!(messages(Side::Client, b"\x81\x05Hello"), [text("Hello")]);
    }

    #[test]
    fn client_sends_single_frame_masked_text() {
        let mut client = client(); // its first masking key is the RFC's
        client.send_text("Hello").unwrap();
        assert_eq!(written(&mut client).bytes, MASKED_HELLO);
    }

    #[test]
    fn server_receives_single_frame_masked_text() {
        assert_eq!(messages(Side::Server, MASKED_HELLO), [text("Hello")]);
    }

    #[test]
    fn server_sends_fragmented_unmasked_text() {
        let mut server = server();
        server.send_text_fragment("Hel", false).unwrap();
        server.send_continuation(b"lo", true).unwrap();
        assert_eq!(written(&mut server).bytes, b"\x01\x03Hel\x80\x02lo");
    }

    #[test]
    fn client_receives_fragmented_unmasked_text() {
        assert_eq!(
            messages(Side::Client, b"\x01\x03Hel\x80\x02lo"),
            [text("Hello")]
        );
    }

    #[test]
    fn server_sends_unmasked_ping_and_client_answers_with_masked_pong() {
        let mut server = server();
        server.send_ping(b"Hello").unwrap();
        let ping = written(&mut server).bytes;
        assert_eq!(ping, b"\x89\x05Hello");
        let mut client = client();
        client.handle_data(&ping);
        assert_eq!(
            events(&mut client),
            [Event::Ping(Bytes::from_static(b"Hello"))]
        );
        assert_eq!(
            written(&mut client).bytes,
            b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
        );
    }

    #[test]
    fn server_receives_masked_pong() {
        let pong = b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
        assert_eq!(
            messages(Side::Server, pong),
            [Event::Pong(Bytes::from_static(b"Hello"))]
        );
    }

    #[test]
    fn server_sends_256_byte_binary_with_16_bit_length() {
        let mut server = server();
        server.send_binary(&[0xAB; 256]).unwrap();
        let bytes = written(&mut server).bytes;
        assert_eq!(bytes[..4], [0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(bytes.len(), 4 + 256);
        assert_eq!(messages(Side::Client, &bytes), [binary(&[0xAB; 256])]);
    }

    #[test]
    fn server_sends_64_kib_binary_with_64_bit_length() {
        let payload = vec![0xCD; 65_536];
        let mut server = server();
        server.send_binary(&payload).unwrap();
        // The same frame again, queued without a copy.
        server.send(Message::binary(payload.clone())).unwrap();
        let bytes = written(&mut server).bytes;
        let frame = [&[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0, 0][..], &payload].concat();
        assert_eq!(bytes, [&frame[..], &frame[..]].concat());
        assert_eq!(
            messages(Side::Client, &bytes),
            [binary(&payload), binary(&payload)]
        );
    }

    #[test]
    fn client_sends_256_byte_and_64_kib_binary_masked() {
        let mut client = client();
        client.send_binary(&[0x11; 256]).unwrap();
        client.send_binary(&[0x22; 65_536]).unwrap();
        let bytes = written(&mut client).bytes;
        assert_eq!(bytes[..4], [0x82, 0xFE, 0x01, 0x00]);
        assert_eq!(bytes[4..8], RFC_KEY);
        let second = 8 + 256;
        assert_eq!(
            bytes[second..second + 10],
            [0x82, 0xFF, 0, 0, 0, 0, 0, 0x01, 0, 0]
        );
        assert_eq!(
            messages(Side::Server, &bytes),
            [binary(&[0x11; 256]), binary(&[0x22; 65_536])]
        );
    }
}

/// RFC 6455 §5.1: clients mask, servers do not.
mod section_5_1_masking {
    use super::*;

    #[test]
    fn server_fails_connection_on_unmasked_frame() {
        let input = server_frame(Opcode::Text, true, b"Hello");
        let error = ProtocolError::UnmaskedFrame;
        assert_fails(Side::Server, common::no_timers(), &input, 1002, error);
    }

    #[test]
    fn client_fails_connection_on_masked_frame() {
        let input = client_frame(Opcode::Text, true, b"Hello");
        let error = ProtocolError::MaskedFrame;
        assert_fails(Side::Client, common::no_timers(), &input, 1002, error);
    }

    #[test]
    fn server_fails_on_unmasked_control_frame() {
        let input = server_frame(Opcode::Ping, true, b"");
        let error = ProtocolError::UnmaskedFrame;
        assert_fails(Side::Server, common::no_timers(), &input, 1002, error);
    }

    #[test]
    fn server_accepts_unmasked_frames_only_when_configured() {
        let config = Config {
            accept_unmasked_frames: true,
            ..common::no_timers()
        };
        let input = server_frame(Opcode::Text, true, b"Hello");
        assert_eq!(received(Side::Server, config, &input), [text("Hello")]);
    }

    #[test]
    fn client_masks_every_frame_and_server_none() {
        let mut pair = Pair::open_default();
        pair.client.send_text("a").unwrap();
        pair.client.send_ping(b"b").unwrap();
        pair.client.send_binary(&[0; 20_000]).unwrap();
        pair.server.send_text("c").unwrap();
        pair.server.send(Message::binary(vec![0; 20_000])).unwrap();
        pair.drive();
        let client_frames = common::parse_frames(after_head(&pair.client_wire));
        assert_eq!(client_frames.len(), 3); // text, ping, binary
        assert!(client_frames.iter().all(|wire| wire.mask.is_some()));
        let server_frames = common::parse_frames(after_head(&pair.server_wire));
        assert_eq!(server_frames.len(), 3); // text, pong, binary
        assert!(server_frames.iter().all(|wire| wire.mask.is_none()));
    }

    /// What follows the HTTP head at the start of a wire.
    fn after_head(wire: &[u8]) -> &[u8] {
        let end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        &wire[end..]
    }

    /// RFC 6455 §10.3: "The masking key needs to be unpredictable".
    #[test]
    fn client_picks_a_fresh_masking_key_per_frame() {
        // The default source: seeded from the operating system.
        let mut client = Connection::after_handshake(
            Side::Client,
            common::no_timers(),
            std::time::Instant::now(),
        );
        for _ in 0..8 {
            client.send_text("same").unwrap();
        }
        let keys: Vec<[u8; 4]> = common::parse_frames(&written(&mut client).bytes)
            .into_iter()
            .map(|wire| wire.mask.unwrap())
            .collect();
        let mut distinct = keys.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 1, "keys repeat: {keys:?}");
    }
}

/// RFC 6455 §5.2: base framing protocol.
mod section_5_2_base_framing {
    use super::*;

    fn reserved_opcode_fails(side: Side) {
        for opcode in (0x3..=0x7).chain(0xB..=0xF) {
            let mut input = vec![0x80 | opcode, 0x00];
            if side == Side::Server {
                input[1] |= 0x80;
                input.extend_from_slice(&RFC_KEY);
            }
            let error = ProtocolError::ReservedOpcode(opcode);
            assert_fails(side, common::no_timers(), &input, 1002, error);
        }
    }

    on_both_sides!(
        reserved_opcode_fails,
        server_fails_on_reserved_opcodes,
        client_fails_on_reserved_opcodes
    );

    fn reserved_bits_fail(side: Side) {
        let mask = (side == Side::Server).then_some(RFC_KEY);
        for rsv in [Rsv::RSV1, Rsv::RSV2, Rsv::RSV3, Rsv::RSV1 | Rsv::RSV3] {
            for opcode in [Opcode::Text, Opcode::Binary, Opcode::Ping, Opcode::Close] {
                let input = encode(opcode, true, rsv, b"", mask);
                assert_fails(
                    side,
                    common::no_timers(),
                    &input,
                    1002,
                    ProtocolError::ReservedBits,
                );
            }
            // On a continuation frame too.
            let mut input = encode(Opcode::Text, false, Rsv::NONE, b"a", mask);
            input.extend(encode(Opcode::Continuation, true, rsv, b"b", mask));
            assert_fails(
                side,
                common::no_timers(),
                &input,
                1002,
                ProtocolError::ReservedBits,
            );
        }
    }

    on_both_sides!(
        reserved_bits_fail,
        server_fails_on_reserved_bits_without_extension,
        client_fails_on_reserved_bits_without_extension
    );

    #[test]
    fn server_fails_on_64_bit_length_with_most_significant_bit() {
        let mut input = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        input.extend_from_slice(&RFC_KEY);
        let error = ProtocolError::InvalidPayloadLength;
        assert_fails(Side::Server, common::no_timers(), &input, 1002, error);
    }

    #[test]
    fn client_fails_on_64_bit_length_with_most_significant_bit() {
        let input = [0x82, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        let error = ProtocolError::InvalidPayloadLength;
        assert_fails(Side::Client, common::no_timers(), &input, 1002, error);
    }

    #[test]
    fn server_accepts_non_minimal_lengths() {
        // "Hello" with a 16-bit and a 64-bit length, masked with the RFC 6455 §5.7 key.
        let masked = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let mut input = vec![0x81, 0xFE, 0x00, 0x05];
        input.extend_from_slice(&RFC_KEY);
        input.extend_from_slice(&masked);
        input.extend_from_slice(&[0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0, 5]);
        input.extend_from_slice(&RFC_KEY);
        input.extend_from_slice(&masked);
        assert_eq!(
            messages(Side::Server, &input),
            [text("Hello"), text("Hello")]
        );
    }

    #[test]
    fn client_accepts_non_minimal_lengths() {
        let mut input = b"\x81\x7E\x00\x05Hello".to_vec();
        input.extend_from_slice(b"\x81\x7F\x00\x00\x00\x00\x00\x00\x00\x05Hello");
        assert_eq!(
            messages(Side::Client, &input),
            [text("Hello"), text("Hello")]
        );
    }

    #[test]
    fn server_waits_for_a_header_cut_anywhere() {
        let mut input = vec![0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0x01, 0x00];
        input.extend_from_slice(&RFC_KEY);
        input.extend(std::iter::repeat_n(0u8, 256));
        for cut in 1..14 {
            let mut server = server();
            server.handle_data(&input[..cut]);
            assert!(events(&mut server).is_empty(), "cut at {cut}");
            server.handle_data(&input[cut..]);
            let expected: Vec<u8> = [0x37, 0xfa, 0x21, 0x3d].repeat(64);
            assert_eq!(events(&mut server), [binary(&expected)], "cut at {cut}");
        }
    }

    #[test]
    fn empty_messages_pass_both_ways() {
        let mut pair = Pair::open_default();
        pair.client.send_text("").unwrap();
        pair.client.send_binary(b"").unwrap();
        pair.server.send_text("").unwrap();
        pair.server.send_binary(b"").unwrap();
        pair.drive();
        assert_eq!(events(&mut pair.server), [text(""), binary(b"")]);
        assert_eq!(events(&mut pair.client), [text(""), binary(b"")]);
    }
}

/// RFC 6455 §5.4: fragmentation.
mod section_5_4_fragmentation {
    use super::*;

    fn continuation_without_start_fails(side: Side) {
        let input = frame_to(side, Opcode::Continuation, true, b"lo");
        let error = ProtocolError::UnexpectedContinuation;
        assert_fails(side, common::no_timers(), &input, 1002, error);
    }

    on_both_sides!(
        continuation_without_start_fails,
        server_fails_on_continuation_without_a_start,
        client_fails_on_continuation_without_a_start
    );

    fn new_start_inside_fragmented_message_fails(side: Side) {
        for second in [Opcode::Text, Opcode::Binary] {
            let mut input = frame_to(side, Opcode::Text, false, b"Hel");
            input.extend(frame_to(side, second, true, b"lo"));
            let error = ProtocolError::ExpectedContinuation;
            assert_fails(side, common::no_timers(), &input, 1002, error);
        }
    }

    on_both_sides!(
        new_start_inside_fragmented_message_fails,
        server_fails_on_new_message_inside_a_fragmented_one,
        client_fails_on_new_message_inside_a_fragmented_one
    );

    fn control_frames_inside_a_fragmented_message_are_delivered(side: Side) {
        let mut connection = open(side, common::no_timers());
        let mut input = frame_to(side, Opcode::Binary, false, b"He");
        input.extend(frame_to(side, Opcode::Ping, true, b"ping"));
        input.extend(frame_to(side, Opcode::Continuation, false, b"l"));
        input.extend(frame_to(side, Opcode::Pong, true, b"pong"));
        input.extend(frame_to(side, Opcode::Continuation, true, b"lo"));
        connection.handle_data(&input);
        assert_eq!(
            events(&mut connection),
            [
                Event::Ping(Bytes::from_static(b"ping")),
                Event::Pong(Bytes::from_static(b"pong")),
                binary(b"Hello"),
            ]
        );
        let frames = sent_frames(&mut connection);
        assert_eq!(frames, [Frame::new(Opcode::Pong, "ping")]);
    }

    on_both_sides!(
        control_frames_inside_a_fragmented_message_are_delivered,
        server_delivers_control_frames_interleaved_in_a_fragmented_message,
        client_delivers_control_frames_interleaved_in_a_fragmented_message
    );

    #[test]
    fn many_fragments_including_empty_ones_make_one_message() {
        let mut pair = Pair::open_default();
        pair.client.send_text_fragment("", false).unwrap();
        for piece in ["κό", "", "σμε"] {
            pair.client
                .send_continuation(piece.as_bytes(), false)
                .unwrap();
        }
        pair.client.send_continuation(b"", true).unwrap();
        pair.server.send_binary_fragment(b"a", false).unwrap();
        pair.server.send_continuation(b"b", true).unwrap();
        pair.drive();
        assert_eq!(events(&mut pair.server), [text("κόσμε")]);
        assert_eq!(events(&mut pair.client), [binary(b"ab")]);
    }

    #[test]
    fn sending_fragments_out_of_order_is_an_error() {
        let mut server = server();
        assert_eq!(
            server.send_continuation(b"x", true),
            Err(wsline::proto::SendError::NoMessageInProgress)
        );
        server.send_text_fragment("a", false).unwrap();
        assert_eq!(
            server.send_text("b"),
            Err(wsline::proto::SendError::MessageInProgress)
        );
        assert_eq!(
            server.send_binary_fragment(b"b", true),
            Err(wsline::proto::SendError::MessageInProgress)
        );
        // Control frames may still go out in the middle of the message.
        server.send_ping(b"").unwrap();
        server.send_continuation(b"b", true).unwrap();
        assert_eq!(written(&mut server).bytes, b"\x01\x01a\x89\x00\x80\x01b");
    }

    fn fragments(config: Config, side: Side, input: &[u8]) -> Vec<Event> {
        let config = Config {
            deliver_fragments: true,
            ..config
        };
        received(side, config, input)
    }

    fn fragment(data: Message, first: bool, fin: bool) -> Event {
        Event::Fragment(Fragment { data, first, fin })
    }

    #[test]
    fn deliver_fragments_mode_delivers_each_frame() {
        for side in [Side::Server, Side::Client] {
            let mut input = frame_to(side, Opcode::Text, false, b"Hel");
            input.extend(frame_to(side, Opcode::Ping, true, b""));
            input.extend(frame_to(side, Opcode::Continuation, true, b"lo"));
            input.extend(frame_to(side, Opcode::Binary, true, b"\xff"));
            assert_eq!(
                fragments(common::no_timers(), side, &input),
                [
                    fragment(Message::text("Hel"), true, false),
                    Event::Ping(Bytes::new()),
                    fragment(Message::text("lo"), false, true),
                    fragment(Message::binary(&b"\xff"[..]), true, true),
                ],
                "{side:?}"
            );
        }
    }

    #[test]
    fn deliver_fragments_mode_keeps_characters_whole() {
        // "€" is E2 82 AC: cut after its first byte.
        let mut input = client_frame(Opcode::Text, false, b"a\xE2");
        input.extend(client_frame(Opcode::Continuation, true, b"\x82\xACb"));
        assert_eq!(
            fragments(common::no_timers(), Side::Server, &input),
            [
                fragment(Message::text("a"), true, false),
                fragment(Message::text("€b"), false, true),
            ]
        );
    }

    #[test]
    fn deliver_fragments_mode_still_limits_the_whole_message() {
        let config = Config {
            max_message_size: Some(10),
            deliver_fragments: true,
            ..common::no_timers()
        };
        let mut server = open(Side::Server, config);
        server.handle_data(&client_frame(Opcode::Binary, false, &[1; 6]));
        assert_eq!(events(&mut server).len(), 1);
        server.handle_data(&client_frame(Opcode::Continuation, true, &[2; 6]));
        let error = ProtocolError::MessageTooBig {
            size: 12,
            limit: 10,
        };
        assert_fails_now(&mut server, 1009, error);
    }
}

/// RFC 6455 §5.5: control frames.
mod section_5_5_control_frames {
    use super::*;

    fn fragmented_control_frame_fails(side: Side) {
        for opcode in [Opcode::Ping, Opcode::Pong, Opcode::Close] {
            let input = frame_to(side, opcode, false, b"");
            let error = ProtocolError::FragmentedControlFrame;
            assert_fails(side, common::no_timers(), &input, 1002, error);
        }
    }

    on_both_sides!(
        fragmented_control_frame_fails,
        server_fails_on_fragmented_control_frame,
        client_fails_on_fragmented_control_frame
    );

    fn long_control_frame_fails(side: Side) {
        for opcode in [Opcode::Ping, Opcode::Pong, Opcode::Close] {
            let input = frame_to(side, opcode, true, &[b'a'; 126]);
            let error = ProtocolError::ControlFrameTooLong;
            assert_fails(side, common::no_timers(), &input, 1002, error);
        }
    }

    on_both_sides!(
        long_control_frame_fails,
        server_fails_on_control_frame_longer_than_125_bytes,
        client_fails_on_control_frame_longer_than_125_bytes
    );

    /// RFC 6455 §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
    /// response [...] A Pong frame sent in response to a Ping frame must have identical
    /// "Application data" as found in the message body of the Ping frame being replied to."
    fn ping_is_answered_with_identical_pong(side: Side) {
        let mut connection = open(side, common::no_timers());
        let payload = [0x5A; 125];
        connection.handle_data(&frame_to(side, Opcode::Ping, true, &payload));
        connection.handle_data(&frame_to(side, Opcode::Ping, true, b""));
        assert_eq!(
            events(&mut connection),
            [
                Event::Ping(Bytes::copy_from_slice(&payload)),
                Event::Ping(Bytes::new())
            ]
        );
        assert_eq!(
            sent_frames(&mut connection),
            [
                Frame::new(Opcode::Pong, payload.to_vec()),
                Frame::new(Opcode::Pong, "")
            ]
        );
    }

    on_both_sides!(
        ping_is_answered_with_identical_pong,
        server_answers_ping_with_identical_pong,
        client_answers_ping_with_identical_pong
    );

    #[test]
    fn unsolicited_pong_is_reported_and_not_answered() {
        for side in [Side::Server, Side::Client] {
            let mut connection = open(side, common::no_timers());
            connection.handle_data(&frame_to(side, Opcode::Pong, true, b"beat"));
            assert_eq!(
                events(&mut connection),
                [Event::Pong(Bytes::from_static(b"beat"))]
            );
            assert!(written(&mut connection).bytes.is_empty());
        }
    }

    #[test]
    fn pings_and_pongs_round_trip_through_a_pair() {
        let mut pair = Pair::open_default();
        pair.client.send_ping(b"c").unwrap();
        pair.server.send_ping(b"s").unwrap();
        pair.server.send_pong(b"heartbeat").unwrap();
        pair.drive();
        assert_eq!(
            events(&mut pair.server),
            [
                Event::Ping(Bytes::from_static(b"c")),
                Event::Pong(Bytes::from_static(b"s"))
            ]
        );
        assert_eq!(
            events(&mut pair.client),
            [
                Event::Ping(Bytes::from_static(b"s")),
                Event::Pong(Bytes::from_static(b"heartbeat")),
                Event::Pong(Bytes::from_static(b"c")),
            ]
        );
    }

    #[test]
    fn sending_a_control_payload_over_125_bytes_is_an_error() {
        let mut client = client();
        assert_eq!(
            client.send_ping(&[0; 126]),
            Err(wsline::proto::SendError::ControlPayloadTooLong(126))
        );
        assert_eq!(
            client.send_pong(&[0; 200]),
            Err(wsline::proto::SendError::ControlPayloadTooLong(200))
        );
        client.send_ping(&[0; 125]).unwrap();
        assert_eq!(sent_frames(&mut client).len(), 1);
    }
}

/// RFC 6455 §5.6 and §8.1: text messages are UTF-8, checked as they arrive.
mod section_5_6_utf8 {
    use super::*;

    fn invalid_text_fails(side: Side, pieces: &[&[u8]]) {
        let mut input = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = if i == 0 {
                Opcode::Text
            } else {
                Opcode::Continuation
            };
            input.extend(frame_to(side, opcode, i + 1 == pieces.len(), piece));
        }
        let mut connection = open(side, common::no_timers());
        connection.handle_data(&input);
        assert!(
            events(&mut connection)
                .iter()
                .all(|event| !matches!(event, Event::Message(_))),
            "{pieces:?}"
        );
        assert_eq!(sent_close_code(&mut connection), Some(1007), "{pieces:?}");
        assert_eq!(
            connection.close_status().failure,
            Some(Failure::Protocol(ProtocolError::InvalidUtf8))
        );
    }

    #[test]
    fn server_fails_on_invalid_utf8() {
        invalid_text_fails(Side::Server, &[b"\xff"]);
        invalid_text_fails(Side::Server, &[b"Hello\xc0\xafworld"]); // overlong '/'
        invalid_text_fails(Side::Server, &[b"\xed\xa0\x80"]); // a surrogate
        invalid_text_fails(Side::Server, &[b"\xe2\x82"]); // cut at the end
    }

    #[test]
    fn client_fails_on_invalid_utf8() {
        invalid_text_fails(Side::Client, &[b"\xff"]);
        invalid_text_fails(Side::Client, &[b"\xe2\x82"]);
    }

    #[test]
    fn server_fails_on_invalid_utf8_split_across_fragments() {
        // A valid start of a 4-byte character, then a byte that cannot continue it.
        invalid_text_fails(Side::Server, &[b"\xf0\x90", b"\x80\x28"]);
        // A valid message but for its last fragment ending inside a character.
        invalid_text_fails(Side::Server, &[b"ok", b"\xce"]);
    }

    #[test]
    fn client_fails_on_invalid_utf8_split_across_fragments() {
        invalid_text_fails(Side::Client, &[b"\xf0\x90", b"\x80\x28"]);
        invalid_text_fails(Side::Client, &[b"ok", b"", b"\xce"]);
    }

    #[test]
    fn valid_characters_split_across_fragments_are_accepted() {
        // "κόσμε" cut inside every character.
        let bytes = "κόσμε".as_bytes();
        for side in [Side::Server, Side::Client] {
            let mut input = frame_to(side, Opcode::Text, false, &bytes[..1]);
            for piece in bytes[1..].chunks(2) {
                input.extend(frame_to(side, Opcode::Continuation, false, piece));
            }
            input.extend(frame_to(side, Opcode::Continuation, true, b""));
            assert_eq!(messages(side, &input), [text("κόσμε")], "{side:?}");
        }
    }

    fn fails_fast_in_the_first_fragment(side: Side) {
        // RFC 6455 §8.1 / Autobahn 6.4: the first fragment already cannot be UTF-8; the
        // connection fails before the message ends.
        for first in [&b"Hello\xff"[..], b"\xf4\x90"] {
            let mut connection = open(side, common::no_timers());
            connection.handle_data(&frame_to(side, Opcode::Text, false, first));
            assert_eq!(sent_close_code(&mut connection), Some(1007), "{first:?}");
        }
    }

    on_both_sides!(
        fails_fast_in_the_first_fragment,
        server_fails_fast_in_the_first_fragment,
        client_fails_fast_in_the_first_fragment
    );

    #[test]
    fn server_fails_fast_inside_a_frame_before_its_payload_ends() {
        let mut payload = b"valid text, then ".to_vec();
        payload.push(0xff);
        payload.resize(10_000, b'x');
        let input = client_frame(Opcode::Text, true, &payload);
        let mut server = server();
        // The header and the first 100 payload bytes only.
        server.handle_data(&input[..8 + 100]);
        assert_eq!(sent_close_code(&mut server), Some(1007));
    }

    #[test]
    fn binary_messages_are_not_checked_for_utf8() {
        let input = client_frame(Opcode::Binary, true, b"\xff\xfe");
        assert_eq!(messages(Side::Server, &input), [binary(b"\xff\xfe")]);
    }
}

/// Limits: `Config::max_message_size` and `Config::max_frame_size` (1009).
mod limits {
    use super::*;

    fn limited(max_message_size: Option<usize>, max_frame_size: Option<usize>) -> Config {
        Config {
            max_message_size,
            max_frame_size,
            ..common::no_timers()
        }
    }

    fn header_only(side: Side, opcode: Opcode, fin: bool, len: u64) -> Vec<u8> {
        let header = wsline::proto::FrameHeader {
            fin,
            rsv: Rsv::NONE,
            opcode,
            mask: (side == Side::Server).then_some(RFC_KEY),
            payload_len: len,
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        out
    }

    fn too_big_message_fails_on_its_header(side: Side) {
        let input = header_only(side, Opcode::Binary, true, 1001);
        let error = ProtocolError::MessageTooBig {
            size: 1001,
            limit: 1000,
        };
        assert_fails(side, limited(Some(1000), None), &input, 1009, error);
    }

    on_both_sides!(
        too_big_message_fails_on_its_header,
        server_fails_with_1009_when_the_header_announces_a_message_too_big,
        client_fails_with_1009_when_the_header_announces_a_message_too_big
    );

    #[test]
    fn message_at_the_limit_passes() {
        for side in [Side::Server, Side::Client] {
            let input = frame_to(side, Opcode::Binary, true, &[7; 1000]);
            let events = received(side, limited(Some(1000), None), &input);
            assert_eq!(events, [binary(&[7; 1000])]);
        }
    }

    #[test]
    fn fragments_adding_up_past_the_limit_fail_on_the_header_that_passes_it() {
        for side in [Side::Server, Side::Client] {
            let mut connection = open(side, limited(Some(1000), None));
            connection.handle_data(&frame_to(side, Opcode::Text, false, &[b'a'; 600]));
            connection.handle_data(&header_only(side, Opcode::Continuation, true, 401));
            let error = ProtocolError::MessageTooBig {
                size: 1001,
                limit: 1000,
            };
            assert_fails_now(&mut connection, 1009, error);
        }
    }

    #[test]
    fn default_limit_is_1_mib() {
        let mut pair = Pair::open_default();
        pair.client.send_binary(&vec![1; 1 << 20]).unwrap();
        pair.drive();
        assert_eq!(events(&mut pair.server), [binary(&vec![1; 1 << 20])]);
        pair.client.send_binary(&vec![1; (1 << 20) + 1]).unwrap();
        pair.drive();
        assert_eq!(
            pair.server
                .close_status()
                .sent
                .as_ref()
                .unwrap()
                .code
                .as_u16(),
            1009
        );
    }

    #[test]
    fn no_limit_accepts_a_message_over_1_mib() {
        let config = limited(None, None);
        let input = client_frame(Opcode::Binary, true, &vec![3; 3 << 20]);
        assert_eq!(
            received(Side::Server, config, &input),
            [binary(&vec![3; 3 << 20])]
        );
    }

    #[test]
    fn frame_size_limit_fails_with_1009_but_fragments_under_it_pass() {
        for side in [Side::Server, Side::Client] {
            let config = limited(None, Some(100));
            let mut input = frame_to(side, Opcode::Binary, false, &[1; 100]);
            input.extend(frame_to(side, Opcode::Continuation, true, &[2; 100]));
            let expected = [[1; 100], [2; 100]].concat();
            assert_eq!(received(side, config.clone(), &input), [binary(&expected)]);
            let input = header_only(side, Opcode::Binary, true, 101);
            let error = ProtocolError::FrameTooBig {
                size: 101,
                limit: 100,
            };
            assert_fails(side, config, &input, 1009, error);
        }
    }

    #[test]
    fn a_huge_length_claim_allocates_nothing_beyond_a_bounded_read_ahead() {
        // 2^62 bytes claimed, with the default limit: fails at once.
        let input = header_only(Side::Server, Opcode::Binary, true, 1 << 62);
        let mut server = server();
        let ((), peak) = peak_heap_during(|| server.handle_data(&input));
        assert_eq!(sent_close_code(&mut server), Some(1009));
        assert!(peak < 16 << 10, "peak {peak}");
        // Without a limit: memory follows the bytes received, not the claim.
        let mut server = open(Side::Server, limited(None, None));
        let mut input = header_only(Side::Server, Opcode::Binary, true, 1 << 40);
        input.extend_from_slice(&[0; 1000]);
        let ((), peak) = peak_heap_during(|| server.handle_data(&input));
        assert!(peak <= 128 << 10, "peak {peak}");
        assert_eq!(server.state(), State::Open);
    }
}
