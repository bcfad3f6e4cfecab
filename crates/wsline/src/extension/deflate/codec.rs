//! The DEFLATE side of permessage-deflate (RFC 7692 §7.2): a compressor and a decompressor
//! over zlib-rs, writing into growing buffers without `unsafe` and never past a limit.

use std::cell::RefCell;
use std::fmt;

use bytes::BytesMut;
use zlib_rs::{
    Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Method, Status, Strategy,
};

use crate::extension::ExtensionError;

/// RFC 7692 §7.2.1: the empty stored block a sync flush ends with, removed from the tail of
/// every compressed message and appended again before decompressing it (§7.2.2).
pub(super) const EMPTY_BLOCK_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The window the decompressor always uses: the largest, so that it reads what any peer
/// sends, including zlib peers asked for an 8-bit window that compress with 9 bits.
const INFLATE_WINDOW_BITS: u8 = 15;

/// The first growth of an output buffer when no better estimate exists.
const MIN_GROW: usize = 4 << 10;

/// The most idle compressors (and decompressors) a thread keeps for reuse.
const MAX_IDLE: usize = 8;

thread_local! {
    /// Compressors of connections without context takeover, parked between messages so that
    /// an idle connection holds none and the next message, on any connection of this thread,
    /// skips the allocation.
    static IDLE_DEFLATE: RefCell<Vec<(CompressSettings, Deflate)>> =
        const { RefCell::new(Vec::new()) };
    /// Decompressors likewise (they are all alike).
    static IDLE_INFLATE: RefCell<Vec<((), Inflate)>> = const { RefCell::new(Vec::new()) };
}

/// Takes an idle state matching `wanted` from a thread's pool.
fn take_idle<T, K: PartialEq>(
    pool: &'static std::thread::LocalKey<RefCell<Vec<(K, T)>>>,
    wanted: &K,
) -> Option<T> {
    pool.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let index = pool.iter().position(|(key, _)| key == wanted)?;
        Some(pool.swap_remove(index).1)
    })
    .ok()
    .flatten()
}

/// Parks an idle state in a thread's pool, or drops it when the pool is full.
fn park_idle<T, K>(pool: &'static std::thread::LocalKey<RefCell<Vec<(K, T)>>>, key: K, state: T) {
    let _ = pool.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < MAX_IDLE {
            pool.push((key, state));
        }
    });
}

/// Settings of a compressor, resolved from the negotiation and the local configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CompressSettings {
    /// zlib level, 0–9.
    pub level: u8,
    /// zlib memLevel, 1–9.
    pub memory_level: u8,
    /// LZ77 window, 8–15.
    pub window_bits: u8,
}

/// A DEFLATE compressor, allocated on first use.
pub(super) struct Compressor {
    settings: CompressSettings,
    deflate: Option<Deflate>,
    /// Whether the window is forgotten after each message (no context takeover): the
    /// compressor then goes back to the thread's pool between messages.
    pooled: bool,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor")
            .field("settings", &self.settings)
            .field("allocated", &self.deflate.is_some())
            .field("pooled", &self.pooled)
            .finish()
    }
}

impl Compressor {
    /// A compressor; `pooled` when it forgets its window after each message.
    pub(super) fn new(settings: CompressSettings, pooled: bool) -> Self {
        Self {
            settings,
            deflate: None,
            pooled,
        }
    }

    /// What this compressor compresses with.
    pub(super) fn settings(&self) -> CompressSettings {
        self.settings
    }

    fn deflate(&mut self) -> &mut Deflate {
        let settings = self.settings;
        if self.deflate.is_none() && self.pooled {
            self.deflate = take_idle(&IDLE_DEFLATE, &settings);
        }
        self.deflate.get_or_insert_with(|| {
            // zlib (and zlib-rs) cannot compress with a 256-byte window: it silently uses 512
            // bytes, which a peer that asked for 8 bits may not read. Matches limited to a
            // distance of one byte (run-length encoding) fit any window, so an 8-bit window
            // compresses that way.
            let (window_bits, strategy) = match settings.window_bits {
                8 => (9, Strategy::Rle),
                bits => (bits, Strategy::Default),
            };
            Deflate::new_with_config(DeflateConfig {
                level: i32::from(settings.level),
                method: Method::Deflated,
                // Negative: a raw DEFLATE stream, without zlib header or trailer.
                window_bits: -i32::from(window_bits),
                mem_level: i32::from(settings.memory_level),
                strategy,
            })
        })
    }

    /// Compresses `input` and appends the output to `out`. With `flush`, the output ends the
    /// message: everything is flushed and the trailing `00 00 ff ff` removed (RFC 7692
    /// §7.2.1); without it, zlib may keep some of the data for later.
    pub(super) fn compress(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        flush: bool,
    ) -> Result<(), ExtensionError> {
        let mode = if flush {
            DeflateFlush::SyncFlush
        } else {
            DeflateFlush::NoFlush
        };
        let deflate = self.deflate();
        let start = out.len();
        let mut input = input;
        let mut filled = start;
        let mut grow = (input.len() / 4).max(64);
        loop {
            if filled == out.len() {
                out.resize(filled + grow, 0);
                grow = grow.saturating_mul(2);
            }
            let (before_in, before_out) = (deflate.total_in(), deflate.total_out());
            let result = deflate.compress(input, &mut out[filled..], mode);
            let used = progress(before_in, deflate.total_in());
            let produced = progress(before_out, deflate.total_out());
            filled += produced;
            input = &input[used..];
            if let Err(error) = result {
                out.truncate(filled);
                return Err(ExtensionError::Internal(format!(
                    "compression failed: {}",
                    error.as_str()
                )));
            }
            // Done once all input is taken and zlib left output space unused: it has nothing
            // more to write for this flush mode.
            if input.is_empty() && filled < out.len() {
                break;
            }
            if used == 0 && produced == 0 && filled < out.len() {
                out.truncate(filled);
                return Err(ExtensionError::Internal("compression stalled".into()));
            }
        }
        out.truncate(filled);
        if !flush {
            return Ok(());
        }
        if out[start..].ends_with(&EMPTY_BLOCK_TAIL) {
            out.truncate(out.len() - EMPTY_BLOCK_TAIL.len());
        } else if out.len() == start {
            // zlib writes nothing for a second sync flush without new input (an empty
            // message): send the empty stored block itself, which after the tail is removed is
            // the single byte 0x00 (RFC 7692 §7.2.3.6).
            out.extend_from_slice(&[0x00]);
        } else {
            return Err(ExtensionError::Internal(
                "sync flush did not end with an empty stored block".into(),
            ));
        }
        Ok(())
    }

