//! Split tokio connections report what became of each send: a send the connection did not
//! take returns the error to its caller. Each test runs over an in-memory duplex stream,
//! bounded by a timeout.
#![cfg(feature = "tokio")]

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use support::tokio_common::bounded;
use tokio::io::{AsyncReadExt, DuplexStream};
use wsline::proto::{SendError, Side};
use wsline::tokio::WebSocket;
use wsline::{CloseCode, Config, Error, Message};

/// A client connection whose peer is the raw other end of the stream.
fn client_over_duplex(capacity: usize) -> (WebSocket<DuplexStream>, DuplexStream) {
    let (client_io, peer) = tokio::io::duplex(capacity);
    let ws = WebSocket::from_upgraded(client_io, Side::Client, Config::default(), &[]);
    (ws, peer)
}

/// A client connection left with a fragmented message in progress: a `send_fragmented`
/// dropped after its first fragment, behind a peer that read nothing until then.
async fn with_a_message_in_progress() -> WebSocket<DuplexStream> {
    let (mut ws, mut peer) = client_over_duplex(64);
    ws.set_send_high_water(0);
    let message = Message::binary(vec![7u8; 3000]);
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        ws.send_fragmented(&message, 1000),
    )
    .await;
    assert!(dropped.is_err(), "the peer reads nothing: the send waits");
    // Room again, so that the driver takes what is sent after the split, and a peer that
    // reads, so that flushes complete.
    ws.set_send_high_water(1 << 20);
    tokio::spawn(async move { tokio::io::copy(&mut peer, &mut tokio::io::sink()).await });
    ws
}

#[tokio::test]
async fn a_send_the_connection_refuses_returns_its_error_to_the_sender() {
    bounded(async {
        let ws = with_a_message_in_progress().await;
        let (_reader, writer) = ws.split();
        let refused = writer.send("after the dropped fragments").await;
        assert!(
            matches!(refused, Err(Error::Send(SendError::MessageInProgress))),
            "{refused:?}"
        );
        // The connection is still open: the refusal was about this message only.
        assert!(!writer.is_closed());
    })
    .await;
}

#[tokio::test]
async fn a_refused_try_send_is_reported_by_the_next_call_of_its_sender() {
    bounded(async {
        let ws = with_a_message_in_progress().await;
        let (_reader, writer) = ws.split();
        let sender = writer.sender();
        // Handed over: the verdict comes later.
        sender.try_send("refused by the connection").unwrap();
        let reported = sender.flush().await;
        assert!(
            matches!(reported, Err(Error::Send(SendError::MessageInProgress))),
            "{reported:?}"
        );
        // Reported once, and to its own sender only.
        writer.flush().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_refused_feed_is_reported_by_the_next_call_of_its_sender() {
    bounded(async {
        let ws = with_a_message_in_progress().await;
        let (_reader, writer) = ws.split();
        writer.feed("refused by the connection").await.unwrap();
        let reported = writer.flush().await;
        assert!(
            matches!(reported, Err(Error::Send(SendError::MessageInProgress))),
            "{reported:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_refused_sink_send_is_reported_by_flush() {
    bounded(async {
        let ws = with_a_message_in_progress().await;
        let (_reader, writer) = ws.split();
        let mut sender = writer.sender();
        let reported = SinkExt::send(&mut sender, Message::text("refused")).await;
        assert!(
            matches!(reported, Err(Error::Send(SendError::MessageInProgress))),
            "{reported:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_pong_over_125_bytes_returns_the_core_error_to_the_sender() {
    bounded(async {
        let (ws, _peer) = client_over_duplex(1 << 16);
        let (_reader, writer) = ws.split();
        let refused = writer.pong(&[0; 126]).await;
        assert!(
            matches!(
                refused,
                Err(Error::Send(SendError::ControlPayloadTooLong(126)))
            ),
            "{refused:?}"
        );
        writer.pong(&[0; 125]).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_close_with_a_code_that_may_not_be_sent_returns_the_core_error() {
    bounded(async {
        let (ws, _peer) = client_over_duplex(1 << 16);
        let (_reader, writer) = ws.split();
        let refused = writer.close(CloseCode::ABNORMAL, "").await;
        assert!(
            matches!(refused, Err(Error::Send(SendError::InvalidCloseCode(1006)))),
            "{refused:?}"
        );
        assert!(!writer.is_closed());
    })
    .await;
}

#[tokio::test]
async fn a_send_after_the_connection_failed_returns_the_failure() {
    bounded(async {
        let (ws, mut peer) = client_over_duplex(1 << 16);
        let (mut reader, writer) = ws.split();
        // A frame with a reserved opcode (RFC 6455 §5.2): the client fails the connection.
        tokio::io::AsyncWriteExt::write_all(&mut peer, b"\x83\x00")
            .await
            .unwrap();
        let mut close = [0; 2];
        peer.read_exact(&mut close).await.unwrap();
        assert_eq!(close[0], 0x88, "a close frame: {close:02x?}");
        drop(peer);
        let ended = reader.recv().await;
        assert!(matches!(ended, Some(Err(Error::Protocol(_)))), "{ended:?}");
        let refused = writer.send("too late").await;
        assert!(matches!(refused, Err(Error::Protocol(_))), "{refused:?}");
        let refused = writer.try_send("too late");
        assert!(refused.is_err(), "{refused:?}");
        let refused = writer.ping().await;
        assert!(refused.is_err(), "{refused:?}");
    })
    .await;
}

#[tokio::test]
async fn a_send_after_a_clean_close_returns_closed() {
    bounded(async {
        let (ws, mut peer) = client_over_duplex(1 << 16);
        let (mut reader, writer) = ws.split();
        // The peer starts the closing handshake (an unmasked server frame: 1000), then sees
        // the client's reply and the end of the stream.
        tokio::io::AsyncWriteExt::write_all(&mut peer, b"\x88\x02\x03\xe8")
            .await
            .unwrap();
        // A masked close frame echoing 1000: 0x88, 0x80 | 2, mask, code.
        let mut reply = [0; 8];
        peer.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[0], 0x88, "a close frame: {reply:02x?}");
        // The server closes the TCP connection first (RFC 6455 §7.1.1).
        drop(peer);
        assert!(reader.recv().await.is_none());
        let refused = writer.send("too late").await;
        assert!(
            matches!(refused, Err(Error::Send(SendError::Closed))),
            "{refused:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn sends_handed_over_before_reunite_are_applied_and_later_ones_refused() {
    bounded(async {
        let (ws, _peer) = client_over_duplex(1 << 16);
        let (reader, writer) = ws.split();
        let stale = writer.sender();
        writer.send("before").await.unwrap();
        let ws = reader.reunite(writer).await.unwrap();
        let refused = stale.send("after").await;
        assert!(
            matches!(refused, Err(Error::Send(SendError::Closed))),
            "{refused:?}"
        );
        drop(ws);
    })
    .await;
}
