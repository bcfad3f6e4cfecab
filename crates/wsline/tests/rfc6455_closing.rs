//! RFC 6455 §5.5.1, §7 (closing the connection) and the timers that end connections:
//! close codes, the closing handshake, who shuts TCP down first, failing, and timeouts on a
//! fake clock. Client/server pairs.

#[macro_use]
mod support;

use support::proto as common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    close_payload, closed_event, events, frame_to, no_timers, open, sent_close, sent_frames,
    written, Pair,
};
use wsline::proto::{
    CloseCode, CloseFrame, Connection, ConnectionClosed, Event, Failure, Frame, Initiator, Opcode,
    ProtocolError, SendError, Side, State,
};
use wsline::Config;

fn close(code: u16, reason: &str) -> Option<CloseFrame> {
    Some(CloseFrame::new(CloseCode::from(code), reason))
}

/// RFC 6455 §5.5.1 and §7.4: what a close frame may carry.
mod section_7_4_close_codes {
    use super::*;

    /// Feeds a close frame with `code` to a connection on `side`; a valid code is echoed
    /// (RFC 6455 §5.5.1), any other fails the connection with 1002.
    fn every_code_follows_rfc6455_7_4(side: Side) {
        for code in 0..=u16::MAX {
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            let mut connection = open(side, no_timers());
            let payload = close_payload(code, b"why");
            connection.handle_data(&frame_to(side, Opcode::Close, true, &payload));
            let status = connection.close_status().clone();
            let echoed = sent_close(&mut connection);
            if valid {
                assert_eq!(echoed, close(code, "why"), "code {code}");
                assert_eq!(status.received, close(code, "why"), "code {code}");
                assert_eq!(status.initiator, Some(Initiator::Remote));
                assert!(status.clean && status.failure.is_none(), "code {code}");
            } else {
                assert_eq!(echoed.unwrap().code.as_u16(), 1002, "code {code}");
                assert_eq!(status.received, None, "code {code}");
                assert_eq!(
                    status.failure,
                    Some(Failure::Protocol(ProtocolError::InvalidCloseCode(code)))
                );
                assert!(!status.clean, "code {code}");
            }
        }
    }

    on_both_sides!(
        every_code_follows_rfc6455_7_4,
        server_accepts_valid_close_codes_and_fails_on_the_others,
        client_accepts_valid_close_codes_and_fails_on_the_others
    );

    fn one_byte_payload_fails(side: Side) {
        let mut connection = open(side, no_timers());
        connection.handle_data(&frame_to(side, Opcode::Close, true, &[0x03]));
        assert_eq!(sent_close(&mut connection).unwrap().code.as_u16(), 1002);
        assert_eq!(
            connection.close_status().failure,
            Some(Failure::Protocol(ProtocolError::InvalidClosePayloadLength))
        );
    }

    on_both_sides!(
        one_byte_payload_fails,
        server_fails_on_one_byte_close_payload,
        client_fails_on_one_byte_close_payload
    );

    fn invalid_utf8_reason_fails(side: Side) {
        let mut connection = open(side, no_timers());
        let payload = close_payload(1000, b"bad \xff reason");
        connection.handle_data(&frame_to(side, Opcode::Close, true, &payload));
        assert_eq!(sent_close(&mut connection).unwrap().code.as_u16(), 1007);
        assert_eq!(
            connection.close_status().failure,
            Some(Failure::Protocol(ProtocolError::InvalidUtf8))
        );
    }

    on_both_sides!(
        invalid_utf8_reason_fails,
        server_fails_with_1007_on_invalid_utf8_reason,
        client_fails_with_1007_on_invalid_utf8_reason
    );

    #[test]
    fn empty_close_payload_means_no_status_and_is_echoed_empty() {
        for side in [Side::Server, Side::Client] {
            let mut connection = open(side, no_timers());
            connection.handle_data(&frame_to(side, Opcode::Close, true, b""));
            assert_eq!(
                sent_frames(&mut connection),
                [Frame::new(Opcode::Close, "")]
            );
            let status = connection.close_status();
            assert_eq!(status.received, close(1005, ""));
            assert_eq!(status.code(), CloseCode::NO_STATUS_RECEIVED);
            assert!(status.clean);
        }
    }

