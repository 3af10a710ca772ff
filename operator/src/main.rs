//! `tmi-operator` binary.
fn main() {}
