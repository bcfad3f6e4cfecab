//! permessage-deflate (RFC 7692): negotiation and per-message DEFLATE compression.
//!
//! [`PerMessageDeflate`] is the configuration and the [`ExtensionFactory`]: a client offers
//! it, a server accepts or declines the client's offers, and each side gets a connection's
//! [`Extension`] that compresses outgoing messages (marking them with RSV1) and decompresses
//! incoming ones.
//!
//! ```
//! use std::sync::Arc;
//! use wsline::extension::deflate::PerMessageDeflate;
//! use wsline::Config;
//!
//! // Compress messages of 1 KiB and more, resetting the server's window after each message.
//! let deflate = PerMessageDeflate {
//!     server_no_context_takeover: true,
//!     compression_threshold: 1024,
//!     ..PerMessageDeflate::default()
//! };
//! let config = Config::default().extension(Arc::new(deflate));
//! assert_eq!(config.extensions[0].name(), "permessage-deflate");
//! ```
//!
//! [`ServerConfig::default`](crate::ServerConfig) and
//! [`ConnectConfig::default`](crate::ConnectConfig), used by the sync and tokio layers, put
//! `PerMessageDeflate::default()` in their protocol's extensions: clear
//! `config.protocol.extensions` to turn compression off (the CLI's `--no-compression`). The
//! core's [`Config::default`](crate::Config) negotiates no extension.
//!
//! # Memory
//!
//! The compressor and decompressor are allocated when the first compressed message goes out
//! or comes in, so a connection that never compresses costs nothing. In a direction without
//! context takeover, the state goes back to a small per-thread pool after each message, so
//! an idle connection holds none and the next message skips the allocation. The compressor
//! takes about `4 × 2^window_bits + 7 × 2^(memory_level + 6) + 128 KiB` bytes (the zlib-rs hash
//! table is fixed), the decompressor about 40 KiB whatever the window.
//!
//! # Decompression bombs
//!
//! Incoming messages are inflated incrementally into a buffer that grows with the output
//! actually produced and stops at [`Config::max_message_size`](crate::Config): a message
//! that would inflate past it fails the connection with 1009 (message too big). Invalid
//! DEFLATE data fails it with 1007 (invalid payload data).

mod codec;

use bytes::BytesMut;

use self::codec::{CompressSettings, Compressor, Decompressor};
use super::{
    Extension, ExtensionError, ExtensionFactory, ExtensionParams, FramePosition, NegotiationError,
};
use crate::proto::Rsv;

/// The extension name (RFC 7692 §7).
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The default [`PerMessageDeflate::compression_level`]: 2. On JSON messages with zlib-rs,
/// level 1 is about 1.5 times as fast but its output 1.6 times as large (static Huffman
/// codes only), while level 6 saves a further tenth of the output at half the speed.
pub const DEFAULT_COMPRESSION_LEVEL: u8 = 2;

/// The default [`PerMessageDeflate::memory_level`]: 5, as Python websockets.
pub const DEFAULT_MEMORY_LEVEL: u8 = 5;

/// The default [`PerMessageDeflate::window_bits`]: 12 (a 4 KiB window), as Python
/// websockets' server.
pub const DEFAULT_WINDOW_BITS: u8 = 12;

/// The default [`PerMessageDeflate::compression_threshold`]: 0, every message is compressed,
/// as Python websockets does. A short message alone may not shrink, but with context
/// takeover it can refer to the messages before it, and a message sent as is does not feed
/// the window the next ones refer to.
pub const DEFAULT_COMPRESSION_THRESHOLD: usize = 0;

/// The smallest LZ77 window a peer may ask for (RFC 7692 §7.1.2).
const MIN_WINDOW_BITS: u8 = 8;
/// The largest LZ77 window, DEFLATE's 32 KiB (RFC 7692 §7.1.2).
const MAX_WINDOW_BITS: u8 = 15;