    #[test]
    fn reason_of_123_bytes_is_kept_whole() {
        let reason = "é".repeat(61) + "a"; // 123 bytes
        for side in [Side::Server, Side::Client] {
            let mut connection = open(side, no_timers());
            let payload = close_payload(4000, reason.as_bytes());
            connection.handle_data(&frame_to(side, Opcode::Close, true, &payload));
            assert_eq!(connection.close_status().received, close(4000, &reason));
            assert_eq!(connection.close_status().reason(), reason);
            assert_eq!(sent_close(&mut connection), close(4000, &reason));
        }
    }

    #[test]
    fn reason_of_124_bytes_makes_the_frame_too_long() {
        let payload = close_payload(1000, &[b'a'; 124]);
        let mut connection = open(Side::Server, no_timers());
        connection.handle_data(&frame_to(Side::Server, Opcode::Close, true, &payload));
        assert_eq!(
            connection.close_status().failure,
            Some(Failure::Protocol(ProtocolError::ControlFrameTooLong))
        );
    }

    #[test]
    fn sent_reason_is_cut_to_123_bytes_at_a_character_boundary() {
        let mut server = open(Side::Server, no_timers());
        server
            .send_close(CloseCode::NORMAL, &"€".repeat(50))
            .unwrap();
        let sent = sent_close(&mut server).unwrap();
        assert_eq!(sent.reason, "€".repeat(41)); // 123 bytes
        assert_eq!(server.close_status().sent, Some(sent));
    }

    #[test]
    fn codes_that_may_not_be_sent_are_refused() {
        let mut client = open(Side::Client, no_timers());
        for code in [0, 999, 1004, 1006, 1015, 2999, 5000] {
            assert_eq!(
                client.send_close(CloseCode::from(code), ""),
                Err(SendError::InvalidCloseCode(code))
            );
        }
        assert_eq!(client.state(), State::Open);
        assert!(written(&mut client).bytes.is_empty());
        // 1005 means "no status": a close frame with an empty payload.
        client
            .send_close(CloseCode::NO_STATUS_RECEIVED, "ignored")
            .unwrap();
        assert_eq!(sent_frames(&mut client), [Frame::new(Opcode::Close, "")]);
    }
}

/// RFC 6455 §7.1.2–§7.1.5: the closing handshake, and RFC 6455 §7.1.1: the server closes
/// TCP first.
mod section_7_1_closing_handshake {
    use super::*;

    fn close_handshake_started_by(initiator: Side) {
        let (mut first, mut second) = match initiator {
            Side::Client => (
                open(Side::Client, no_timers()),
                open(Side::Server, no_timers()),
            ),
            Side::Server => (
                open(Side::Server, no_timers()),
                open(Side::Client, no_timers()),
            ),
        };
        first.send_close(CloseCode::NORMAL, "bye").unwrap();
        assert_eq!(first.state(), State::Closing);
        let request = written(&mut first);
        assert!(!request.shutdown);
        second.handle_data(&request.bytes);
        // RFC 6455 §5.5.1: the close frame is answered at once, echoing the code.
        let reply = written(&mut second);
        assert_eq!(common::parse_frames(&reply.bytes).len(), 1);
        assert_eq!(second.state(), State::Closing);
        first.handle_data(&reply.bytes);
        let after_reply = written(&mut first);
        assert!(after_reply.bytes.is_empty());
        // RFC 6455 §7.1.1: "the server [...] SHOULD close the underlying TCP connection
        // first"; the client waits for it.
        let (server, client, server_out, client_out) = match initiator {
            Side::Client => (&mut second, &mut first, reply, after_reply),
            Side::Server => (&mut first, &mut second, after_reply, reply),
        };
        assert!(server_out.shutdown, "the server shuts down TCP");
        assert!(!client_out.shutdown, "the client waits");
        assert_eq!(client.state(), State::Closing);
        client.handle_eof();
        assert!(written(client).shutdown);
        server.handle_eof();
        let initiator_is = |side: Side| {
            if side == initiator {
                Initiator::Local
            } else {
                Initiator::Remote
            }
        };
        for connection in [server, client] {
            assert_eq!(connection.state(), State::Closed);
            let expected = ConnectionClosed {
                sent: close(1000, "bye"),
                received: close(1000, "bye"),
                initiator: Some(initiator_is(connection.side())),
                clean: true,
                failure: None,
            };
            assert_eq!(closed_event(&events(connection)), expected);
            assert_eq!(connection.close_status(), &expected);
        }
    }

