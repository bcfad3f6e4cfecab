//! The fast unmasking path against its byte-by-byte twin, at any key phase and split.
//!
//! Input: 4 key bytes, an offset byte, a split byte, then the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsline::proto::{apply_mask, apply_mask_scalar};
use wsline_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let key = [input.byte(), input.byte(), input.byte(), input.byte()];
    let offset = usize::from(input.byte());
    let split = usize::from(input.byte());
    let payload = input.rest();
    let mut fast = payload.to_vec();
    apply_mask(&mut fast, key, offset);
    let mut scalar = payload.to_vec();
    apply_mask_scalar(&mut scalar, key, offset);
    assert_eq!(fast, scalar);
    // A payload unmasked in two pieces, the second starting at an odd place.
    let split = split.min(payload.len());
    let mut pieces = payload.to_vec();
    let (head, tail) = pieces.split_at_mut(split);
    apply_mask(head, key, offset);
    apply_mask(tail, key, offset + split);
    assert_eq!(pieces, fast);
});
