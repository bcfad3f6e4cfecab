//! The send path (RFC 6455 §5): encodes frames into the send buffer — masked with a fresh
//! key on a client, through the extension that transforms a message, large server payloads
//! queued by reference — and keeps the rule that fragments of one message are not
//! interleaved with another message. Whether the connection may send at all is the
//! lifecycle's decision, made before the writer is called.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use rand::{RngCore, SeedableRng};

use crate::proto::error::SendError;
use crate::proto::event::Side;
use crate::proto::extension::{Extension, ExtensionError, FramePosition};
use crate::proto::frame::{apply_mask, FrameHeader, Opcode, Rsv};
use crate::proto::message::Message;
use crate::proto::send_buffer::{SendBuffer, SHARE_THRESHOLD};

/// Random bytes for masking keys and handshake nonces (RFC 6455 §10.3: "The masking key needs
/// to be unpredictable").
///
/// The default, made the first time a client needs random bytes, is a ChaCha-based
/// generator seeded from the operating system; tests inject a deterministic one with
/// [`Connection::with_random_source`](crate::proto::Connection::with_random_source).
pub trait RandomSource: Send {
    /// Fills `dest` with random bytes.
    fn fill_bytes(&mut self, dest: &mut [u8]);
}

impl<R: RngCore + Send> RandomSource for R {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        RngCore::fill_bytes(self, dest);
    }
}

/// Options for [`Connection::send_with`](crate::proto::Connection::send_with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Whether to compress this message with a negotiated extension: `Some(false)` sends it
    /// as is, `Some(true)` compresses even below the size threshold, `None` lets the
    /// extension decide.
    pub compress: Option<bool>,
}

/// A message encoded once as an unmasked frame, to send to many server connections without
/// encoding it for each (a broadcast).
///
/// Server connections without an extension that transforms messages queue the frame as is.
/// Those whose extension can share its encoding (permessage-deflate with
/// `server_no_context_takeover`: see [`Extension::shared_encoding`]) share one encoding per
/// distinct set of parameters: the first such connection compresses the message, the
/// others queue its frame. Other connections (a client, deflate with context takeover)
/// encode the message themselves. Clones share the encodings made so far.
///
/// ```
/// use wsline::proto::PreparedMessage;
/// use wsline::Message;
/// let prepared = PreparedMessage::new(Message::text("Hello"));
/// assert_eq!(prepared.frame(), &b"\x81\x05Hello"[..]);
/// ```
#[derive(Clone, Debug)]
pub struct PreparedMessage {
    message: Message,
    frame: Bytes,
    /// The frames encoded for connections that share an encoding, by its key.
    shared: Arc<Mutex<Vec<SharedEncoding>>>,
}

/// One shared encoding of a prepared message.
#[derive(Debug)]
struct SharedEncoding {
    /// The extension's name and its key ([`Extension::shared_encoding`]): two extensions'
    /// keys never meet.
    extension: String,
    key: u64,
    frame: Bytes,
    /// Whether the extension transformed the message (else `frame` is the plain one).
    transformed: bool,
}

