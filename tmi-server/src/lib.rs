//! The TMI REST API server: a drop-in compatible reimplementation of TMI on PostgreSQL or SQLite.

pub mod config;
pub mod error;
pub mod openapi;
pub mod store;