    #[test]
    fn client_starts_the_closing_handshake() {
        close_handshake_started_by(Side::Client);
    }

    #[test]
    fn server_starts_the_closing_handshake() {
        close_handshake_started_by(Side::Server);
    }

    #[test]
    fn closing_handshake_through_a_pair_keeps_local_and_remote_frames() {
        let mut pair = Pair::open_default();
        pair.server
            .send_close(CloseCode::from(4001), "server reason")
            .unwrap();
        pair.drive();
        assert!(pair.server_shutdown && pair.client_shutdown);
        let server = closed_event(&events(&mut pair.server));
        let client = closed_event(&events(&mut pair.client));
        assert_eq!(server.initiator, Some(Initiator::Local));
        assert_eq!(client.initiator, Some(Initiator::Remote));
        assert_eq!(server.sent, close(4001, "server reason"));
        assert_eq!(client.received, close(4001, "server reason"));
        assert_eq!(client.sent, close(4001, "server reason"));
        assert!(server.clean && client.clean);
        assert_eq!(client.code().as_u16(), 4001);
        assert_eq!(client.reason(), "server reason");
    }

    /// RFC 6455 §7.1.3: both ends may start closing at the same time.
    #[test]
    fn simultaneous_close_is_clean_on_both_ends() {
        let mut pair = Pair::open_default();
        pair.client
            .send_close(CloseCode::GOING_AWAY, "client")
            .unwrap();
        pair.server
            .send_close(CloseCode::from(1012), "server")
            .unwrap();
        pair.drive();
        let client = closed_event(&events(&mut pair.client));
        let server = closed_event(&events(&mut pair.server));
        assert_eq!(client.initiator, Some(Initiator::Local));
        assert_eq!(server.initiator, Some(Initiator::Local));
        assert_eq!(
            (client.sent, client.received),
            (close(1001, "client"), close(1012, "server"))
        );
        assert_eq!(
            (server.sent, server.received),
            (close(1012, "server"), close(1001, "client"))
        );
        assert!(client.clean && server.clean);
    }

    #[test]
    fn eof_without_close_frame_is_abnormal() {
        for side in [Side::Server, Side::Client] {
            let mut connection = open(side, no_timers());
            connection.handle_eof();
            assert_eq!(connection.state(), State::Closed);
            let closed = closed_event(&events(&mut connection));
            assert_eq!(closed.code(), CloseCode::ABNORMAL);
            assert_eq!(closed, ConnectionClosed::default());
            assert!(written(&mut connection).shutdown);
        }
    }

    #[test]
    fn eof_before_the_close_reply_is_not_clean() {
        let mut client = open(Side::Client, no_timers());
        client.send_close(CloseCode::NORMAL, "").unwrap();
        client.handle_eof();
        let closed = closed_event(&events(&mut client));
        assert_eq!(closed.sent, close(1000, ""));
        assert_eq!(closed.received, None);
        assert_eq!(closed.initiator, Some(Initiator::Local));
        assert!(!closed.clean);
    }
}

/// RFC 6455 §1.4 and §5.5.1: after a close frame, no more data.
mod data_after_close {
    use super::*;

    fn data_after_close_is_ignored(side: Side) {
        let mut connection = open(side, no_timers());
        let mut input = frame_to(side, Opcode::Text, true, b"before");
        input.extend(frame_to(
            side,
            Opcode::Close,
            true,
            &close_payload(1000, b""),
        ));
        input.extend(frame_to(side, Opcode::Text, true, b"after"));
        input.extend(frame_to(side, Opcode::Ping, true, b"after"));
        connection.handle_data(&input);
        connection.handle_data(&frame_to(side, Opcode::Binary, true, b"later"));
        assert_eq!(
            events(&mut connection),
            [Event::Message(wsline::Message::text("before"))]
        );
        // Only the close reply went out: no pong to the ping after the close.
        assert_eq!(
            sent_frames(&mut connection),
            [Frame::new(Opcode::Close, close_payload(1000, b""))]
        );
    }

    on_both_sides!(
        data_after_close_is_ignored,
        server_ignores_data_after_a_close_frame,
        client_ignores_data_after_a_close_frame
    );