    /// Forgets the LZ77 window (no context takeover), keeping the memory for the next message
    /// (of this connection, or of another on this thread when pooled).
    pub(super) fn reset(&mut self) {
        if let Some(deflate) = &mut self.deflate {
            deflate.reset();
        }
        if self.pooled {
            if let Some(deflate) = self.deflate.take() {
                park_idle(&IDLE_DEFLATE, self.settings, deflate);
            }
        }
    }
}

/// A DEFLATE decompressor, allocated on first use.
pub(super) struct Decompressor {
    inflate: Option<Inflate>,
    /// Whether the window is forgotten after each message (the peer's no context
    /// takeover): the decompressor then goes back to the thread's pool between messages.
    pooled: bool,
    /// The current message's DEFLATE stream ended with a block marked BFINAL (RFC 7692
    /// §7.2.3.4); what follows in the message is ignored.
    ended: bool,
}

impl fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor")
            .field("allocated", &self.inflate.is_some())
            .field("ended", &self.ended)
            .field("pooled", &self.pooled)
            .finish()
    }
}

impl Decompressor {
    /// A decompressor; `pooled` when it forgets its window after each message.
    pub(super) fn new(pooled: bool) -> Self {
        Self {
            inflate: None,
            pooled,
            ended: false,
        }
    }

    /// Decompresses `input`, appending to `out` without letting `out` pass `max_len` bytes.
    ///
    /// The buffer grows with the output actually produced (doubling), never with what the
    /// input claims, so a small input that would inflate past the limit costs at most about
    /// twice the limit before it is refused.
    pub(super) fn decompress(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), ExtensionError> {
        if self.ended || input.is_empty() {
            return Ok(());
        }
        if self.inflate.is_none() && self.pooled {
            self.inflate = take_idle(&IDLE_INFLATE, &());
        }
        let inflate = self
            .inflate
            .get_or_insert_with(|| Inflate::new(false, INFLATE_WINDOW_BITS));
        // Room for one byte past the limit tells "exactly at the limit" from "beyond it".
        let cap = max_len.saturating_add(1);
        let mut input = input;
        let mut filled = out.len();
        let mut grow = input.len().saturating_mul(2).max(MIN_GROW);
        loop {
            if filled == out.len() {
                // Zero only when the caller's buffer already held more than `max_len`.
                let room = cap.saturating_sub(filled);
                if room == 0 {
                    return Err(ExtensionError::TooBig { limit: max_len });
                }
                out.resize(filled + grow.min(room), 0);
                grow = grow.saturating_mul(2);
            }
            let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
            let result = inflate.decompress(input, &mut out[filled..], InflateFlush::NoFlush);
            let used = progress(before_in, inflate.total_in());
            let produced = progress(before_out, inflate.total_out());
            filled += produced;
            input = &input[used..];
            if filled > max_len {
                out.truncate(max_len);
                return Err(ExtensionError::TooBig { limit: max_len });
            }
            match result {
                Ok(Status::StreamEnd) => {
                    self.ended = true;
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    out.truncate(filled);
                    let reason = inflate.error_message().unwrap_or(error.as_str());
                    return Err(ExtensionError::InvalidData(format!(
                        "invalid DEFLATE data: {reason}"
                    )));
                }
            }
            // Done once all input is taken and output space is left over: nothing is pending.
            if input.is_empty() && filled < out.len() {
                break;
            }
            // zlib takes input whenever it has output space; no progress with space left
            // would be a stall, not a reason to loop.
            if used == 0 && produced == 0 && filled < out.len() {
                break;
            }
        }
        out.truncate(filled);
        Ok(())
    }

    /// Ends a message: appends the tail removed by the sender (RFC 7692 §7.2.2) and, when
    /// pooled (the peer's no context takeover) or after a BFINAL block (the peer starts a new
    /// DEFLATE stream), forgets the LZ77 window.
    pub(super) fn finish(
        &mut self,
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), ExtensionError> {
        let result = if self.ended {
            Ok(())
        } else {
            self.decompress(&EMPTY_BLOCK_TAIL, out, max_len)
        };
        if (self.pooled || self.ended) && result.is_ok() {
            if let Some(inflate) = &mut self.inflate {
                inflate.reset(false);
            }
            if self.pooled {
                if let Some(inflate) = self.inflate.take() {
                    park_idle(&IDLE_INFLATE, (), inflate);
                }
            }
        }
        self.ended = false;
        result
    }
}

/// Bytes a zlib call moved, from its running totals before and after.
fn progress(before: u64, after: u64) -> usize {
    // The difference is bounded by the length of a slice handed to the call.
    usize::try_from(after - before).unwrap_or(usize::MAX)
}
