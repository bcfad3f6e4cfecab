//! `Frame::decode` on arbitrary bytes: no panic, no allocation beyond the limit and the
//! input, and every decoded frame survives an encode/decode round trip.
//!
//! Input: a byte choosing the payload limit, then the bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wsline::proto::Frame;
use wsline_fuzz::{live_heap, Input};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let limit = match input.byte() % 4 {
        0 => u64::MAX,
        1 => 1 << 20,
        2 => 125,
        _ => 0,
    };
    let mut buf = BytesMut::from(input.rest());
    let baseline = live_heap();
    loop {
        let before = buf.len();
        let decoded = Frame::decode(&mut buf, limit);
        let held = live_heap().saturating_sub(baseline);
        let allowed = usize::try_from(limit).unwrap_or(usize::MAX).min(64 << 10);
        assert!(held <= 2 * data.len() + allowed + 1024, "{held} bytes held");
        match decoded {
            Ok(Some(frame)) => {
                assert!(buf.len() < before);
                assert!(frame.payload.len() as u64 <= limit);
                let mut out = BytesMut::new();
                frame.encode(Some([1, 2, 3, 4]), &mut out);
                let again = Frame::decode(&mut out, u64::MAX).unwrap().unwrap();
                assert_eq!(again, frame);
                assert!(out.is_empty());
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                break;
            }
            Err(_) => break,
        }
    }
});