    fn every_send(connection: &mut Connection) -> Vec<Result<(), SendError>> {
        vec![
            connection.send_text("x"),
            connection.send_binary(b"x"),
            connection.send(wsline::Message::binary(vec![0; 20_000])),
            connection.send_text_fragment("x", false),
            connection.send_binary_fragment(b"x", false),
            connection.send_ping(b""),
            connection.send_pong(b""),
            connection.send_close(CloseCode::NORMAL, ""),
        ]
    }

    #[test]
    fn sending_while_closing_or_closed_is_a_typed_error() {
        for side in [Side::Server, Side::Client] {
            let mut connection = open(side, no_timers());
            connection.send_close(CloseCode::NORMAL, "").unwrap();
            let _ = written(&mut connection);
            assert!(every_send(&mut connection)
                .into_iter()
                .all(|result| result == Err(SendError::Closed)));
            assert!(written(&mut connection).bytes.is_empty());
            connection.handle_eof();
            assert_eq!(connection.state(), State::Closed);
            assert!(every_send(&mut connection)
                .into_iter()
                .all(|result| result == Err(SendError::Closed)));
        }
    }

    #[test]
    fn sending_before_the_handshake_is_a_typed_error() {
        let mut server = Connection::server(no_timers(), Instant::now());
        assert!(every_send(&mut server)
            .into_iter()
            .all(|result| result == Err(SendError::NotOpen)));
        assert!(written(&mut server).bytes.is_empty());
    }

    #[test]
    fn continuing_a_message_after_close_is_a_typed_error() {
        let mut server = open(Side::Server, no_timers());
        server.send_text_fragment("a", false).unwrap();
        server.send_close(CloseCode::NORMAL, "").unwrap();
        assert_eq!(server.send_continuation(b"b", true), Err(SendError::Closed));
    }
}

/// RFC 6455 §7.1.7: _Fail the WebSocket Connection_.
mod section_7_1_7_fail {
    use super::*;

    #[test]
    fn server_fail_sends_close_and_shuts_down_without_waiting() {
        let mut server = open(Side::Server, no_timers());
        server.fail(CloseCode::POLICY_VIOLATION, "go away");
        let out = written(&mut server);
        assert_eq!(
            common::parse_frames(&out.bytes)[0].frame,
            Frame::new(Opcode::Close, close_payload(1008, b"go away"))
        );
        assert!(out.shutdown);
        assert_eq!(server.state(), State::Closing);
        assert_eq!(server.send_text("x"), Err(SendError::Closed));
        // The client's reply is not processed.
        server.handle_data(&frame_to(
            Side::Server,
            Opcode::Close,
            true,
            &close_payload(1008, b""),
        ));
        assert!(events(&mut server).is_empty());
        server.handle_eof();
        let closed = closed_event(&events(&mut server));
        assert_eq!(closed.sent, close(1008, "go away"));
        assert_eq!(closed.received, None);
        assert!(!closed.clean);
    }

    #[test]
    fn client_fail_sends_close_and_waits_for_the_server() {
        let mut client = open(Side::Client, no_timers());
        client.fail(CloseCode::POLICY_VIOLATION, "");
        let out = written(&mut client);
        assert_eq!(common::parse_frames(&out.bytes).len(), 1);
        assert!(!out.shutdown);
        client.handle_eof();
        assert!(written(&mut client).shutdown);
        assert_eq!(client.state(), State::Closed);
    }

    #[test]
    fn fail_with_1006_sends_no_close_frame() {
        for side in [Side::Server, Side::Client] {
            let mut connection = open(side, no_timers());
            connection.fail(CloseCode::ABNORMAL, "");
            let out = written(&mut connection);
            assert!(out.bytes.is_empty());
            assert_eq!(out.shutdown, side == Side::Server);
            assert_eq!(connection.state(), State::Closing);
            assert_eq!(connection.close_status().sent, None);
        }
    }

    #[test]
    fn fail_with_a_code_that_may_not_be_sent_sends_1011() {
        let mut server = open(Side::Server, no_timers());
        server.fail(CloseCode::NO_STATUS_RECEIVED, "oops");
        assert_eq!(sent_close(&mut server), close(1011, "oops"));
    }

