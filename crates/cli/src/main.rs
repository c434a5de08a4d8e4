//! The `exchange` binary.
fn main() {}
