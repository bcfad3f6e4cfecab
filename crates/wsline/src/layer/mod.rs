//! What the I/O layers share, whatever socket they drive: the pieces that decide or
//! compute the same thing in the sync and the tokio layer.

pub(crate) mod client;
pub(crate) mod io;