    #[test]
    fn fail_while_closing_sends_no_second_close_frame() {
        let mut server = open(Side::Server, no_timers());
        server.send_close(CloseCode::NORMAL, "").unwrap();
        server.fail(CloseCode::PROTOCOL_ERROR, "");
        let out = written(&mut server);
        assert_eq!(
            common::parse_frames(&out.bytes),
            common::parse_frames(&frame_to(
                Side::Client,
                Opcode::Close,
                true,
                &close_payload(1000, b"")
            ))
        );
        assert!(out.shutdown);
    }

    #[test]
    fn fail_during_the_handshake_closes_at_once() {
        let mut server = Connection::server(no_timers(), Instant::now());
        server.fail(CloseCode::PROTOCOL_ERROR, "");
        assert_eq!(server.state(), State::Closed);
        let out = written(&mut server);
        assert!(out.bytes.is_empty() && out.shutdown);
        assert_eq!(
            closed_event(&events(&mut server)),
            ConnectionClosed::default()
        );
        server.fail(CloseCode::PROTOCOL_ERROR, "");
        assert!(events(&mut server).is_empty());
    }

    #[test]
    fn protocol_error_in_the_peer_close_while_closing_sends_no_second_close() {
        let mut client = open(Side::Client, no_timers());
        client.send_close(CloseCode::NORMAL, "").unwrap();
        let _ = written(&mut client);
        client.handle_data(&frame_to(Side::Client, Opcode::Close, true, &[0x03]));
        assert!(written(&mut client).bytes.is_empty());
        assert_eq!(
            client.close_status().failure,
            Some(Failure::Protocol(ProtocolError::InvalidClosePayloadLength))
        );
    }
}

/// Timers on a fake clock: `poll_timeout` says when, `handle_timeout(now)` fires.
mod timeouts {
    use super::*;

    fn timers(open: u64, close: u64, ping: u64, pong: u64) -> Config {
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        Config {
            open_timeout: secs(open),
            close_timeout: secs(close),
            ping_interval: secs(ping),
            ping_timeout: secs(pong),
            ..Config::default()
        }
    }

    #[test]
    fn no_timers_means_no_timeout() {
        for side in [Side::Server, Side::Client] {
            let mut connection = open(side, no_timers());
            connection.handle_timeout(Instant::now() + Duration::from_secs(3600));
            assert_eq!(connection.poll_timeout(), None);
            assert_eq!(connection.state(), State::Open);
        }
    }

    #[test]
    fn server_open_timeout_counts_from_construction() {
        let t0 = Instant::now();
        let mut server = Connection::server(timers(10, 0, 0, 0), t0);
        assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        server.handle_timeout(t0 + Duration::from_secs(9));
        assert_eq!(server.state(), State::Connecting);
        server.handle_data(b"GET / HTTP/1.1\r\n"); // slow headers do not extend it
        server.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(server.state(), State::Closed);
        let out = written(&mut server);
        assert!(out.bytes.is_empty() && out.shutdown);
        let closed = closed_event(&events(&mut server));
        assert_eq!(closed.failure, Some(Failure::OpenTimeout));
        assert_eq!(server.poll_timeout(), None);
    }

    #[test]
    fn client_open_timeout_fires_without_a_response() {
        let mut pair = Pair::connecting("ws://example.com/", timers(5, 0, 0, 0), no_timers());
        let request = pair.client.connect_request().unwrap();
        pair.client.send_request(request).unwrap();
        pair.drive(); // the server never answers
        assert_eq!(pair.next_timeout(), Some(pair.now + Duration::from_secs(5)));
        pair.advance(Duration::from_secs(5));
        assert_eq!(pair.client.state(), State::Closed);
        assert!(pair.client_shutdown);
        let closed = closed_event(&events(&mut pair.client));
        assert_eq!(closed.failure, Some(Failure::OpenTimeout));
    }

    #[test]
    fn open_timeout_stops_once_open() {
        let (mut pair, _, _) = Pair::open(timers(5, 0, 0, 0), timers(5, 0, 0, 0));
        assert_eq!(pair.next_timeout(), None);
        pair.advance(Duration::from_secs(60));
        assert_eq!(pair.client.state(), State::Open);
        assert_eq!(pair.server.state(), State::Open);
    }

    fn ping_frames(wire: &[u8]) -> Vec<Bytes> {
        common::parse_frames(wire)
            .into_iter()
            .filter(|wire| wire.frame.opcode == Opcode::Ping)
            .map(|wire| wire.frame.payload)
            .collect()
    }

