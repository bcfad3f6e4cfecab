//! One test per bug found in the core (by tests or by fuzzing), named after the bug.

mod common;

use common::{client_frame, events, open, written};
use wsline::proto::{Event, Fragment, Opcode, Side};
use wsline::{Config, Message};

/// With `deliver_fragments`, a non-final binary fragment subtracted its length from the
/// message's count of validated UTF-8 bytes (always 0 for binary): an arithmetic overflow,
/// a panic in debug builds, on peer input.
#[test]
fn binary_fragment_in_deliver_fragments_mode_overflowed_the_utf8_counter() {
    let config = Config {
        deliver_fragments: true,
        ..common::no_timers()
    };
    let mut server = open(Side::Server, config);
    let mut input = client_frame(Opcode::Binary, false, b"ab");
    input.extend(client_frame(Opcode::Continuation, false, b"cd"));
    input.extend(client_frame(Opcode::Continuation, true, b"ef"));
    server.handle_data(&input);
    let fragment = |data: &'static [u8], first, fin| {
        Event::Fragment(Fragment {
            data: Message::binary(data),
            first,
            fin,
        })
    };
    assert_eq!(
        events(&mut server),
        [
            fragment(b"ab", true, false),
            fragment(b"cd", false, false),
            fragment(b"ef", false, true),
        ]
    );
    assert!(written(&mut server).bytes.is_empty());
}
