//! Features the web client calls on every page but this server does not offer yet: they answer
//! 200 with empty lists (never 403 for a merely unused feature, tmi-compat.md Part B §7). Pure.

use axum::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::tokens::AuthUser;
use crate::extract::Query;
use crate::routes::Routes;

pub fn router() -> Routes {
    Routes::new()
        .get("/addons", addons)
        .get("/intake/surveys", surveys)
        .get("/intake/survey_responses", survey_responses)
}

#[derive(Deserialize)]
pub struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

fn empty(key: &str, page: &Page) -> Json<Value> {
    Json(json!({key: [], "total": 0, "limit": page.limit.unwrap_or(20), "offset": page.offset.unwrap_or(0)}))
}

pub async fn addons(_u: AuthUser, Query(p): Query<Page>) -> Json<Value> {
    empty("addons", &p)
}
pub async fn surveys(_u: AuthUser, Query(p): Query<Page>) -> Json<Value> {
    empty("surveys", &p)
}
pub async fn survey_responses(_u: AuthUser, Query(p): Query<Page>) -> Json<Value> {
    empty("survey_responses", &p)
}