    #[test]
    fn keepalive_ping_goes_out_after_the_interval_and_a_pong_satisfies_it() {
        let mut pair = Pair::after_handshake(no_timers(), timers(0, 0, 20, 20));
        pair.drive();
        pair.advance(Duration::from_secs(19));
        assert!(pair.server_wire.is_empty());
        pair.advance(Duration::from_secs(1));
        assert_eq!(ping_frames(&pair.server_wire).len(), 1);
        // The client answered on its own; the pong reached the server.
        let server_events = events(&mut pair.server);
        assert!(matches!(server_events[..], [Event::Pong(_)]));
        pair.advance(Duration::from_secs(19));
        assert_eq!(pair.server.state(), State::Open);
        pair.advance(Duration::from_secs(1));
        let pings = ping_frames(&pair.server_wire);
        assert_eq!(pings.len(), 2);
        assert_ne!(
            pings[0], pings[1],
            "each keepalive ping has its own payload"
        );
        assert_eq!(pair.server.state(), State::Open);
    }

    #[test]
    fn keepalive_fails_with_1011_without_a_pong() {
        for side in [Side::Server, Side::Client] {
            let t0 = Instant::now();
            let mut connection = Connection::after_handshake(side, timers(0, 0, 1, 2), t0);
            connection.handle_timeout(t0);
            connection.handle_timeout(t0 + Duration::from_secs(1));
            let out = written(&mut connection);
            assert_eq!(ping_frames(&out.bytes).len(), 1);
            connection.handle_timeout(t0 + Duration::from_secs(2));
            assert_eq!(connection.state(), State::Open, "{side:?}");
            connection.handle_timeout(t0 + Duration::from_secs(3));
            assert_eq!(connection.state(), State::Closing, "{side:?}");
            assert_eq!(sent_close(&mut connection).unwrap().code.as_u16(), 1011);
            assert_eq!(
                connection.close_status().failure,
                Some(Failure::KeepaliveTimeout)
            );
        }
    }

    /// Regression: under a pipelined load the peer's pong queued behind megabytes of its
    /// messages and a busy, live connection was failed with 1011 (the soak test
    /// `pipelined_random_messages_come_back_in_order_from_the_tokio_server` in CI).
    #[test]
    fn keepalive_waits_while_the_peer_is_sending_and_fails_once_it_goes_silent() {
        for side in [Side::Server, Side::Client] {
            let t0 = Instant::now();
            let mut connection = Connection::after_handshake(side, timers(0, 0, 1, 2), t0);
            connection.handle_timeout(t0);
            connection.handle_timeout(t0 + Duration::from_secs(1));
            assert_eq!(ping_frames(&written(&mut connection).bytes).len(), 1);
            // Messages keep coming, and a pong with another payload, but not the answer.
            for second in 2..10 {
                connection.handle_data(&frame_to(side, Opcode::Binary, true, b"busy"));
                connection.handle_data(&frame_to(side, Opcode::Pong, true, b"other"));
                connection.handle_timeout(t0 + Duration::from_secs(second));
                assert_eq!(connection.state(), State::Open, "{side:?} at {second} s");
            }
            let _ = events(&mut connection);
            // Silent from 9 s: the timer armed at 9 s runs out at 11 s with nothing heard.
            connection.handle_timeout(t0 + Duration::from_secs(10));
            assert_eq!(connection.state(), State::Open, "{side:?}");
            assert_eq!(
                connection.poll_timeout(),
                Some(t0 + Duration::from_secs(11))
            );
            connection.handle_timeout(t0 + Duration::from_secs(11));
            assert_eq!(connection.state(), State::Closing, "{side:?}");
            assert_eq!(sent_close(&mut connection).unwrap().code.as_u16(), 1011);
            assert_eq!(
                connection.close_status().failure,
                Some(Failure::KeepaliveTimeout)
            );
        }
    }

