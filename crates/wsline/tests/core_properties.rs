//! Properties of the core over generated input (proptest): chunking never changes what a
//! connection sees, what one end sends the other receives unchanged, and no input makes a
//! connection panic, hold unbounded memory, or write anything but valid frames.

mod support;

use support::proto as common;

use bytes::Bytes;
use common::{events, open, parse_frames, peak_heap_during, sent_frames, written, Pair};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use wsline::proto::{
    CloseCode, CloseFrame, Connection, ConnectionClosed, Event, Frame, Initiator, Opcode, Rsv,
    Side, State,
};
use wsline::{Config, Message};

/// A ping or pong.
#[derive(Clone, Debug)]
enum Control {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

/// A data message, cut into fragments, with control frames between its fragments.
#[derive(Clone, Debug)]
struct DataMessage {
    text: bool,
    fragments: Vec<Vec<u8>>,
    /// `between[i]` goes right after fragment `i` (never after the last).
    between: Vec<Vec<Control>>,
}

impl DataMessage {
    fn payload(&self) -> Vec<u8> {
        self.fragments.concat()
    }

    fn message(&self) -> Message {
        if self.text {
            Message::text(String::from_utf8(self.payload()).unwrap())
        } else {
            Message::binary(self.payload())
        }
    }
}

#[derive(Clone, Debug)]
enum Item {
    Data(DataMessage),
    Control(Control),
}

/// A valid stream of frames in the model: items, then maybe a close frame.
#[derive(Clone, Debug)]
struct Stream {
    items: Vec<Item>,
    close: Option<CloseFrame>,
}

fn control() -> impl Strategy<Value = Control> {
    (any::<bool>(), vec(any::<u8>(), 0..=125)).prop_map(|(ping, payload)| {
        if ping {
            Control::Ping(payload)
        } else {
            Control::Pong(payload)
        }
    })
}

fn payload(text: bool) -> BoxedStrategy<Vec<u8>> {
    if text {
        any::<String>().prop_map(String::into_bytes).boxed()
    } else {
        prop_oneof![
            20 => vec(any::<u8>(), 0..200),
            1 => vec(any::<u8>(), 60_000..70_000),
        ]
        .boxed()
    }
}

fn data_message() -> impl Strategy<Value = DataMessage> {
    any::<bool>()
        .prop_flat_map(|text| {
            (
                Just(text),
                payload(text),
                vec(any::<Index>(), 0..4),
                vec(vec(control(), 0..2), 3),
            )
        })
        .prop_map(|(text, payload, cuts, controls)| {
            let mut cuts: Vec<usize> = cuts
                .iter()
                .map(|cut| cut.index(payload.len() + 1))
                .collect();
            cuts.sort_unstable();
            let mut fragments = Vec::new();
            let mut start = 0;
            for cut in cuts {
                fragments.push(payload[start..cut].to_vec());
                start = cut;
            }
            fragments.push(payload[start..].to_vec());
            let mut between = controls;
            between.resize(fragments.len() - 1, Vec::new());
            DataMessage {
                text,
                fragments,
                between,
            }
        })
}

fn close_frame() -> impl Strategy<Value = CloseFrame> {
    let code = prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999];
    (code, "[a-zA-Zé ]{0,20}").prop_map(|(code, reason)| CloseFrame::new(code.into(), reason))
}

fn stream() -> impl Strategy<Value = Stream> {
    let item = prop_oneof![
        3 => data_message().prop_map(Item::Data),
        1 => control().prop_map(Item::Control),
    ];
    (vec(item, 0..8), proptest::option::of(close_frame()))
        .prop_map(|(items, close)| Stream { items, close })
}

/// Chunk sizes to cut input with: cycled until the input is consumed.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(1usize..200, 1..16)
}

impl Stream {
    /// The frames on the wire, as the peer of `receiver` sends them (masked with `seed`-derived
    /// keys when the receiver is a server).
    fn wire(&self, receiver: Side, seed: u32) -> Vec<u8> {
        let mut frames: Vec<Frame> = Vec::new();
        let control_frame = |control: &Control| match control {
            Control::Ping(payload) => Frame::new(Opcode::Ping, payload.clone()),
            Control::Pong(payload) => Frame::new(Opcode::Pong, payload.clone()),
        };
        for item in &self.items {
            match item {
                Item::Control(control) => frames.push(control_frame(control)),
                Item::Data(message) => {
                    let last = message.fragments.len() - 1;
                    for (i, fragment) in message.fragments.iter().enumerate() {
                        let opcode = match (i, message.text) {
                            (0, true) => Opcode::Text,
                            (0, false) => Opcode::Binary,
                            _ => Opcode::Continuation,
                        };
                        frames.push(Frame {
                            fin: i == last,
                            rsv: Rsv::NONE,
                            opcode,
                            payload: fragment.clone().into(),
                        });
                        if i < last {
                            frames.extend(message.between[i].iter().map(control_frame));
                        }
                    }
                }
            }
        }
        if let Some(close) = &self.close {
            frames.push(Frame::new(Opcode::Close, close.payload()));
        }
        let mut out = bytes::BytesMut::new();
        for (i, frame) in frames.iter().enumerate() {
            let key = (seed ^ (i as u32).wrapping_mul(0x9E37_79B9)).to_be_bytes();
            frame.encode((receiver == Side::Server).then_some(key), &mut out);
        }
        out.to_vec()
    }

