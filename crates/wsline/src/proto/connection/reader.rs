//! The frame reader (RFC 6455 §5): parses frame headers, buffering a partial one across
//! reads; unmasks payloads; passes them through the extension that decodes their message;
//! validates text as it streams in; and reassembles messages. It knows nothing of replies
//! or the connection's state: it appends the messages (or fragments) it completes to the
//! event queue, where they go unchanged, and returns each control frame as a [`Control`]
//! for the connection to act on, or a [`ProtocolError`].

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::proto::error::ProtocolError;
use crate::proto::event::{Event, Fragment, Side};
use crate::proto::extension::Extension;
use crate::proto::frame::{apply_mask, CloseFrame, FrameHeader, Opcode};
use crate::proto::message::{Message, Utf8Bytes};
use crate::proto::utf8::validate_utf8;
use crate::proto::Config;

/// A message payload buffer larger than this is released after its message instead of kept
/// for the next one, so that an idle connection holds little memory.
const MAX_RETAINED_BUFFER: usize = 64 << 10;

/// The most payload capacity reserved ahead of the bytes actually received, so that a length
/// claim alone cannot make a connection allocate.
const MAX_RESERVE_AHEAD: usize = 64 << 10;

/// The smallest step the message buffer grows by: small messages then share one allocation
/// (each message is a slice of it) instead of taking one allocation each.
const MIN_BUFFER_GROWTH: usize = 4 << 10;

/// A control frame the peer sent (RFC 6455 §5.5).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Control {
    /// A ping, with its payload.
    Ping(Bytes),
    /// A pong, with its payload.
    Pong(Bytes),
    /// A close frame: parsed, and its raw payload (echoed in the reply).
    Close(CloseFrame, Vec<u8>),
}

/// What the reader needs to know about its connection.
pub(super) struct Context<'a> {
    pub(super) side: Side,
    pub(super) config: &'a Config,
    pub(super) extensions: &'a mut [Box<dyn Extension>],
    /// Where completed messages (or fragments) go: the connection's event queue.
    pub(super) events: &'a mut VecDeque<Event>,
}

/// The kind of data message being received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// The frame being received.
#[derive(Clone, Copy, Debug)]
struct InFrame {
    opcode: Opcode,
    fin: bool,
    mask: Option<[u8; 4]>,
    /// Payload bytes received so far (the masking key phase).
    received: usize,
    /// Payload bytes still to come.
    remaining: u64,
}

/// The data message being received.
#[derive(Clone, Copy, Debug)]
struct InMessage {
    kind: Kind,
    /// Index of the extension that decodes this message.
    decoder: Option<usize>,
    /// Bytes of `Reader::data` known to be valid UTF-8.
    utf8_valid: usize,
    /// Decoded bytes already delivered as fragments (no longer in `Reader::data`).
    delivered_size: usize,
    /// Whether a fragment of it has been delivered already.
    delivered: bool,
}

/// The incremental frame reader: payload bytes stream into the message being assembled.
#[derive(Debug, Default)]
pub(super) struct Reader {
    header: [u8; FrameHeader::MAX_LEN],
    header_len: usize,
    frame: Option<InFrame>,
    message: Option<InMessage>,
    /// Decoded payload of the current data message.
    data: BytesMut,
    /// Spare room of `data` when it was last allocated or reclaimed.
    data_room: usize,
    /// Unmasked payload of the current frame when an extension decodes it.
    raw: BytesMut,
    control: Vec<u8>,
}

impl Reader {
    /// Starts the message buffer over at the front of its allocation, once messages have
    /// used half of it and every message taken from it has been dropped, so that the
    /// messages of the next read share it instead of taking new allocations.
    pub(super) fn reclaim(&mut self) {
        let spare = self.data.capacity();
        if self.data.is_empty() && spare * 2 < self.data_room {
            // Fails, harmlessly, while a message taken from the buffer is still alive.
            if self.data.try_reclaim(spare + 1) {
                self.data_room = self.data.capacity();
            }
        }
    }

