//! Collaboration over real sockets on loopback, against real `tmi-server` processes: one replica
//! on SQLite with the in-process bus, and replicas sharing PostgreSQL and Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cells;
mod limits;
#[path = "../common/pgdb.rs"]
mod pgdb;
mod replicas;
mod session;
mod support;
