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

/// Everything a request may need, behind one `Arc`: every middleware and handler clones the state,
/// and a clone of one `Arc` is one atomic increment where the fields' clones were ten (the clones and
/// drops showed in the API benchmark's profile).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The shared services of `AppState`.
pub struct Services {
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

impl Services {
    pub fn provider(&self, id: &str) -> Option<Arc<dyn IdentityProvider>> {
        self.providers.iter().find(|p| p.info().id == id).cloned()
    }
}
