//! permessage-deflate decompression of arbitrary payloads: never panics, never lets the
//! output pass the limit, and reports only the documented errors.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wsline::extension::deflate::PerMessageDeflate;
use wsline::extension::{ExtensionError, ExtensionFactory, ExtensionParams};

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    // The first byte picks the limit and where the payload splits into frames.
    let max_len = usize::from(control) * 64;
    let split = rest.len() * usize::from(control % 16) / 16;
    let offer = ExtensionParams::new("permessage-deflate");
    let Some((_, mut extension)) = PerMessageDeflate::default().server_accept(&[offer]) else {
        return;
    };
    let mut out = BytesMut::new();
    let result = extension
        .decode(&rest[..split], &mut out, max_len)
        .and_then(|()| extension.decode(&rest[split..], &mut out, max_len))
        .and_then(|()| extension.finish_decode(&mut out, max_len));
    assert!(
        out.len() <= max_len,
        "{} bytes past the limit {max_len}",
        out.len()
    );
    match result {
        Ok(()) | Err(ExtensionError::TooBig { .. } | ExtensionError::InvalidData(_)) => {}
        Err(error) => panic!("unexpected error {error}"),
    }
});
