//! The `wsline` command.
fn main() {}