    #[test]
    fn close_timeout_ends_a_closing_handshake_the_peer_never_answers() {
        let t0 = Instant::now();
        let mut client = Connection::after_handshake(Side::Client, timers(0, 10, 0, 0), t0);
        client.send_close(CloseCode::NORMAL, "").unwrap();
        let _ = written(&mut client);
        client.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_secs(11)));
        client.handle_timeout(t0 + Duration::from_secs(11));
        assert_eq!(client.state(), State::Closed);
        assert!(written(&mut client).shutdown);
        let closed = closed_event(&events(&mut client));
        assert_eq!(closed.failure, Some(Failure::CloseTimeout));
        assert!(!closed.clean);
    }

    #[test]
    fn client_gives_up_waiting_for_the_server_tcp_close_after_the_close_timeout() {
        let t0 = Instant::now();
        let mut client = Connection::after_handshake(Side::Client, timers(0, 10, 0, 0), t0);
        let close_frame = frame_to(Side::Client, Opcode::Close, true, &close_payload(1000, b""));
        client.handle_data(&close_frame);
        let reply = written(&mut client);
        assert!(!reply.bytes.is_empty() && !reply.shutdown);
        // The server's TCP close never comes.
        client.handle_timeout(t0);
        client.handle_timeout(t0 + Duration::from_secs(9));
        assert_eq!(client.state(), State::Closing);
        client.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(client.state(), State::Closed);
        assert!(written(&mut client).shutdown);
        let closed = closed_event(&events(&mut client));
        assert!(closed.clean, "both close frames went through");
        assert_eq!(closed.failure, None);
    }

    #[test]
    fn closing_stops_keepalive() {
        let t0 = Instant::now();
        let mut server = Connection::after_handshake(Side::Server, timers(0, 0, 1, 1), t0);
        server.handle_timeout(t0);
        server.send_close(CloseCode::NORMAL, "").unwrap();
        let _ = written(&mut server);
        server.handle_timeout(t0 + Duration::from_secs(5));
        assert!(written(&mut server).bytes.is_empty());
        assert_eq!(server.close_status().failure, None);
    }
}

/// RFC 6455 §5.5.1 asks for the close reply "as soon as practical"; the core sends it once the
/// application has acknowledged the events before the close frame
/// (`Connection::acknowledge_events`), or once `Config::acknowledge_timeout` has passed, so
/// that replies to those messages go out first. On a fake clock.
mod acknowledging_events {
    use super::*;
    use common::{client_frame, server};

    #[test]
    fn reply_to_a_message_goes_out_before_the_close_reply_that_came_in_the_same_chunk() {
        let mut conn = server();
        let mut input = client_frame(Opcode::Text, true, b"Hello");
        input.extend(client_frame(Opcode::Close, true, &[0x03, 0xe8]));
        conn.handle_data(&input);
        let Some(Event::Message(message)) = conn.poll_event() else {
            panic!("the message comes first");
        };
        conn.send(message).unwrap();
        assert!(conn.poll_event().is_none());
        conn.acknowledge_events();
        assert_eq!(written(&mut conn).bytes, b"\x81\x05Hello\x88\x02\x03\xe8");
        assert_eq!(conn.state(), State::Closing);
    }

    #[test]
    fn reply_to_a_message_goes_out_before_failing_on_the_bad_frame_after_it() {
        let mut conn = server();
        let mut input = client_frame(Opcode::Text, true, b"Hello");
        input.extend([0x8E, 0x80, 0, 0, 0, 0]); // reserved opcode 0xE
        conn.handle_data(&input);
        let Some(Event::Message(message)) = conn.poll_event() else {
            panic!("the message comes first");
        };
        conn.send(message).unwrap();
        assert!(conn.poll_event().is_none());
        conn.acknowledge_events();
        let out = written(&mut conn).bytes;
        assert_eq!(&out[..7], b"\x81\x05Hello");
        assert_eq!(&out[7..8], b"\x88");
        assert_eq!(&out[9..11], b"\x03\xea"); // close 1002, then a reason
    }

    #[test]
    fn close_waits_for_the_events_before_it_to_be_acknowledged() {
        let mut conn = server();
        let mut input = client_frame(Opcode::Text, true, b"Hello");
        input.extend(client_frame(Opcode::Close, true, &[0x03, 0xe8]));
        conn.handle_data(&input);
        assert!(matches!(conn.poll_event(), Some(Event::Message(_))));
        assert!(conn.poll_event().is_none());
        assert!(
            written(&mut conn).bytes.is_empty(),
            "taking events is not acknowledging them"
        );
        assert_eq!(conn.state(), State::Open);
        conn.acknowledge_events();
        assert_eq!(written(&mut conn).bytes, b"\x88\x02\x03\xe8");
    }