    /// The events the receiver reports, ending with `Closed` after the end of stream.
    fn events(&self) -> Vec<Event> {
        let control_event = |control: &Control| match control {
            Control::Ping(payload) => Event::Ping(Bytes::from(payload.clone())),
            Control::Pong(payload) => Event::Pong(Bytes::from(payload.clone())),
        };
        let mut events = Vec::new();
        for item in &self.items {
            match item {
                Item::Control(control) => events.push(control_event(control)),
                Item::Data(message) => {
                    events.extend(message.between.iter().flatten().map(control_event));
                    events.push(Event::Message(message.message()));
                }
            }
        }
        let closed = match &self.close {
            Some(close) => ConnectionClosed {
                sent: Some(close.clone()),
                received: Some(close.clone()),
                initiator: Some(Initiator::Remote),
                clean: true,
                failure: None,
            },
            None => ConnectionClosed::default(),
        };
        events.push(Event::Closed(closed));
        events
    }

    /// The frames the receiver answers with: a pong per ping, then the close echo.
    fn replies(&self) -> Vec<Frame> {
        let mut pings = Vec::new();
        for item in &self.items {
            match item {
                Item::Control(Control::Ping(payload)) => pings.push(payload.clone()),
                Item::Data(message) => {
                    for control in message.between.iter().flatten() {
                        if let Control::Ping(payload) = control {
                            pings.push(payload.clone());
                        }
                    }
                }
                Item::Control(Control::Pong(_)) => {}
            }
        }
        let mut replies: Vec<Frame> = pings
            .into_iter()
            .map(|payload| Frame::new(Opcode::Pong, payload))
            .collect();
        if let Some(close) = &self.close {
            replies.push(Frame::new(Opcode::Close, close.payload()));
        }
        replies
    }
}

/// Feeds `input` to a fresh connection in pieces of `sizes` (cycled), then the end of stream;
/// returns the events and the frames it wrote.
fn feed(side: Side, config: &Config, input: &[u8], sizes: &[usize]) -> (Vec<Event>, Vec<Frame>) {
    let mut connection = open(side, config.clone());
    let mut rest = input;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*size).min(rest.len()));
        connection.handle_data(piece);
        rest = tail;
    }
    connection.handle_eof();
    let frames = sent_frames(&mut connection);
    (events(&mut connection), frames)
}

fn config() -> Config {
    common::no_timers()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Feeding a valid stream one byte at a time, or in any chunks, gives the events and the
    /// replies that feeding it whole gives; and those are what the model says.
    #[test]
    fn chunking_never_changes_events(
        stream in stream(),
        seed: u32,
        sizes in chunk_sizes(),
        server_side: bool,
    ) {
        let side = if server_side { Side::Server } else { Side::Client };
        let input = stream.wire(side, seed);
        let whole = feed(side, &config(), &input, &[input.len().max(1)]);
        prop_assert_eq!(&whole.0, &stream.events());
        prop_assert_eq!(&whole.1, &stream.replies());
        let bytewise = feed(side, &config(), &input, &[1]);
        prop_assert_eq!(&bytewise, &whole);
        let chunked = feed(side, &config(), &input, &sizes);
        prop_assert_eq!(&chunked, &whole);
    }

    /// The same in `deliver_fragments` mode: one event per data frame whatever the chunking,
    /// and the pieces of each message add up to it.
    #[test]
    fn chunking_never_changes_fragments(
        stream in stream(),
        seed: u32,
        sizes in chunk_sizes(),
        server_side: bool,
    ) {
        let side = if server_side { Side::Server } else { Side::Client };
        let config = Config { deliver_fragments: true, ..config() };
        let input = stream.wire(side, seed);
        let whole = feed(side, &config, &input, &[input.len().max(1)]);
        prop_assert_eq!(&feed(side, &config, &input, &[1]), &whole);
        prop_assert_eq!(&feed(side, &config, &input, &sizes), &whole);
        let mut messages = Vec::new();
        let mut current: Option<Vec<u8>> = None;
        for event in &whole.0 {
            if let Event::Fragment(fragment) = event {
                prop_assert_eq!(fragment.first, current.is_none());
                let mut data = current.take().unwrap_or_default();
                data.extend_from_slice(fragment.data.as_bytes());
                if fragment.fin {
                    messages.push(data);
                } else {
                    current = Some(data);
                }
            }
        }
        let expected: Vec<Vec<u8>> = stream.items.iter().filter_map(|item| match item {
            Item::Data(message) => Some(message.payload()),
            Item::Control(_) => None,
        }).collect();
        prop_assert_eq!(messages, expected);
    }
}