impl PartialEq for PreparedMessage {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for PreparedMessage {}

impl PreparedMessage {
    /// Encodes `message` as a single unmasked frame.
    #[must_use]
    pub fn new(message: Message) -> Self {
        let header = FrameHeader {
            fin: true,
            rsv: Rsv::NONE,
            opcode: data_opcode(&message),
            mask: None,
            payload_len: message.len() as u64,
        };
        let mut frame = BytesMut::with_capacity(header.encoded_len() + message.len());
        header.encode(&mut frame);
        frame.extend_from_slice(message.as_bytes());
        Self {
            message,
            frame: frame.freeze(),
            shared: Arc::default(),
        }
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The encoded frame: header and payload.
    #[must_use]
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// How many times an extension transformed (compressed) the message for connections
    /// that share its encoding: once per distinct set of negotiated parameters among them,
    /// however many connections it went to.
    #[must_use]
    pub fn shared_encodings(&self) -> usize {
        self.lock_shared()
            .iter()
            .filter(|encoding| encoding.transformed)
            .count()
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Vec<SharedEncoding>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The frame for connections whose extension shares its encoding under `key`: made
    /// with `extension` the first time (the lock is held meanwhile, so that it is made
    /// once), then shared.
    fn shared_frame(
        &self,
        key: u64,
        extension: &mut dyn Extension,
    ) -> Result<Bytes, ExtensionError> {
        let mut shared = self.lock_shared();
        let found = shared
            .iter()
            .find(|encoding| encoding.key == key && encoding.extension == extension.name());
        if let Some(encoding) = found {
            return Ok(encoding.frame.clone());
        }
        let whole = FramePosition {
            first: true,
            fin: true,
        };
        let mut encoded = BytesMut::new();
        let transformed = extension.encode(self.message.as_bytes(), whole, None, &mut encoded)?;
        let frame = if transformed {
            let header = FrameHeader {
                fin: true,
                rsv: extension.rsv(),
                opcode: data_opcode(&self.message),
                mask: None,
                payload_len: encoded.len() as u64,
            };
            let mut frame = BytesMut::with_capacity(header.encoded_len() + encoded.len());
            header.encode(&mut frame);
            frame.extend_from_slice(&encoded);
            frame.freeze()
        } else {
            self.frame.clone()
        };
        shared.push(SharedEncoding {
            extension: extension.name().to_owned(),
            key,
            frame: frame.clone(),
            transformed,
        });
        Ok(frame)
    }
}

/// The opcode of a message's first frame.
fn data_opcode(message: &Message) -> Opcode {
    if message.is_text() {
        Opcode::Text
    } else {
        Opcode::Binary
    }
}

/// A message's first opcode and its payload (shared, not copied).
pub(super) fn into_parts(message: Message) -> (Opcode, Bytes) {
    match message {
        Message::Text(text) => (Opcode::Text, text.into_bytes()),
        Message::Binary(data) => (Opcode::Binary, data),
    }
}

/// The outgoing fragmented message in progress.
#[derive(Clone, Copy, Debug)]
struct OutMessage {
    /// Whether an extension transforms it (then its continuations go through it too).
    transformed: bool,
}

/// Encodes frames into the send buffer.
pub(super) struct Writer {
    side: Side,
    out: SendBuffer,
    in_progress: Option<OutMessage>,
    random: Option<Box<dyn RandomSource>>,
}

impl Writer {
    pub(super) fn new(side: Side, random: Option<Box<dyn RandomSource>>) -> Self {
        Self {
            side,
            out: SendBuffer::default(),
            in_progress: None,
            random,
        }
    }

    pub(super) fn set_random_source(&mut self, random: Box<dyn RandomSource>) {
        self.random = Some(random);
    }

    /// Random bytes from the injected source, or from the default one made now.
    pub(super) fn fill_random(&mut self, dest: &mut [u8]) {
        self.random
            .get_or_insert_with(|| Box::new(rand::rngs::StdRng::from_os_rng()))
            .fill_bytes(dest);
    }

    pub(super) fn buffer(&mut self) -> &mut SendBuffer {
        &mut self.out
    }

    pub(super) fn pending(&self) -> usize {
        self.out.len()
    }

    /// Whether a fragmented message is being sent: no other message may start.
    pub(super) fn is_in_message(&self) -> bool {
        self.in_progress.is_some()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Queues raw bytes (an HTTP head).
    pub(super) fn bytes(&mut self, bytes: &[u8]) {
        self.out.tail().extend_from_slice(bytes);
        self.out.grew(bytes.len());
    }

    /// Queues a whole message; `shared` is its payload when it may be queued by reference.
    pub(super) fn message(
        &mut self,
        opcode: Opcode,
        data: &[u8],
        shared: Option<&Bytes>,
        compress: Option<bool>,
        extensions: &mut [Box<dyn Extension>],
    ) -> Result<(), SendError> {
        if self.in_progress.is_some() {
            return Err(SendError::MessageInProgress);
        }
        let position = FramePosition {
            first: true,
            fin: true,
        };
        self.data_frame(opcode, data, shared, position, None, compress, extensions)?;
        Ok(())
    }

    /// Queues a message encoded beforehand: the shared frame as is on a server without a
    /// transforming extension, else encoded as [`message`](Self::message) would.
    pub(super) fn prepared(
        &mut self,
        prepared: &PreparedMessage,
        extensions: &mut [Box<dyn Extension>],
    ) -> Result<(), SendError> {
        if self.in_progress.is_some() {
            return Err(SendError::MessageInProgress);
        }
        let shared_key = match extensions {
            [extension] => extension.shared_encoding(),
            _ => None,
        };
        let shared;
        let frame = match (self.side, extensions, shared_key) {
            (Side::Server, [], _) => &prepared.frame,
            (Side::Server, [extension], Some(key)) => {
                shared = prepared.shared_frame(key, extension.as_mut())?;
                &shared
            }
            (_, extensions, _) => {
                let (opcode, payload) = into_parts(prepared.message.clone());
                return self.message(opcode, &payload, Some(&payload), None, extensions);
            }
        };
        // A small frame is copied (cloning the shared one would cost two atomic operations
        // on its count, from every connection it goes to).
        if frame.len() < SHARE_THRESHOLD {
            self.bytes(frame);
        } else {
            self.out.push_shared(frame.clone());
        }
        Ok(())
    }

    /// Queues one fragment: the first of a message (`Text`/`Binary`) or the next
    /// (`Continuation`); `fin` ends the message.
    pub(super) fn fragment(
        &mut self,
        opcode: Opcode,
        data: &[u8],
        fin: bool,
        extensions: &mut [Box<dyn Extension>],
    ) -> Result<(), SendError> {
        let first = opcode != Opcode::Continuation;
        let transformed = match (first, self.in_progress) {
            (true, Some(_)) => return Err(SendError::MessageInProgress),
            (false, None) => return Err(SendError::NoMessageInProgress),
            (true, None) => None,
            (false, Some(message)) => Some(message.transformed),
        };
        let position = FramePosition { first, fin };
        let transformed =
            self.data_frame(opcode, data, None, position, transformed, None, extensions)?;
        self.in_progress = (!fin).then_some(OutMessage { transformed });
        Ok(())
    }

    /// Writes one data frame, through the extension that transforms the message if any.
    /// Returns whether the message is transformed.
    #[allow(clippy::too_many_arguments)]
    fn data_frame(
        &mut self,
        opcode: Opcode,
        data: &[u8],
        shared: Option<&Bytes>,
        position: FramePosition,
        transformed: Option<bool>,
        compress: Option<bool>,
        extensions: &mut [Box<dyn Extension>],
    ) -> Result<bool, SendError> {
        let mut encoded = BytesMut::new();
        let mut rsv = Rsv::NONE;
        let mut used = false;
        if transformed != Some(false) {
            for extension in extensions.iter_mut() {
                if extension.encode(data, position, compress, &mut encoded)? {
                    rsv = extension.rsv();
                    used = true;
                    break;
                }
            }
        }
        let rsv = if position.first { rsv } else { Rsv::NONE };
        if used {
            self.frame(position.fin, rsv, opcode, &encoded);
        } else if let (Some(bytes), Side::Server) = (shared, self.side) {
            self.shared_frame(position.fin, opcode, bytes.clone());
        } else {
            self.frame(position.fin, rsv, opcode, data);
        }
        Ok(used)
    }

    /// Writes one frame, masked with a fresh key on a client (RFC 6455 §5.3).
    pub(super) fn frame(&mut self, fin: bool, rsv: Rsv, opcode: Opcode, payload: &[u8]) {
        let mask = (self.side == Side::Client).then(|| {
            let mut key = [0; 4];
            self.fill_random(&mut key);
            key
        });
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let tail = self.out.tail();
        let before = tail.len();
        tail.reserve(header.encoded_len() + payload.len());
        header.encode(tail);
        let start = tail.len();
        tail.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut tail[start..], key, 0);
        }
        let written = tail.len() - before;
        self.out.grew(written);
    }

    /// Server side: queues a large payload after its header without copying it.
    fn shared_frame(&mut self, fin: bool, opcode: Opcode, payload: Bytes) {
        if payload.len() < SHARE_THRESHOLD {
            return self.frame(fin, Rsv::NONE, opcode, &payload);
        }
        let header = FrameHeader {
            fin,
            rsv: Rsv::NONE,
            opcode,
            mask: None,
            payload_len: payload.len() as u64,
        };
        self.out.push_frame_shared(&header, payload);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Buf;

    use super::*;

    /// Masking keys 0x37fa213d (RFC 6455 §5.7) over and over.
    struct RfcKey;

    impl RandomSource for RfcKey {
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for (i, byte) in dest.iter_mut().enumerate() {
                *byte = [0x37, 0xfa, 0x21, 0x3d][i % 4];
            }
        }
    }

    fn taken(writer: &mut Writer) -> Vec<u8> {
        let out = writer.buffer();
        let mut bytes = Vec::new();
        while out.has_remaining() {
            let chunk = out.chunk().to_vec();
            out.advance(chunk.len());
            bytes.extend(chunk);
        }
        bytes
    }

    #[test]
    fn a_client_masks_with_the_injected_key() {
        let mut writer = Writer::new(Side::Client, Some(Box::new(RfcKey)));
        writer
            .message(Opcode::Text, b"Hello", None, None, &mut [])
            .unwrap();
        // RFC 6455 §5.7: a single-frame masked text message.
        assert_eq!(
            taken(&mut writer),
            b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
        );
    }

    #[test]
    fn a_message_cannot_start_inside_a_fragmented_one() {
        let mut writer = Writer::new(Side::Server, None);
        writer
            .fragment(Opcode::Text, b"Hel", false, &mut [])
            .unwrap();
        assert_eq!(
            writer.message(Opcode::Text, b"x", None, None, &mut []),
            Err(SendError::MessageInProgress)
        );
        writer
            .fragment(Opcode::Continuation, b"lo", true, &mut [])
            .unwrap();
        assert_eq!(
            writer.fragment(Opcode::Continuation, b"!", true, &mut []),
            Err(SendError::NoMessageInProgress)
        );
        // RFC 6455 §5.7: a fragmented unmasked text message.
        assert_eq!(taken(&mut writer), b"\x01\x03Hel\x80\x02lo");
    }

    #[test]
    fn large_server_payloads_are_queued_by_reference() {
        let mut writer = Writer::new(Side::Server, None);
        let payload = Bytes::from(vec![7; SHARE_THRESHOLD]);
        writer
            .message(Opcode::Binary, &payload, Some(&payload), None, &mut [])
            .unwrap();
        let out = writer.buffer();
        out.advance(4); // 0x82 0x7e and a 16-bit length
        assert_eq!(out.chunk().as_ptr(), payload.as_ptr(), "not copied");
    }
}