    /// Reads from `input` until a control frame is complete, and returns it, queueing the
    /// data messages completed on the way (on the hot path nothing comes back: messages
    /// go to the queue unmoved); `Ok(None)` once `input` is used up (a partial header or
    /// payload is kept for the next call).
    ///
    /// # Errors
    /// The protocol error that fails the connection; the reader is then unusable.
    pub(super) fn read(
        &mut self,
        input: &mut &[u8],
        cx: &mut Context<'_>,
    ) -> Result<Option<Control>, ProtocolError> {
        loop {
            let Some(remaining) = self.frame.as_ref().map(|frame| frame.remaining) else {
                let Some((header, used)) = self.read_header(input)? else {
                    *input = &[];
                    return Ok(None);
                };
                *input = &input[used..];
                self.start_frame(header, cx)?;
                continue;
            };
            if remaining > 0 {
                if input.is_empty() {
                    return Ok(None);
                }
                let take = input
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let (chunk, rest) = input.split_at(take);
                *input = rest;
                self.receive_payload(chunk, cx)?;
                if self.frame.is_some_and(|frame| frame.remaining > 0) {
                    continue;
                }
            }
            if let Some(control) = self.finish_frame(cx)? {
                return Ok(Some(control));
            }
        }
    }

    /// Parses a header from `input`, buffering a partial one across calls (then all of
    /// `input` is used). Returns the header and how many bytes of `input` it used.
    fn read_header(&mut self, input: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        if self.header_len == 0 {
            if let Some(parsed) = FrameHeader::parse(input)? {
                return Ok(Some(parsed));
            }
            self.header[..input.len()].copy_from_slice(input);
            self.header_len = input.len();
            return Ok(None);
        }
        let had = self.header_len;
        let take = input.len().min(FrameHeader::MAX_LEN - had);
        self.header[had..had + take].copy_from_slice(&input[..take]);
        match FrameHeader::parse(&self.header[..had + take])? {
            Some((header, len)) => {
                self.header_len = 0;
                Ok(Some((header, len - had)))
            }
            None => {
                self.header_len = had + take;
                Ok(None)
            }
        }
    }

