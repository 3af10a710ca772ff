//! Real-time diagram collaboration over WebSockets (tmi-compat.md §5).
//!
//! So far only the wire protocol exists: [`protocol`] is pure serde types. Sessions, the hub,
//! the socket driver and the Redis bus come later (style.md §3.3 "Collaboration").

pub mod protocol;
