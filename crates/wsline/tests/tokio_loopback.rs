//! The tokio layer end to end on 127.0.0.1: server and client over real sockets, every test
//! bounded by a timeout.
#![cfg(feature = "tokio")]

mod support;

use support::{split_frames, tokio_common, CLOSE, PING};

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_common::{big_client_config, big_server_config, bounded, echo, payload, serve_reporting};
use wsline::proto::{Failure, Fragment, HandshakeError, Request, Response, Side};
use wsline::tokio::{
    accept, connect, connect_on, connect_with, serve_with, Handler, MaybeTlsStream, Server,
    WebSocket,
};
use wsline::{
    BackpressurePolicy, CloseCode, Config, ConnectConfig, Error, IoConfig, Message, ServerConfig,
};

async fn start<H: Handler>(handler: H, config: ServerConfig) -> Server {
    serve_with(handler, "127.0.0.1:0", config)
        .await
        .expect("bind a free port")
}

fn url(server: &Server) -> String {
    format!("ws://{}/", server.local_addr())
}

async fn echo_text_binary_and_large() {
    let server = start(echo, big_server_config()).await;
    let mut ws = connect_with(&url(&server), big_client_config())
        .await
        .unwrap();
    ws.send("Hello, world!").await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::text("Hello, world!")
    );
    ws.send(payload(1000, 1)).await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::binary(payload(1000, 1))
    );
    let large = payload(8 << 20, 7);
    ws.send(large.clone()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::binary(large));
    let text = "κόσμε ".repeat(100_000);
    ws.send(text.as_str()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text(text));
    ws.close(CloseCode::NORMAL, "bye").await.unwrap();
    let closed = ws.close_status().unwrap();
    assert!(closed.clean);
    assert_eq!(closed.code(), CloseCode::NORMAL);
    assert!(ws.recv().await.is_none());
}

