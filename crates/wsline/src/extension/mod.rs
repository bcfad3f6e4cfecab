//! Extensions (RFC 6455 §9): the negotiation API of the core
//! ([`proto::extension`](crate::proto::extension), re-exported here) and its implementations:
//! permessage-deflate (RFC 7692, feature `deflate`).
//!
//! A custom extension implements [`ExtensionFactory`] (negotiation) and [`Extension`] (the
//! per-message transform) and goes into [`Config::extensions`](crate::Config::extensions).

#[cfg(feature = "deflate")]
pub mod deflate;

pub use crate::proto::extension::{
    Extension, ExtensionError, ExtensionFactory, ExtensionParams, FramePosition, NegotiationError,
};