/// Something the sending end does.
#[derive(Clone, Debug)]
enum SendOp {
    Data(DataMessage),
    Control(Control),
}

fn send_op() -> impl Strategy<Value = SendOp> {
    prop_oneof![
        3 => data_message().prop_map(SendOp::Data),
        1 => control().prop_map(SendOp::Control),
    ]
}

fn send_control(connection: &mut Connection, control: &Control) {
    match control {
        Control::Ping(payload) => connection.send_ping(payload).unwrap(),
        Control::Pong(payload) => connection.send_pong(payload).unwrap(),
    }
}

/// Sends `message` through the API: whole with `send`, or fragment by fragment.
fn send_message(connection: &mut Connection, message: &DataMessage) {
    if message.fragments.len() == 1 {
        return connection.send(message.message()).unwrap();
    }
    let mut fragments = message.fragments.clone();
    if message.text {
        // The first piece goes through `send_text_fragment`, a `str`: move its cut back to a
        // character boundary.
        let payload = message.payload();
        let text = std::str::from_utf8(&payload).unwrap();
        let mut end = fragments[0].len();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let carried = fragments[0].split_off(end);
        fragments[1].splice(0..0, carried);
        connection
            .send_text_fragment(std::str::from_utf8(&fragments[0]).unwrap(), false)
            .unwrap();
    } else {
        connection
            .send_binary_fragment(&fragments[0], false)
            .unwrap();
    }
    let last = fragments.len() - 1;
    for (i, fragment) in fragments.iter().enumerate().skip(1) {
        for control in &message.between[i - 1] {
            send_control(connection, control);
        }
        connection.send_continuation(fragment, i == last).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// What one end sends through the API, fragmented or not, with pings and pongs between,
    /// the other end receives unchanged; every ping comes back as a pong.
    #[test]
    fn sent_messages_arrive_unchanged(ops in vec(send_op(), 0..8), client_sends: bool) {
        let mut pair = Pair::open_default();
        let sender = if client_sends { &mut pair.client } else { &mut pair.server };
        let mut expected = Vec::new();
        let mut pongs = Vec::new();
        let control_event = |control: &Control| match control {
            Control::Ping(payload) => Event::Ping(Bytes::from(payload.clone())),
            Control::Pong(payload) => Event::Pong(Bytes::from(payload.clone())),
        };
        for op in &ops {
            match op {
                SendOp::Control(control) => {
                    send_control(sender, control);
                    expected.push(control_event(control));
                    if let Control::Ping(payload) = control {
                        pongs.push(Event::Pong(Bytes::from(payload.clone())));
                    }
                }
                SendOp::Data(message) => {
                    send_message(sender, message);
                    for control in message.between.iter().flatten() {
                        expected.push(control_event(control));
                        if let Control::Ping(payload) = control {
                            pongs.push(Event::Pong(Bytes::from(payload.clone())));
                        }
                    }
                    expected.push(Event::Message(message.message()));
                }
            }
        }
        pair.drive();
        let (sender, receiver) = if client_sends {
            (&mut pair.client, &mut pair.server)
        } else {
            (&mut pair.server, &mut pair.client)
        };
        prop_assert_eq!(events(receiver), expected);
        prop_assert_eq!(events(sender), pongs);
        prop_assert_eq!(pair.client.state(), State::Open);
        prop_assert_eq!(pair.server.state(), State::Open);
    }
}

/// Feeds `input` in `sizes` pieces and checks the invariants of hostile input: no panic,
/// bounded memory per call, and only valid, rightly masked frames written (`sent_frames`
/// checks both). Returns the connection for further checks.
fn feed_hostile(side: Side, input: &[u8], sizes: &[usize]) -> Connection {
    let mut connection = open(side, Config::default());
    let mut rest = input;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*size).min(rest.len()));
        let ((), peak) = peak_heap_during(|| connection.handle_data(piece));
        // The payload read-ahead is at most 64 KiB whatever a header claims.
        assert!(peak <= (128 << 10) + 2 * piece.len(), "peak {peak}");
        let _ = sent_frames(&mut connection);
        let _ = events(&mut connection);
        rest = tail;
    }
    connection
}

