//! A server connection, handshake done, fed arbitrary frames in arbitrary pieces and driven
//! by arbitrary commands; see `wsline_fuzz::run_connection` for the input format and the
//! invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsline::proto::Side;

fuzz_target!(|data: &[u8]| wsline_fuzz::run_connection(Side::Server, data));