    fn start_frame(&mut self, header: FrameHeader, cx: &Context<'_>) -> Result<(), ProtocolError> {
        // RFC 6455 §5.1: "The server MUST close the connection upon receiving a frame that is
        // not masked. [...] A client MUST close a connection if it detects a masked frame."
        match (cx.side, header.mask) {
            (Side::Server, None) if !cx.config.accept_unmasked_frames => {
                return Err(ProtocolError::UnmaskedFrame)
            }
            (Side::Client, Some(_)) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if let Some(limit) = cx.config.max_frame_size {
            if header.payload_len > limit as u64 {
                return Err(ProtocolError::FrameTooBig {
                    size: header.payload_len,
                    limit: limit as u64,
                });
            }
        }
        // RFC 6455 §5.2: "If a nonzero value is received and none of the negotiated
        // extensions defines the meaning of such a nonzero value, the receiving endpoint MUST
        // _Fail the WebSocket Connection_." Extensions here mark only a message's first frame.
        let first_data_frame = matches!(header.opcode, Opcode::Text | Opcode::Binary);
        if !first_data_frame && !header.rsv.is_empty() {
            return Err(ProtocolError::ReservedBits);
        }
        match header.opcode {
            Opcode::Close | Opcode::Ping | Opcode::Pong => self.control.clear(),
            // RFC 6455 §5.4: continuation frames continue a fragmented message.
            Opcode::Continuation => {
                let Some(message) = self.message else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                if message.decoder.is_none() {
                    let size = message.delivered_size + self.data.len();
                    check_message_size(cx.config, size, header.payload_len)?;
                }
            }
            Opcode::Text | Opcode::Binary => {
                // RFC 6455 §5.4: "the fragments of one message MUST NOT be interleaved
                // between the fragments of another message".
                if self.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                let decoder = if header.rsv.is_empty() {
                    None
                } else {
                    let index = cx
                        .extensions
                        .iter()
                        .position(|extension| extension.rsv() == header.rsv)
                        .ok_or(ProtocolError::ReservedBits)?;
                    Some(index)
                };
                if decoder.is_none() {
                    check_message_size(cx.config, 0, header.payload_len)?;
                }
                let kind = if header.opcode == Opcode::Text {
                    Kind::Text
                } else {
                    Kind::Binary
                };
                self.message = Some(InMessage {
                    kind,
                    decoder,
                    utf8_valid: 0,
                    delivered_size: 0,
                    delivered: false,
                });
            }
        }
        let reserve = usize::try_from(header.payload_len)
            .unwrap_or(usize::MAX)
            .min(MAX_RESERVE_AHEAD);
        if !header.opcode.is_control() {
            let decoded = self
                .message
                .is_some_and(|message| message.decoder.is_some());
            if !decoded && self.data.capacity() - self.data.len() < reserve {
                // Room for a few such messages: those of one read then share an allocation.
                let growth = reserve.saturating_mul(4);
                self.data
                    .reserve(growth.clamp(MIN_BUFFER_GROWTH, MAX_RESERVE_AHEAD.max(reserve)));
                self.data_room = self.data.capacity() - self.data.len();
            }
        }
        self.frame = Some(InFrame {
            opcode: header.opcode,
            fin: header.fin,
            mask: header.mask,
            received: 0,
            remaining: header.payload_len,
        });
        Ok(())
    }

    fn receive_payload(&mut self, chunk: &[u8], cx: &mut Context<'_>) -> Result<(), ProtocolError> {
        let Some(frame) = &mut self.frame else {
            return Ok(());
        };
        let mask = frame.mask;
        let offset = frame.received;
        frame.received += chunk.len();
        frame.remaining -= chunk.len() as u64;
        if frame.opcode.is_control() {
            let start = self.control.len();
            self.control.extend_from_slice(chunk);
            if let Some(key) = mask {
                apply_mask(&mut self.control[start..], key, offset);
            }
            return Ok(());
        }
        let Some(message) = &mut self.message else {
            return Ok(());
        };
        let limit = cx.config.max_message_size.unwrap_or(usize::MAX);
        match message.decoder {
            None => {
                let start = self.data.len();
                self.data.extend_from_slice(chunk);
                if let Some(key) = mask {
                    apply_mask(&mut self.data[start..], key, offset);
                }
            }
            Some(index) => {
                self.raw.clear();
                self.raw.extend_from_slice(chunk);
                if let Some(key) = mask {
                    apply_mask(&mut self.raw, key, offset);
                }
                let room = limit.saturating_sub(message.delivered_size);
                cx.extensions[index].decode(&self.raw, &mut self.data, room)?;
            }
        }
        // Text fails fast, before its message is complete (RFC 6455 §8.1); the last frame
        // of a message is validated once, complete, as it finishes.
        let last = frame.remaining == 0 && frame.fin;
        if message.kind == Kind::Text && !last {
            message.utf8_valid = validate_utf8(&self.data, message.utf8_valid, false)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    fn finish_frame(&mut self, cx: &mut Context<'_>) -> Result<Option<Control>, ProtocolError> {
        let Some(frame) = self.frame.take() else {
            return Ok(None);
        };
        let control = match frame.opcode {
            Opcode::Close => {
                let close = CloseFrame::parse(&self.control)?;
                Control::Close(close, std::mem::take(&mut self.control))
            }
            Opcode::Ping => Control::Ping(Bytes::copy_from_slice(&self.control)),
            Opcode::Pong => Control::Pong(Bytes::copy_from_slice(&self.control)),
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                self.finish_data_frame(frame.fin, cx)?;
                return Ok(None);
            }
        };
        Ok(Some(control))
    }

    /// Ends a data frame: queues its message once `fin`, or the frame as a fragment with
    /// `Config::deliver_fragments`.
    fn finish_data_frame(&mut self, fin: bool, cx: &mut Context<'_>) -> Result<(), ProtocolError> {
        let limit = cx.config.max_message_size.unwrap_or(usize::MAX);
        let Some(message) = &mut self.message else {
            return Ok(());
        };
        if fin {
            if let Some(index) = message.decoder {
                let room = limit.saturating_sub(message.delivered_size);
                cx.extensions[index].finish_decode(&mut self.data, room)?;
            }
        }
        if message.kind == Kind::Text {
            message.utf8_valid = validate_utf8(&self.data, message.utf8_valid, fin)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        let deliver_fragments = cx.config.deliver_fragments;
        if !fin && !deliver_fragments {
            return Ok(());
        }
        let message = *message;
        if fin {
            self.message = None;
        }
        let ready = if message.kind == Kind::Text {
            message.utf8_valid
        } else {
            self.data.len()
        };
        let payload = self.data.split_to(ready).freeze();
        if let Some(current) = &mut self.message {
            // Every validated text byte was just delivered (binary has none to count).
            current.utf8_valid = 0;
            current.delivered_size += ready;
            current.delivered = true;
        }
        if self.data.capacity() > MAX_RETAINED_BUFFER && self.data.is_empty() {
            self.data = BytesMut::new();
        }
        let data = match message.kind {
            Kind::Text => Message::Text(Utf8Bytes::from_validated(payload)),
            Kind::Binary => Message::Binary(payload),
        };
        cx.events.push_back(if deliver_fragments {
            Event::Fragment(Fragment {
                data,
                first: !message.delivered,
                fin,
            })
        } else {
            Event::Message(data)
        });
        Ok(())
    }
}

/// Fails early when a frame would take a message past `Config::max_message_size`.
fn check_message_size(config: &Config, size: usize, frame_len: u64) -> Result<(), ProtocolError> {
    let Some(limit) = config.max_message_size else {
        return Ok(());
    };
    let total = (size as u64).saturating_add(frame_len);
    if total > limit as u64 {
        return Err(ProtocolError::MessageTooBig {
            size: total,
            limit: limit as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the reader made of `input`, in order: control frames and queued events.
    #[derive(Debug, PartialEq, Eq)]
    enum Read {
        Control(Control),
        Event(Event),
    }

    /// Reads everything in `input` as a server with `config`.
    fn read_all(reader: &mut Reader, config: &Config, mut input: &[u8]) -> Vec<Read> {
        let mut events = VecDeque::new();
        let mut out = Vec::new();
        loop {
            let mut cx = Context {
                side: Side::Server,
                config,
                extensions: &mut [],
                events: &mut events,
            };
            let control = reader.read(&mut input, &mut cx).expect("valid input");
            out.extend(events.drain(..).map(Read::Event));
            match control {
                Some(control) => out.push(Read::Control(control)),
                None => break,
            }
        }
        assert!(input.is_empty());
        out
    }

    #[test]
    fn reads_the_rfc_masked_hello_one_byte_at_a_time() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
        let mut reader = Reader::default();
        let config = Config::default();
        let mut out = Vec::new();
        for byte in frame {
            out.extend(read_all(&mut reader, &config, std::slice::from_ref(byte)));
        }
        assert_eq!(out, [Read::Event(Event::Message(Message::text("Hello")))]);
    }

    #[test]
    fn reassembles_fragments_and_interleaved_control_frames() {
        // RFC 6455 §5.7 "Hel" + "lo", with a ping between, all masked with the §5.7 key.
        let mut input = Vec::new();
        for (first, payload) in [(0x01u8, &b"Hel"[..]), (0x89, b"x"), (0x80, b"lo")] {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            input.push(first);
            input.push(0x80 | payload.len() as u8);
            input.extend_from_slice(&key);
            input.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        let out = read_all(&mut Reader::default(), &Config::default(), &input);
        assert_eq!(
            out,
            [
                Read::Control(Control::Ping(Bytes::from_static(b"x"))),
                Read::Event(Event::Message(Message::text("Hello"))),
            ]
        );
    }

    #[test]
    fn unmasked_client_frame_is_an_error_on_a_server() {
        let mut reader = Reader::default();
        let config = Config::default();
        let mut cx = Context {
            side: Side::Server,
            config: &config,
            extensions: &mut [],
            events: &mut VecDeque::new(),
        };
        let mut input = &b"\x81\x05Hello"[..];
        assert_eq!(
            reader.read(&mut input, &mut cx),
            Err(ProtocolError::UnmaskedFrame)
        );
    }

    #[test]
    fn a_message_past_the_limit_fails_at_its_header() {
        let mut reader = Reader::default();
        let config = Config {
            max_message_size: Some(4),
            ..Config::default()
        };
        let mut cx = Context {
            side: Side::Client,
            config: &config,
            extensions: &mut [],
            events: &mut VecDeque::new(),
        };
        let mut input = &b"\x82\x05"[..]; // the header alone: 5 bytes announced
        assert_eq!(
            reader.read(&mut input, &mut cx),
            Err(ProtocolError::MessageTooBig { size: 5, limit: 4 })
        );
    }
}
