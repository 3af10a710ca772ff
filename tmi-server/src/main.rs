//! `tmi-server` binary: placeholder until the server issue lands.
fn main() {}
