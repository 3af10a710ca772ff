//! The domain layer: the rules the HTTP modules share, between them and the storage trait. Which
//! records are live, when an open collaboration session blocks a REST write, who is an
//! administrator, the table of child kinds and the rules of a child's writes, how times and
//! principals are written, metadata validation, ACL normalisation and the threat-model PATCH rules,
//! the preferences document, document and repository URIs, and where upstream's behaviour wins over
//! the contract (`compat`).
//!
//! The HTTP modules (`auth`, `me`, `threat_models`, `resources`, `metadata`, `collab::rest`, …)
//! depend on this layer and never on each other; this layer depends only on `store`, `error`,
//! `authz`, `openapi` and `input`, never on an HTTP module, the application state or the
//! collaboration hub. IO only through the `Store` and `OpenSessions` traits passed in; everything
//! else is pure.

pub mod acl;
pub mod admin;
pub mod children;
pub mod compat;
pub mod diagrams;
pub mod kinds;
pub mod live;
pub mod metadata;
pub mod preferences;
pub mod sessions;
pub mod teams;
pub mod threat_model;
pub mod threat_model_patch;
pub mod uris;
pub mod wire;