/// Flips bytes of `input` at the given places.
fn mutate(mut input: Vec<u8>, flips: &[(Index, u8)]) -> Vec<u8> {
    if !input.is_empty() {
        for (at, xor) in flips {
            let at = at.index(input.len());
            input[at] ^= xor;
        }
    }
    input
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_never_panics_and_only_valid_frames_go_out(
        input in vec(any::<u8>(), 0..2048),
        sizes in chunk_sizes(),
        server_side: bool,
    ) {
        let side = if server_side { Side::Server } else { Side::Client };
        let mut connection = feed_hostile(side, &input, &sizes);
        connection.handle_eof();
        let _ = sent_frames(&mut connection);
        prop_assert_eq!(connection.state(), State::Closed);
        let events = events(&mut connection);
        prop_assert!(matches!(events.last(), Some(Event::Closed(_))));
    }

    /// Valid streams with a few bytes flipped reach deeper states than random bytes.
    #[test]
    fn mutated_streams_never_panic_and_only_valid_frames_go_out(
        stream in stream(),
        seed: u32,
        flips in vec((any::<Index>(), 1u8..=255), 1..4),
        sizes in chunk_sizes(),
        server_side: bool,
    ) {
        let side = if server_side { Side::Server } else { Side::Client };
        let input = mutate(stream.wire(side, seed), &flips);
        let mut connection = feed_hostile(side, &input, &sizes);
        // Whatever happened, the close handshake still works or is already under way.
        let _ = connection.send_close(CloseCode::NORMAL, "");
        let frames = sent_frames(&mut connection);
        prop_assert!(frames.iter().filter(|frame| frame.opcode == Opcode::Close).count() <= 1);
        connection.handle_eof();
        prop_assert_eq!(connection.state(), State::Closed);
    }

    /// A server fed any bytes as a handshake answers with nothing or one HTTP response, and a
    /// 101 only to a valid request.
    #[test]
    fn server_handshake_on_garbage_answers_with_one_http_response(
        input in prop_oneof![
            vec(any::<u8>(), 0..600),
            (vec((any::<Index>(), 1u8..=255), 1..4)).prop_map(|flips| mutate(valid_request(), &flips)),
        ],
        sizes in chunk_sizes(),
    ) {
        let mut server = Connection::server(Config::default(), std::time::Instant::now());
        let mut rest = &input[..];
        let mut answered = false;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).min(rest.len()));
            server.handle_data(piece);
            rest = tail;
            while let Some(event) = server.poll_event() {
                if let Event::Request(request) = event {
                    prop_assert!(!answered);
                    answered = true;
                    let response = server.accept(&request).unwrap();
                    server.send_response(response).unwrap();
                }
            }
        }
        let out = written(&mut server).bytes;
        if out.is_empty() {
            return Ok(());
        }
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut fields);
        let parsed = response.parse(&out);
        prop_assert!(matches!(parsed, Ok(httparse::Status::Complete(_))), "{:?}", parsed);
        if response.code == Some(101) {
            prop_assert_eq!(server.state(), State::Open);
            let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let _ = parse_frames(&out[head_end..]);
        } else {
            prop_assert_eq!(server.state(), State::Closed);
        }
    }

    /// A client fed any bytes as the server's answer never panics and, once open, writes only
    /// masked frames.
    #[test]
    fn client_handshake_on_garbage_never_panics(
        flips in vec((any::<Index>(), 1u8..=255), 0..4),
        tail in vec(any::<u8>(), 0..300),
        sizes in chunk_sizes(),
    ) {
        let mut pair = Pair::connecting("ws://example.com/", config(), config());
        let request = pair.client.connect_request().unwrap();
        pair.client.send_request(request).unwrap();
        pair.drive();
        let Some(Event::Request(request)) = pair.server.poll_event() else {
            panic!("a request");
        };
        let response = pair.server.accept(&request).unwrap();
        let mut input = mutate(response.to_bytes().to_vec(), &flips);
        input.extend_from_slice(&tail);
        let mut client = pair.client;
        let _ = written(&mut client);
        let mut rest = &input[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, after) = rest.split_at((*size).min(rest.len()));
            client.handle_data(piece);
            rest = after;
            let _ = sent_frames(&mut client);
        }
        client.handle_eof();
        prop_assert_eq!(client.state(), State::Closed);
    }
}

/// The RFC 6455 §1.2 sample request.
fn valid_request() -> Vec<u8> {
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
      Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
      Sec-WebSocket-Version: 13\r\n\r\n"
        .to_vec()
}