/// permessage-deflate settings, and the factory that negotiates the extension (RFC 7692).
///
/// The four negotiation fields carry the RFC's parameter names (§7.1); what each does
/// depends on the side:
///
/// | field | client | server |
/// |---|---|---|
/// | `server_no_context_takeover` | asks the server to reset its window after each message | resets it whether asked or not |
/// | `client_no_context_takeover` | announces that the client resets its window | requires the client to |
/// | `server_max_window_bits` | asks the server for at most this window | compresses with at most this window, and says so |
/// | `client_max_window_bits` | offers to compress with at most this window; `None` offers the parameter without a value (any limit the server sets is accepted) | asks clients that support the parameter for at most this window |
///
/// The other fields are local: how hard and with how much memory this end compresses, and
/// which messages it compresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerMessageDeflate {
    /// `server_no_context_takeover` (RFC 7692 §7.1.1.1). Default: `false`.
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover` (RFC 7692 §7.1.1.2). Default: `false`.
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits`, 8–15 (RFC 7692 §7.1.2.1). Default: `None`.
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits`, 8–15 (RFC 7692 §7.1.2.2). Default: `None`.
    pub client_max_window_bits: Option<u8>,
    /// The largest LZ77 window this end compresses with, 8–15, whatever the peer allows
    /// (compressing with a smaller window than negotiated is always valid). The compressor's
    /// memory grows with it. With 8, zlib's smallest usable window being 9, only run-length
    /// matches are used. Default: [`DEFAULT_WINDOW_BITS`].
    pub window_bits: u8,
    /// zlib compression level, 0 (store) to 9 (smallest output). Default:
    /// [`DEFAULT_COMPRESSION_LEVEL`].
    pub compression_level: u8,
    /// zlib memory level, 1 to 9: more memory compresses faster and smaller. Default:
    /// [`DEFAULT_MEMORY_LEVEL`].
    pub memory_level: u8,
    /// Messages sent whole that are shorter than this many bytes go out uncompressed, unless
    /// [`SendOptions::compress`](crate::proto::SendOptions) asks otherwise. Fragmented
    /// messages are always compressed. Default: [`DEFAULT_COMPRESSION_THRESHOLD`].
    pub compression_threshold: usize,
}

impl PerMessageDeflate {
    /// These settings for a server that sends the same messages to many connections (a
    /// broadcast, [`topics`](crate::topics)): with `server_no_context_takeover`, so that
    /// connections with equal parameters share one compression of each message. Each
    /// message is then compressed on its own, without the ones before as dictionary.
    #[must_use]
    pub fn broadcast(self) -> Self {
        Self {
            server_no_context_takeover: true,
            ..self
        }
    }
}

impl Default for PerMessageDeflate {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
            window_bits: DEFAULT_WINDOW_BITS,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            memory_level: DEFAULT_MEMORY_LEVEL,
            compression_threshold: DEFAULT_COMPRESSION_THRESHOLD,
        }
    }
}

/// The parameters of one offer or response, checked against RFC 7692 §7.1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// Absent, present without a value (`Some(None)`, offers only), or with one.
    client_max_window_bits: Option<Option<u8>>,
}

/// Which message carries the parameters: the client's offer or the server's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carrier {
    Offer,
    Response,
}

impl Params {
    /// Parses and checks the parameters of an offer or a response.
    fn parse(element: &ExtensionParams, carrier: Carrier) -> Result<Self, String> {
        let mut params = Self::default();
        let mut seen: Vec<&String> = Vec::with_capacity(element.params.len());
        for (name, value) in &element.params {
            // RFC 7692 §7: "declines an extension negotiation offer [...] if [it] includes
            // parameters with an invalid value [...] multiple parameters with the same name
            // [...] an extension parameter not defined for use in an offer"; a client fails
            // the connection for the same faults in a response (§7.1).
            if seen.contains(&name) {
                return Err(format!("duplicate parameter {name}"));
            }
            let value = value.as_deref();
            match name.as_str() {
                "server_no_context_takeover" => {
                    no_value(name, value)?;
                    params.server_no_context_takeover = true;
                }
                "client_no_context_takeover" => {
                    no_value(name, value)?;
                    params.client_no_context_takeover = true;
                }
                "server_max_window_bits" => {
                    let bits = value.ok_or_else(|| format!("{name} needs a value"))?;
                    params.server_max_window_bits = Some(window_bits(name, bits)?);
                }
                "client_max_window_bits" => {
                    // RFC 7692 §7.1.2.2: the offer's parameter "may have a value"; the
                    // response's must have one.
                    let bits = match (value, carrier) {
                        (Some(bits), _) => Some(window_bits(name, bits)?),
                        (None, Carrier::Offer) => None,
                        (None, Carrier::Response) => return Err(format!("{name} needs a value")),
                    };
                    params.client_max_window_bits = Some(bits);
                }
                _ => return Err(format!("unknown parameter {name}")),
            }
            seen.push(name);
        }
        Ok(params)
    }

    /// The header element that carries these parameters.
    fn to_element(self) -> ExtensionParams {
        let mut element = ExtensionParams::new(EXTENSION_NAME);
        if self.server_no_context_takeover {
            element = element.param("server_no_context_takeover", None);
        }
        if self.client_no_context_takeover {
            element = element.param("client_no_context_takeover", None);
        }
        if let Some(bits) = self.server_max_window_bits {
            element = element.param("server_max_window_bits", Some(bits.to_string()));
        }
        if let Some(bits) = self.client_max_window_bits {
            element = element.param("client_max_window_bits", bits.map(|b| b.to_string()));
        }
        element
    }
}

fn no_value(name: &str, value: Option<&str>) -> Result<(), String> {
    match value {
        None => Ok(()),
        Some(value) => Err(format!("{name} takes no value, got {value:?}")),
    }
}

/// RFC 7692 §7.1.2: a window size is a decimal integer from 8 to 15, "without leading
/// zeroes" in the ABNF `%x38-39 / "1" %x30-35`.
fn window_bits(name: &str, value: &str) -> Result<u8, String> {
    let bits = match value.as_bytes() {
        [digit @ b'8'..=b'9'] => digit - b'0',
        [b'1', digit @ b'0'..=b'5'] => 10 + (digit - b'0'),
        _ => return Err(format!("{name} must be 8 to 15, got {value:?}")),
    };
    Ok(bits)
}

/// A window size from the configuration, kept within what RFC 7692 allows.
fn clamp_bits(bits: u8) -> u8 {
    bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
}

impl PerMessageDeflate {
    /// What this end compresses with, given the window the peer allows.
    fn compress_settings(&self, allowed_bits: Option<u8>) -> CompressSettings {
        let allowed = allowed_bits.map_or(MAX_WINDOW_BITS, clamp_bits);
        CompressSettings {
            level: self.compression_level.min(9),
            memory_level: self.memory_level.clamp(1, 9),
            window_bits: clamp_bits(self.window_bits).min(allowed),
        }
    }

    /// Server: the response to one offer, or why it is declined.
    fn answer(&self, offer: &ExtensionParams) -> Result<(Params, DeflateExtension), String> {
        let offered = Params::parse(offer, Carrier::Offer)?;
        // RFC 7692 §7.1.1.1: a server accepts server_no_context_takeover by including it,
        // and may include it even when not offered.
        let server_no_context_takeover =
            offered.server_no_context_takeover || self.server_no_context_takeover;
        // RFC 7692 §7.1.1.2: a server may include client_no_context_takeover whether
        // offered or not; echoing the client's hint lets the decompressor reset too.
        let client_no_context_takeover =
            offered.client_no_context_takeover || self.client_no_context_takeover;
        // RFC 7692 §7.1.2.1: accepted "with the same or smaller value as the offer", and a
        // server "MAY include [it] [...] even if the extension negotiation offer being
        // accepted by the response didn't include" it: a limit of our own is stated.
        let server_max_window_bits = match (
            offered.server_max_window_bits,
            self.server_max_window_bits.map(clamp_bits),
        ) {
            (Some(offered), Some(own)) => Some(offered.min(own)),
            (offered, own) => offered.or(own),
        };
        // RFC 7692 §7.1.2.2: "If a received extension negotiation offer does not have the
        // client_max_window_bits extension parameter, the corresponding extension
        // negotiation response to the offer MUST NOT include" it.
        let client_max_window_bits = match offered.client_max_window_bits {
            None => None,
            Some(offered) => {
                let own = self.client_max_window_bits.map(clamp_bits);
                match (offered, own) {
                    (Some(offered), Some(own)) => Some(offered.min(own)),
                    (offered, own) => offered.or(own),
                }
            }
        };
        let agreed = Params {
            server_no_context_takeover,
            client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits: client_max_window_bits.map(Some),
        };
        let extension = DeflateExtension::new(
            self.compress_settings(server_max_window_bits),
            server_no_context_takeover,
            client_no_context_takeover,
            self.compression_threshold,
        );
        Ok((agreed, extension))
    }

    /// Client: the one offer this configuration makes.
    fn offer(&self) -> Params {
        Params {
            server_no_context_takeover: self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
            server_max_window_bits: self.server_max_window_bits.map(clamp_bits),
            client_max_window_bits: Some(self.client_max_window_bits.map(clamp_bits)),
        }
    }
}

impl ExtensionFactory for PerMessageDeflate {
    fn name(&self) -> &str {
        EXTENSION_NAME
    }

    fn client_offers(&self) -> Vec<ExtensionParams> {
        vec![self.offer().to_element()]
    }

    fn client_accept(
        &self,
        response: &ExtensionParams,
    ) -> Result<Box<dyn Extension>, NegotiationError> {
        let fail = |reason: String| NegotiationError {
            name: EXTENSION_NAME.into(),
            reason,
        };
        let answer = Params::parse(response, Carrier::Response).map_err(fail)?;
        let offer = self.offer();
        // RFC 7692 §7.1.1.1: a server that accepts an offer with server_no_context_takeover
        // "MUST include" it in the response.
        if offer.server_no_context_takeover && !answer.server_no_context_takeover {
            return Err(fail(
                "server_no_context_takeover was requested but not accepted".into(),
            ));
        }
        // RFC 7692 §7.1.2.1: the response carries "the same or smaller value as the offer".
        if let Some(requested) = offer.server_max_window_bits {
            match answer.server_max_window_bits {
                None => {
                    return Err(fail(format!(
                        "server_max_window_bits={requested} was requested but not accepted"
                    )))
                }
                Some(bits) if bits > requested => {
                    return Err(fail(format!(
                        "server_max_window_bits={bits} exceeds the {requested} requested"
                    )))
                }
                Some(_) => {}
            }
        }
        // RFC 7692 §7.1.2.2: the response's value may not exceed the offered one.
        let client_bits = match (
            offer.client_max_window_bits.flatten(),
            answer.client_max_window_bits.flatten(),
        ) {
            (Some(offered), Some(bits)) if bits > offered => {
                return Err(fail(format!(
                    "client_max_window_bits={bits} exceeds the {offered} offered"
                )))
            }
            (offered, answered) => answered.or(offered),
        };
        Ok(Box::new(DeflateExtension::new(
            self.compress_settings(client_bits),
            answer.client_no_context_takeover,
            answer.server_no_context_takeover,
            self.compression_threshold,
        )))
    }

    fn server_accept(
        &self,
        offers: &[ExtensionParams],
    ) -> Option<(ExtensionParams, Box<dyn Extension>)> {
        // RFC 7692 §5.1: the server accepts the first offer it can, in the client's order,
        // and declines those it cannot.
        offers.iter().find_map(|offer| match self.answer(offer) {
            Ok((agreed, extension)) => {
                let extension: Box<dyn Extension> = Box::new(extension);
                Some((agreed.to_element(), extension))
            }
            Err(reason) => {
                tracing::debug!(%offer, %reason, "declining a permessage-deflate offer");
                None
            }
        })
    }

    /// The same settings with `server_no_context_takeover`, unless they have it already.
    fn for_broadcast(&self) -> Option<std::sync::Arc<dyn ExtensionFactory>> {
        (!self.server_no_context_takeover).then(|| {
            let shared: std::sync::Arc<dyn ExtensionFactory> =
                std::sync::Arc::new(self.clone().broadcast());
            shared
        })
    }
}

/// permessage-deflate as negotiated for one connection.
#[derive(Debug)]
struct DeflateExtension {
    compressor: Compressor,
    decompressor: Decompressor,
    /// Forget the compressor's window after each message (this end's no_context_takeover).
    reset_compressor: bool,
    threshold: usize,
}

impl DeflateExtension {
    fn new(
        settings: CompressSettings,
        reset_compressor: bool,
        reset_decompressor: bool,
        threshold: usize,
    ) -> Self {
        Self {
            compressor: Compressor::new(settings, reset_compressor),
            decompressor: Decompressor::new(reset_decompressor),
            reset_compressor,
            threshold,
        }
    }
}

impl Extension for DeflateExtension {
    fn name(&self) -> &str {
        EXTENSION_NAME
    }

    /// RFC 7692 §6: the "Per-Message Compressed" bit is RSV1.
    fn rsv(&self) -> Rsv {
        Rsv::RSV1
    }

    fn decode(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), ExtensionError> {
        self.decompressor.decompress(input, out, max_len)
    }

    fn finish_decode(&mut self, out: &mut BytesMut, max_len: usize) -> Result<(), ExtensionError> {
        self.decompressor.finish(out, max_len)
    }

    fn encode(
        &mut self,
        payload: &[u8],
        position: FramePosition,
        compress: Option<bool>,
        out: &mut BytesMut,
    ) -> Result<bool, ExtensionError> {
        if position.first {
            let wanted = match compress {
                Some(wanted) => wanted,
                // Only a whole message has a known size to compare with the threshold.
                None => !position.fin || payload.len() >= self.threshold,
            };
            if !wanted {
                return Ok(false);
            }
        }
        self.compressor.compress(payload, out, position.fin)?;
        if position.fin && self.reset_compressor {
            self.compressor.reset();
        }
        Ok(true)
    }

    /// Without context takeover every message is compressed from a fresh window, so the
    /// output depends on the message and on the settings and threshold only.
    fn shared_encoding(&self) -> Option<u64> {
        self.reset_compressor.then(|| {
            let settings = self.compressor.settings();
            let threshold = u64::try_from(self.threshold)
                .unwrap_or(u64::MAX)
                .min(u64::from(u32::MAX));
            u64::from(settings.level)
                | u64::from(settings.memory_level) << 8
                | u64::from(settings.window_bits) << 16
                | threshold << 24
        })
    }
}
