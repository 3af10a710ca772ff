//! The HTTP side of the six children of a threat model (diagrams, threats, documents, notes,
//! assets, repositories): their routes, one set of handlers for all kinds (`handlers`), the bulk
//! endpoints (`bulk`) and list filters (`listing`). The kind table, the response shape and the
//! diagram rules are in the domain layer (`domain::kinds`, `domain::children`,
//! `domain::diagrams`).

pub mod bulk;
pub mod handlers;
pub mod listing;

use crate::domain::kinds::KINDS;
use crate::routes::Routes;

/// Per kind: the collection, the item, restore and (for kinds that have them) the bulk endpoints.
pub fn router() -> Routes {
    let mut r = Routes::new();
    for kind in KINDS {
        let collection = format!("/threat_models/{{threat_model_id}}/{}", kind.plural);
        let item = format!("{collection}/{{{}}}", kind.id_param);
        r = r
            .get(&collection, move |s, u, a, q| handlers::list(kind, s, u, a, q))
            .post(&collection, move |s, a, b| handlers::create(kind, s, a, b))
            .get(&item, move |s, a, p| handlers::get(kind, s, a, p))
            .put(&item, move |s, h, a, p, b| handlers::update(kind, s, h, a, p, b))
            .patch(&item, move |s, h, a, p, b| handlers::patch(kind, s, h, a, p, b))
            .delete(&item, move |s, h, a, p| handlers::delete(kind, s, h, a, p))
            .post(&format!("{item}/restore"), move |s, a, p| {
                handlers::restore(kind, s, a, p)
            });
        if kind.bulk_limit.is_some() {
            // A literal segment outranks `{id}`, so `…/bulk` never reaches the item routes.
            let bulk = format!("{collection}/bulk");
            r = r.post(&bulk, move |s, a, b| bulk::create(kind, s, a, b));
            r = if kind.kind == "threat" {
                r.put(&bulk, move |s, a, b| bulk::update_all(kind, s, a, b))
                    .patch(&bulk, move |s, a, b| bulk::patch_all(kind, s, a, b))
                    .delete(&bulk, move |s, a, q| bulk::delete_all(kind, s, a, q))
            } else {
                r.put(&bulk, move |s, a, b| bulk::upsert(kind, s, a, b))
            };
        }
    }
    r
}
