//! Shared bench input: masked client frames, and an in-memory stream for tungstenite.
#![allow(dead_code)]

use std::io::{self, Read, Write};

use bytes::BytesMut;
use wsline::proto::{Frame, Opcode};

/// The masking key of the RFC 6455 §5.7 examples.
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// How much a socket read hands over at once in these benches.
pub const READ_CHUNK: usize = 64 << 10;

/// `count` masked client frames carrying `payload`, back to back.
pub fn masked_frames(opcode: Opcode, payload: &[u8], count: usize) -> Vec<u8> {
    let frame = Frame::new(opcode, payload.to_vec());
    let mut out = BytesMut::new();
    for _ in 0..count {
        frame.encode(Some(KEY), &mut out);
    }
    out.to_vec()
}

/// Text of `len` bytes: ASCII, or mixed with 2-, 3- and 4-byte characters.
pub fn text(len: usize, ascii: bool) -> String {
    let unit = if ascii {
        "Hello, world! "
    } else {
        "héllo wörld € 😀 "
    };
    let mut text = unit.repeat(len / unit.len() + 1);
    let mut end = len;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// A stream that reads `input` over and over (at most [`READ_CHUNK`] per read) and discards
/// what is written: a peer that never stops sending the same frames.
pub struct LoopStream {
    input: Vec<u8>,
    position: usize,
}

impl LoopStream {
    /// A stream repeating `input`.
    pub fn new(input: Vec<u8>) -> Self {
        Self { input, position: 0 }
    }
}

impl Read for LoopStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.input[self.position..];
        let n = rest.len().min(buf.len()).min(READ_CHUNK);
        buf[..n].copy_from_slice(&rest[..n]);
        self.position = (self.position + n) % self.input.len();
        Ok(n)
    }
}

impl Write for LoopStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