    #[test]
    fn acknowledging_with_events_still_queued_keeps_the_close_waiting() {
        let mut conn = server();
        let mut input = client_frame(Opcode::Text, true, b"one");
        input.extend(client_frame(Opcode::Text, true, b"two"));
        input.extend(client_frame(Opcode::Close, true, &[0x03, 0xe8]));
        conn.handle_data(&input);
        assert!(conn.poll_event().is_some());
        conn.acknowledge_events();
        assert!(
            written(&mut conn).bytes.is_empty(),
            "the second message is not taken yet"
        );
        assert!(conn.poll_event().is_some());
        conn.acknowledge_events();
        assert_eq!(written(&mut conn).bytes, b"\x88\x02\x03\xe8");
    }

    #[test]
    fn close_is_answered_once_the_acknowledge_timeout_passes_on_a_fake_clock() {
        let start = Instant::now();
        let config = Config {
            acknowledge_timeout: Some(Duration::from_millis(100)),
            ..Config::default()
        };
        let mut conn = Connection::after_handshake(Side::Server, config, start);
        let mut input = client_frame(Opcode::Text, true, b"Hello");
        input.extend(client_frame(Opcode::Close, true, &[0x03, 0xe8]));
        conn.handle_data(&input);
        assert!(conn.poll_event().is_some());
        conn.handle_timeout(start); // arms the timer
        assert_eq!(
            conn.poll_timeout(),
            Some(start + Duration::from_millis(100)),
            "the acknowledge timeout is the next deadline"
        );
        conn.handle_timeout(start + Duration::from_millis(99));
        assert!(written(&mut conn).bytes.is_empty());
        conn.handle_timeout(start + Duration::from_millis(100));
        assert_eq!(written(&mut conn).bytes, b"\x88\x02\x03\xe8");
        assert_eq!(conn.state(), State::Closing);
    }

    #[test]
    fn the_acknowledge_timeout_runs_from_when_the_last_event_before_the_close_is_taken() {
        let start = Instant::now();
        let config = Config {
            acknowledge_timeout: Some(Duration::from_millis(100)),
            ..Config::default()
        };
        let mut conn = Connection::after_handshake(Side::Server, config, start);
        let mut input = client_frame(Opcode::Text, true, b"one");
        input.extend(client_frame(Opcode::Text, true, b"two"));
        input.extend(client_frame(Opcode::Close, true, &[0x03, 0xe8]));
        conn.handle_data(&input);
        assert!(conn.poll_event().is_some());
        conn.handle_timeout(start + Duration::from_millis(150));
        assert!(
            written(&mut conn).bytes.is_empty(),
            "the second message is not taken yet: no timeout runs"
        );
        let taken = start + Duration::from_millis(150);
        assert!(conn.poll_event().is_some());
        conn.handle_timeout(taken);
        conn.handle_timeout(taken + Duration::from_millis(99));
        assert!(written(&mut conn).bytes.is_empty());
        conn.handle_timeout(taken + Duration::from_millis(100));
        assert_eq!(written(&mut conn).bytes, b"\x88\x02\x03\xe8");
    }

    #[test]
    fn without_an_acknowledge_timeout_the_close_waits_for_the_acknowledgement() {
        let start = Instant::now();
        let config = Config {
            acknowledge_timeout: None,
            ..Config::default()
        };
        let mut conn = Connection::after_handshake(Side::Server, config, start);
        let mut input = client_frame(Opcode::Text, true, b"Hello");
        input.extend(client_frame(Opcode::Close, true, &[0x03, 0xe8]));
        conn.handle_data(&input);
        assert!(conn.poll_event().is_some());
        conn.handle_timeout(start + Duration::from_secs(3600));
        assert!(written(&mut conn).bytes.is_empty());
        conn.acknowledge_events();
        assert_eq!(written(&mut conn).bytes, b"\x88\x02\x03\xe8");
    }

    #[test]
    fn close_is_answered_at_once_when_no_event_is_waiting() {
        let mut conn = server();
        conn.handle_data(&client_frame(Opcode::Close, true, &[0x03, 0xe8]));
        assert_eq!(written(&mut conn).bytes, b"\x88\x02\x03\xe8");
    }
}
