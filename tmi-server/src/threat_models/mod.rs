//! Threat models: `/threat_models` and `/threat_models/{id}` (+ restore). Routes only; the handlers
//! are in `handlers.rs`, the wire model and the rules in the domain layer (`domain::threat_model`,
//! `domain::threat_model_patch`, `domain::acl`).

pub mod handlers;

use crate::routes::Routes;

pub fn router() -> Routes {
    let item = "/threat_models/{threat_model_id}";
    Routes::new()
        .get("/threat_models", handlers::list)
        .post("/threat_models", handlers::create)
        .get(item, handlers::get)
        .put(item, handlers::update)
        .patch(item, handlers::patch)
        .delete(item, handlers::delete)
        .post("/threat_models/{threat_model_id}/restore", handlers::restore)
}
