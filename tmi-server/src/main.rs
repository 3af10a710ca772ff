//! `tmi-server` binary.
fn main() {}