#[tokio::test]
async fn echoes_text_binary_and_large_messages_on_the_current_thread_runtime() {
    bounded(echo_text_binary_and_large()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_text_binary_and_large_messages_on_the_multi_thread_runtime() {
    bounded(echo_text_binary_and_large()).await;
}

#[tokio::test]
async fn feed_batches_replies_and_recv_flushes_them() {
    bounded(async {
        let server = start(
            |mut ws: WebSocket<MaybeTlsStream>| async move {
                while let Some(message) = ws.recv().await {
                    ws.feed(message?).await?;
                }
                Ok(())
            },
            ServerConfig::default(),
        )
        .await;
        let mut ws = connect(&url(&server)).await.unwrap();
        for i in 0..100 {
            ws.feed(format!("message {i}")).await.unwrap();
        }
        ws.flush().await.unwrap();
        assert_eq!(ws.pending_send(), 0);
        for i in 0..100 {
            let reply = ws.recv().await.unwrap().unwrap();
            assert_eq!(reply, Message::text(format!("message {i}")));
        }
    })
    .await;
}

#[tokio::test]
async fn stream_and_sink_impls_carry_messages() {
    bounded(async {
        let server = start(echo, ServerConfig::default()).await;
        let mut ws = connect(&url(&server)).await.unwrap();
        SinkExt::send(&mut ws, Message::text("via Sink"))
            .await
            .unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("via Sink"));
        SinkExt::close(&mut ws).await.unwrap();
        assert!(ws.next().await.is_none());
        assert_eq!(ws.close_status().unwrap().code(), CloseCode::NORMAL);
    })
    .await;
}

#[tokio::test]
async fn recv_is_cancel_safe_in_select_against_a_timer() {
    bounded(async {
        const COUNT: usize = 40;
        let server = start(
            |mut ws: WebSocket<MaybeTlsStream>| async move {
                for i in 0..COUNT {
                    ws.send(payload(256 << 10, i as u8)).await?;
                    if i % 4 == 0 {
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                }
                ws.close(CloseCode::NORMAL, "done").await
            },
            big_server_config(),
        )
        .await;
        let mut ws = connect_with(&url(&server), big_client_config())
            .await
            .unwrap();
        let mut received = Vec::new();
        let mut cancelled = 0;
        loop {
            tokio::select! {
                message = ws.recv() => match message {
                    Some(message) => received.push(message.unwrap()),
                    None => break,
                },
                () = tokio::time::sleep(Duration::from_micros(200)) => cancelled += 1,
            }
        }
        assert!(cancelled > 0, "the timer never interrupted recv");
        assert_eq!(received.len(), COUNT);
        for (i, message) in received.into_iter().enumerate() {
            assert_eq!(message, Message::binary(payload(256 << 10, i as u8)));
        }
    })
    .await;
}

async fn split_halves_work_concurrently_and_reunite() {
    let server = start(echo, ServerConfig::default()).await;
    let ws = connect(&url(&server)).await.unwrap();
    let (mut reader, writer) = ws.split();
    const COUNT: usize = 2000;
    let writing = tokio::spawn(async move {
        for i in 0..COUNT {
            writer.send(format!("{i}")).await.unwrap();
        }
        writer
    });
    let reading = tokio::spawn(async move {
        for i in 0..COUNT {
            let message = reader.recv().await.unwrap().unwrap();
            assert_eq!(message, Message::text(format!("{i}")));
        }
        reader
    });
    let writer = writing.await.unwrap();
    let reader = reading.await.unwrap();
    let stale = writer.sender();
    let mut ws = reader.reunite(writer).await.unwrap();
    // Senders belong to the split; they stop with it.
    assert!(stale.send("too late").await.is_err());
    ws.send("after reunite").await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::text("after reunite")
    );
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn split_halves_work_concurrently_and_reunite_on_the_current_thread_runtime() {
    bounded(split_halves_work_concurrently_and_reunite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_work_concurrently_and_reunite_on_the_multi_thread_runtime() {
    bounded(split_halves_work_concurrently_and_reunite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloned_senders_write_whole_messages_from_many_tasks() {
    bounded(async {
        let server = start(echo, ServerConfig::default()).await;
        let (mut reader, writer) = connect(&url(&server)).await.unwrap().split();
        const TASKS: usize = 8;
        const EACH: usize = 200;
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let sender = writer.sender();
            tasks.push(tokio::spawn(async move {
                for i in 0..EACH {
                    sender.send(format!("{task}:{i}")).await.unwrap();
                }
            }));
        }
        let mut next = [0; TASKS];
        for _ in 0..TASKS * EACH {
            let message = reader.recv().await.unwrap().unwrap();
            let text = message.as_text().unwrap();
            let (task, i) = text.split_once(':').unwrap();
            let task: usize = task.parse().unwrap();
            assert_eq!(
                i.parse::<usize>().unwrap(),
                next[task],
                "order within a sender"
            );
            next[task] += 1;
        }
        for task in tasks {
            task.await.unwrap();
        }
        writer.close(CloseCode::NORMAL, "").await.unwrap();
        assert!(reader.recv().await.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_fragmented_sends_frames_of_at_most_the_size_and_arrives_whole() {
    bounded(async {
        // A sync server that sees each fragment (deliver_fragments) tells their sizes.
        let (report, mut fragments) = tokio::sync::mpsc::unbounded_channel();
        let mut config = ServerConfig::default();
        config.protocol.deliver_fragments = true;
        config.protocol.extensions.clear();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = wsline::sync::server::serve_on(
            move |_: &mut wsline::sync::server::Connection, fragment: Message| {
                let _ = report.send(fragment);
                Ok(())
            },
            listener,
            config,
        )
        .unwrap();
        let mut ws = connect(&format!("ws://{}/", server.local_addr()))
            .await
            .unwrap();
        let text = "añ€😀".repeat(100); // 1000 bytes, characters of 1 to 4 bytes
        ws.send_fragmented(&Message::text(text.clone()), 64)
            .await
            .unwrap();
        let mut received = String::new();
        while received.len() < text.len() {
            let fragment = fragments.recv().await.unwrap();
            assert!(fragment.len() <= 64 && !fragment.is_empty(), "{fragment}");
            received.push_str(fragment.as_text().expect("text fragments"));
        }
        assert_eq!(received, text);
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_prepared_broadcasts_one_encoding_through_many_senders() {
    bounded(async {
        let senders = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let registry = std::sync::Arc::clone(&senders);
        let handler = move |ws: WebSocket<MaybeTlsStream>| {
            let registry = std::sync::Arc::clone(&registry);
            async move {
                let (mut reader, writer) = ws.split();
                registry.lock().unwrap().push(writer.sender());
                while reader.recv().await.is_some() {}
                drop(writer);
                Ok(())
            }
        };
        let server = start(handler, ServerConfig::default()).await;
        // Compression on for one client (each connection then compresses the message
        // itself), off for the others (they share the encoded frame).
        let mut clients = Vec::new();
        for compress in [true, false, false] {
            let mut config = ConnectConfig::default();
            if !compress {
                config.protocol.extensions.clear();
            }
            clients.push(connect_with(&url(&server), config).await.unwrap());
        }
        while senders.lock().unwrap().len() < clients.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let prepared = wsline::proto::PreparedMessage::new(Message::text("to everyone"));
        let all: Vec<_> = senders.lock().unwrap().clone();
        for sender in &all {
            sender.send_prepared(&prepared).await.unwrap();
        }
        for client in &mut clients {
            assert_eq!(
                client.recv().await.unwrap().unwrap(),
                Message::text("to everyone")
            );
            client.close(CloseCode::NORMAL, "").await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn keepalive_closes_a_dead_peer_with_1011() {
    bounded(async {
        let mut config = ServerConfig::default();
        config.protocol.ping_interval = Some(Duration::from_millis(50));
        config.protocol.ping_timeout = Some(Duration::from_millis(100));
        config.protocol.close_timeout = Some(Duration::from_millis(200));
        let (server, mut outcome) = serve_reporting(config, |mut ws| async move {
            let result = ws.recv().await;
            let sent = ws.close_status().and_then(|closed| closed.sent.clone());
            (format!("{result:?}"), sent)
        })
        .await;
        // A peer that completes the handshake and then never reads nor answers.
        let mut dead = raw_handshake(server.local_addr()).await;
        let (result, sent) = outcome.recv().await.unwrap();
        assert!(result.contains("KeepaliveTimeout"), "{result}");
        assert_eq!(sent.unwrap().code, CloseCode::INTERNAL_ERROR);
        // What the dead peer would have read: pings, then the 1011 close frame, then EOF.
        let mut rest = Vec::new();
        dead.read_to_end(&mut rest).await.unwrap();
        let frames = split_frames(&rest);
        assert!(frames.iter().any(|frame| frame.opcode == PING), "no ping");
        let close = frames.last().unwrap();
        assert_eq!((close.opcode, close.close_code()), (CLOSE, Some(1011)));
    })
    .await;
}

#[tokio::test]
async fn a_client_that_only_listens_answers_pings() {
    bounded(async {
        let (server, mut latencies) =
            serve_reporting(ServerConfig::default(), |mut ws| async move {
                let mut latencies = Vec::new();
                for _ in 0..3 {
                    latencies.push(ws.ping().await?);
                }
                ws.send("done").await?;
                ws.close(CloseCode::NORMAL, "").await?;
                Ok::<_, Error>(latencies)
            })
            .await;
        let mut ws = connect(&url(&server)).await.unwrap();
        // Only listens: every pong is written from inside recv.
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("done"));
        assert!(ws.recv().await.is_none());
        let latencies = latencies.recv().await.unwrap().unwrap();
        assert!(latencies.iter().all(|rtt| *rtt < Duration::from_secs(5)));
    })
    .await;
}

#[tokio::test]
async fn a_split_connection_answers_pings_while_the_application_is_idle() {
    bounded(async {
        let (server, mut latency) = serve_reporting(ServerConfig::default(), |mut ws| async move {
            let latency = ws.ping().await;
            let _ = ws.close(CloseCode::NORMAL, "").await;
            latency
        })
        .await;
        let ws = connect(&url(&server)).await.unwrap();
        // Neither half is polled until the server has its pong.
        let (mut reader, _writer) = ws.split();
        assert!(latency.recv().await.unwrap().unwrap() < Duration::from_secs(5));
        assert!(reader.recv().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn ping_reports_the_round_trip_time() {
    bounded(async {
        let server = start(echo, ServerConfig::default()).await;
        let mut ws = connect(&url(&server)).await.unwrap();
        let latency = ws.ping().await.unwrap();
        assert!(latency < Duration::from_secs(5));
        let (_reader, writer) = ws.split();
        assert!(writer.ping().await.unwrap() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_closes_every_connection_with_1001() {
    bounded(async {
        let server = start(echo, ServerConfig::default()).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut ws = connect(&url(&server)).await.unwrap();
            ws.send("hi").await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("hi"));
            // Each client listens until the server ends the connection.
            clients.push(tokio::spawn(async move {
                let end = ws.recv().await;
                (end.is_none(), ws.close_status().cloned())
            }));
        }
        assert_eq!(server.connection_count(), 3);
        let handle = server.handle();
        let shutting_down = tokio::spawn(async move { handle.shutting_down().await });
        let started = tokio::time::Instant::now();
        server.shutdown().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(4));
        shutting_down.await.unwrap();
        assert_eq!(server.connection_count(), 0);
        for client in clients {
            let (ended_normally, closed) = client.await.unwrap();
            // 1001 is a normal closure: the stream just ends.
            assert!(ended_normally);
            let closed = closed.unwrap();
            assert_eq!(closed.code(), CloseCode::GOING_AWAY);
            assert!(closed.clean);
        }
        assert!(TcpStream::connect(server.local_addr()).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn shutdown_drops_handlers_that_ignore_it_after_the_timeout() {
    bounded(async {
        let config = ServerConfig {
            shutdown_timeout: Duration::from_millis(200),
            ..ServerConfig::default()
        };
        let server = start(
            |ws: WebSocket<MaybeTlsStream>| async move {
                // Holds the connection without ever polling it.
                let _held = ws;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            },
            config,
        )
        .await;
        let mut ws = connect(&url(&server)).await.unwrap();
        let started = tokio::time::Instant::now();
        server.shutdown().await.unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
        // The dropped connection still said goodbye with 1001.
        assert!(ws.recv().await.is_none());
        assert_eq!(ws.close_status().unwrap().code(), CloseCode::GOING_AWAY);
    })
    .await;
}

#[tokio::test]
async fn max_connections_makes_further_clients_wait() {
    bounded(async {
        let config = ServerConfig {
            max_connections: 1,
            ..ServerConfig::default()
        };
        let server = start(echo, config).await;
        let mut first = connect(&url(&server)).await.unwrap();
        let address = url(&server);
        let second = tokio::spawn(async move { connect(&address).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !second.is_finished(),
            "second client served beyond the limit"
        );
        first.close(CloseCode::NORMAL, "").await.unwrap();
        drop(first);
        let mut second = second.await.unwrap().unwrap();
        second.send("now").await.unwrap();
        assert_eq!(second.recv().await.unwrap().unwrap(), Message::text("now"));
    })
    .await;
}

#[tokio::test]
async fn a_slow_reader_makes_send_wait_at_the_high_water_mark() {
    bounded(async {
        const HIGH_WATER: usize = 256 << 10;
        const MESSAGE: usize = 64 << 10;
        let config = ServerConfig {
            io: IoConfig {
                send_high_water: HIGH_WATER,
                ..IoConfig::default()
            },
            backpressure: BackpressurePolicy::Error,
            ..ServerConfig::default()
        };
        let (server, mut report) = serve_reporting(config, |mut ws| async move {
            let mut most_pending = 0;
            let mut sent = 0;
            // Feeds until a feed has waited 300 ms for room.
            while let Ok(fed) =
                tokio::time::timeout(Duration::from_millis(300), ws.feed(payload(MESSAGE, 0))).await
            {
                fed.unwrap();
                sent += 1;
                most_pending = most_pending.max(ws.pending_send());
            }
            let refused = ws.try_send(payload(MESSAGE, 0));
            (sent, most_pending, format!("{refused:?}"))
        })
        .await;
        // A client that never reads.
        let _stalled = raw_handshake(server.local_addr()).await;
        let (sent, most_pending, refused) = report.recv().await.unwrap();
        assert!(sent > HIGH_WATER / MESSAGE, "sent only {sent} messages");
        // Bounded: at most the mark plus the message that crossed it (and the frame header).
        assert!(most_pending <= HIGH_WATER + MESSAGE + 14, "{most_pending}");
        assert!(refused.contains("SendBufferFull"), "{refused}");
    })
    .await;
}

#[tokio::test]
async fn try_send_past_the_mark_closes_with_1008_under_the_close_policy() {
    bounded(async {
        let config = ServerConfig {
            io: IoConfig {
                send_high_water: 64 << 10,
                ..IoConfig::default()
            },
            backpressure: BackpressurePolicy::Close,
            ..ServerConfig::default()
        };
        let (server, mut report) = serve_reporting(config, |mut ws| async move {
            let error = loop {
                if let Err(error) = ws.try_send(payload(16 << 10, 0)) {
                    break error;
                }
                // Gives the socket a chance to take what it can.
                let _ = tokio::time::timeout(Duration::from_millis(1), ws.flush()).await;
            };
            (format!("{error:?}"), ws.state())
        })
        .await;
        let _stalled = raw_handshake(server.local_addr()).await;
        let (error, state) = report.recv().await.unwrap();
        assert!(error.contains("SendBufferFull"), "{error}");
        // Failed with 1008: the close frame waits behind what the client does not read.
        assert_eq!(state, wsline::proto::State::Closing);
    })
    .await;
}

/// Issue 10, point 6: on a split connection the close-with-1008 request waited in the command
/// queue that the driver drains only below the high-water mark, so a slow reader stayed
/// connected (until keepalive, disabled here, would have dropped it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_backpressure_close_closes_a_slow_reader_at_once() {
    bounded(async {
        let mut config = ServerConfig {
            io: wsline::IoConfig {
                send_high_water: 64 << 10,
                ..wsline::IoConfig::default()
            },
            backpressure: BackpressurePolicy::Close,
            ..ServerConfig::default()
        };
        config.protocol.ping_interval = None;
        config.protocol.close_timeout = Some(Duration::from_millis(500));
        let (server, mut report) = serve_reporting(config, |ws| async move {
            let (mut reader, writer) = ws.split();
            let refused = loop {
                match writer.try_send(payload(16 << 10, 0)) {
                    Ok(()) => tokio::task::yield_now().await,
                    Err(error) => break error,
                }
            };
            // Failed at once: the close frame waits behind what the client does not read,
            // and the close timeout ends the connection.
            let closing = tokio::time::timeout(Duration::from_secs(20), async {
                while !writer.is_closed() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .is_ok();
            while let Some(Ok(_)) = reader.recv().await {}
            (format!("{refused:?}"), closing, reader.close_status())
        })
        .await;
        let _stalled = raw_handshake(server.local_addr()).await;
        let (refused, closing, closed) = report.recv().await.unwrap();
        assert!(refused.contains("SendBufferFull"), "{refused}");
        assert!(closing, "the slow reader was not failed");
        let sent = closed.expect("closed").sent.expect("a close frame");
        assert_eq!(sent.code, CloseCode::POLICY_VIOLATION);
    })
    .await;
}

/// Sends `message` (12 bytes) in 3 fragments of 4 bytes from a client to a server that delivers fragments, and
/// returns what the server's `recv_fragment` (on the connection, or on its split reader)
/// gives.
async fn three_fragments(message: Message, split: bool) -> Vec<Fragment> {
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let config = Config {
        deliver_fragments: true,
        ..Config::default()
    };
    let mut client = WebSocket::from_upgraded(client_io, Side::Client, Config::default(), &[]);
    let mut server = WebSocket::from_upgraded(server_io, Side::Server, config, &[]);
    client.send_fragmented(&message, 4).await.unwrap();
    let mut fragments = Vec::new();
    if split {
        let (mut reader, _writer) = server.split();
        for _ in 0..3 {
            fragments.push(reader.recv_fragment().await.unwrap().unwrap());
        }
    } else {
        for _ in 0..3 {
            fragments.push(server.recv_fragment().await.unwrap().unwrap());
        }
    }
    fragments
}

fn assert_three_fragments_of(fragments: &[Fragment], pieces: [Message; 3]) {
    let flags: Vec<_> = fragments.iter().map(|f| (f.first, f.fin)).collect();
    assert_eq!(flags, [(true, false), (false, false), (false, true)]);
    let data: Vec<_> = fragments.iter().map(|f| f.data.clone()).collect();
    assert_eq!(data, pieces);
}

#[tokio::test]
async fn recv_fragment_gives_each_fragment_of_a_text_message_with_its_flags() {
    bounded(async {
        for split in [false, true] {
            let fragments = three_fragments(Message::text("abcdefghijkl"), split).await;
            let pieces = ["abcd", "efgh", "ijkl"].map(Message::text);
            assert_three_fragments_of(&fragments, pieces);
        }
    })
    .await;
}

#[tokio::test]
async fn recv_fragment_gives_each_fragment_of_a_binary_message_with_its_flags() {
    bounded(async {
        for split in [false, true] {
            let message = Message::binary((1..=12).collect::<Vec<u8>>());
            let fragments = three_fragments(message, split).await;
            let pieces =
                [1..=4, 5..=8, 9..=12].map(|bytes| Message::binary(bytes.collect::<Vec<u8>>()));
            assert_three_fragments_of(&fragments, pieces);
        }
    })
    .await;
}

#[tokio::test]
async fn without_deliver_fragments_recv_fragment_gives_whole_messages() {
    bounded(async {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let mut client = WebSocket::from_upgraded(client_io, Side::Client, Config::default(), &[]);
        let mut server = WebSocket::from_upgraded(server_io, Side::Server, Config::default(), &[]);
        client
            .send_fragmented(&Message::text("abcdefghi"), 4)
            .await
            .unwrap();
        let fragment = server.recv_fragment().await.unwrap().unwrap();
        assert_eq!(
            fragment,
            Fragment {
                data: Message::text("abcdefghi"),
                first: true,
                fin: true,
            }
        );
    })
    .await;
}

#[tokio::test]
async fn handshake_errors_get_the_right_http_status() {
    bounded(async {
        let server = start(echo, ServerConfig::default()).await;
        let cases: [(&[u8], &str); 4] = [
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400"),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                "HTTP/1.1 405",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
                "HTTP/1.1 426",
            ),
            (b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", "HTTP/1.1 505"),
        ];
        for (request, status) in cases {
            let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
            stream.write_all(request).await.unwrap();
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.unwrap();
            let response = String::from_utf8_lossy(&response);
            assert!(response.starts_with(status), "{status}: {response}");
        }
    })
    .await;
}

/// Refuses clients without the right `Origin`.
struct OriginCheck;

impl Handler for OriginCheck {
    fn on_handshake(&self, request: &Request, response: &mut Response) {
        if request.headers.get("Origin") != Some("https://good.example") {
            *response = Response::text(403, "Forbidden origin");
        }
    }

    async fn handle(
        self: std::sync::Arc<Self>,
        ws: WebSocket<MaybeTlsStream>,
    ) -> wsline::Result<()> {
        echo(ws).await
    }
}

#[tokio::test]
async fn on_handshake_can_refuse_a_client() {
    bounded(async {
        let server = start(OriginCheck, ServerConfig::default()).await;
        let error = connect(&url(&server)).await.unwrap_err();
        let Error::Handshake(HandshakeError::Rejected(response)) = error else {
            panic!("expected a rejection, got {error:?}");
        };
        assert_eq!(response.status, 403);
        assert_eq!(&response.body[..], b"Forbidden origin\n");
        let config = ConnectConfig {
            origin: Some("https://good.example".into()),
            ..ConnectConfig::default()
        };
        let mut ws = connect_with(&url(&server), config).await.unwrap();
        ws.send("let in").await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("let in"));
    })
    .await;
}

#[tokio::test]
async fn the_handler_sees_the_request_and_the_negotiated_subprotocol() {
    bounded(async {
        let mut config = ServerConfig::default();
        config.protocol.subprotocols = vec!["chat".into()];
        let server = start(
            |mut ws: WebSocket<MaybeTlsStream>| async move {
                let path = ws.request().map(|request| request.path.clone());
                let subprotocol = ws.subprotocol().map(str::to_owned);
                ws.send(format!("{path:?} {subprotocol:?}")).await?;
                ws.close(CloseCode::NORMAL, "").await
            },
            config,
        )
        .await;
        let mut config = ConnectConfig::default();
        config.protocol.subprotocols = vec!["superchat".into(), "chat".into()];
        let address = format!("ws://{}/room?id=7", server.local_addr());
        let mut ws = connect_with(&address, config).await.unwrap();
        assert_eq!(ws.subprotocol(), Some("chat"));
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::text("Some(\"/room?id=7\") Some(\"chat\")")
        );
    })
    .await;
}

#[tokio::test]
async fn a_peer_close_with_an_error_code_is_reported_once() {
    bounded(async {
        let server = start(
            |mut ws: WebSocket<MaybeTlsStream>| async move {
                ws.close(CloseCode::from(4000), "custom").await
            },
            ServerConfig::default(),
        )
        .await;
        let mut ws = connect(&url(&server)).await.unwrap();
        let error = ws.recv().await.unwrap().unwrap_err();
        let Error::ConnectionClosed(closed) = error else {
            panic!("expected the close status, got {error:?}");
        };
        assert_eq!((closed.code().as_u16(), closed.reason()), (4000, "custom"));
        assert!(ws.recv().await.is_none());
        assert!(matches!(ws.send("late").await, Err(Error::Send(_))));
    })
    .await;
}

#[tokio::test]
async fn connect_reports_refused_invalid_and_open_timeouts() {
    bounded(async {
        // Refused: a port nobody listens on.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = connect(&format!("ws://{addr}/")).await.unwrap_err();
        assert!(matches!(error, Error::Io(_)), "{error:?}");

        // Without TLS in the build, wss:// is refused before connecting (tests/tls.rs covers
        // the build with TLS).
        #[cfg(not(feature = "rustls"))]
        assert!(matches!(
            connect("wss://127.0.0.1:1/").await,
            Err(Error::Tls(_))
        ));
        assert!(matches!(
            connect("http://127.0.0.1:1/").await,
            Err(Error::Uri(_))
        ));

        // A server that accepts TCP and never answers the handshake.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let mut config = ConnectConfig::default();
        config.protocol.open_timeout = Some(Duration::from_millis(200));
        let error = connect_with(&format!("ws://{addr}/"), config)
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::Timeout(Failure::OpenTimeout)),
            "{error:?}"
        );
        drop(silent);
    })
    .await;
}

#[tokio::test]
async fn the_server_drops_a_client_that_never_finishes_its_handshake() {
    bounded(async {
        let mut config = ServerConfig::default();
        config.protocol.open_timeout = Some(Duration::from_millis(200));
        let server = start(echo, config).await;
        let mut slow = TcpStream::connect(server.local_addr()).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        // The server closes the connection: read returns EOF (or a reset).
        let _ = slow.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(server.connection_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn accept_and_connect_on_work_over_any_stream() {
    bounded(async {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut ws = accept(server_io).await?;
            while let Some(message) = ws.recv().await {
                ws.send(message?).await?;
            }
            Ok::<_, Error>(())
        });
        let mut ws = connect_on(client_io, "ws://in-memory/", ConnectConfig::default())
            .await
            .unwrap();
        ws.send("over a duplex").await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::text("over a duplex")
        );
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap().unwrap();
    })
    .await;
}

/// The layer wrote to the stream but never flushed it: a buffering stream (TLS, `BufStream`)
/// kept the last bytes written, and the peer waited for them forever.
#[tokio::test]
async fn what_is_written_through_a_buffering_stream_is_flushed() {
    bounded(async {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut ws = accept(tokio::io::BufStream::new(server_io)).await?;
            while let Some(message) = ws.recv().await {
                ws.send(message?).await?;
            }
            Ok::<_, Error>(())
        });
        let client_io = tokio::io::BufStream::new(client_io);
        let mut ws = connect_on(client_io, "ws://in-memory/", ConnectConfig::default())
            .await
            .unwrap();
        ws.send("through a buffer").await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::text("through a buffer")
        );
        ws.close(CloseCode::NORMAL, "").await.unwrap();
        server.await.unwrap().unwrap();
    })
    .await;
}

/// A stream whose flush completes only 20 ms after a write (as a TLS stream's does while the
/// socket is full), waking its task then.
struct SlowFlush {
    inner: tokio::io::DuplexStream,
    flushed_at: Option<tokio::time::Instant>,
}

impl tokio::io::AsyncRead for SlowFlush {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SlowFlush {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let at = tokio::time::Instant::now() + Duration::from_millis(20);
        self.flushed_at.get_or_insert(at);
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.flushed_at {
            Some(at) if at > tokio::time::Instant::now() => {
                let waker = cx.waker().clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    waker.wake();
                });
                std::task::Poll::Pending
            }
            _ => {
                self.flushed_at = None;
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A flush that completed on a later poll was not counted as progress, so `send` stayed
/// pending with nothing left to wake it (seen as a TLS echo stalling until keepalive, or
/// forever without it).
#[tokio::test]
async fn send_returns_once_a_flush_that_was_pending_completes() {
    bounded(async {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let config = Config {
            ping_interval: None,
            ..Config::default()
        };
        let stream = SlowFlush {
            inner: client_io,
            flushed_at: None,
        };
        let mut ws = WebSocket::from_upgraded(stream, Side::Client, config.clone(), &[]);
        let mut peer = WebSocket::from_upgraded(server_io, Side::Server, config, &[]);
        for i in 0..10 {
            ws.send(format!("message {i}")).await.unwrap();
            let echoed = peer.recv().await.unwrap().unwrap();
            assert_eq!(echoed, Message::text(format!("message {i}")));
        }
    })
    .await;
}

#[tokio::test]
async fn from_upgraded_reads_the_bytes_read_past_the_handshake_first() {
    bounded(async {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        // A frame the upgrading server read along with the request head.
        let mut client_core = wsline::proto::Connection::after_handshake(
            Side::Client,
            Config::default(),
            std::time::Instant::now(),
        );
        client_core.send_text("early").unwrap();
        let mut leftover = Vec::new();
        while let Some(wsline::proto::Transmit::Bytes(bytes)) = client_core.poll_transmit() {
            leftover.extend_from_slice(&bytes);
        }
        let mut server =
            WebSocket::from_upgraded(server_io, Side::Server, Config::default(), &leftover);
        let mut client = WebSocket::from_upgraded(client_io, Side::Client, Config::default(), &[]);
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("early")
        );
        client.send("later").await.unwrap();
        assert_eq!(
            server.recv().await.unwrap().unwrap(),
            Message::text("later")
        );
        server.send("reply").await.unwrap();
        assert_eq!(
            client.recv().await.unwrap().unwrap(),
            Message::text("reply")
        );
    })
    .await;
}

/// Opens a WebSocket by hand, reading exactly the response head.
async fn raw_handshake(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    stream
}
