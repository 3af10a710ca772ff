//! Shared application state handed to every handler. Pure declarations.

use std::sync::Arc;

use crate::auth::kv::TokenKv;
use crate::auth::provider::IdentityProvider;
use crate::auth::tokens::Tokens;
use crate::collab::hub::Hub;
use crate::config::Config;
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::openapi::Spec;
use crate::store::Store;

/// Everything a request may need.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub kv: Arc<dyn TokenKv>,
    pub tokens: Arc<Tokens>,
    pub config: Arc<Config>,
    pub spec: Arc<Spec>,
    pub providers: Arc<Vec<Arc<dyn IdentityProvider>>>,
    pub metrics: Arc<Metrics>,
    /// Whether the token store is Redis (reported by health checks).
    pub redis_enabled: bool,
    /// This replica's collaboration hub; diagram writes consult it to answer 409 during a session.
    pub collab: Arc<Hub>,
    /// Request rate limits of this replica.
    pub rate_limits: Arc<RateLimits>,
}

impl AppState {
    pub fn provider(&self, id: &str) -> Option<Arc<dyn IdentityProvider>> {
        self.providers.iter().find(|p| p.info().id == id).cloned()
    }
}
