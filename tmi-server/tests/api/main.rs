//! HTTP API tests: every scenario runs against SQLite and PostgreSQL through the real HTTP stack.
// Scenario functions are plain async fns called from #[tokio::test] wrappers, so clippy's
// allow-unwrap-in-tests does not see them as tests.
#![allow(clippy::unwrap_used)]

mod helpers;
#[path = "../common/keycloak.rs"]
mod keycloak;
#[path = "../common/pgdb.rs"]
mod pgdb;

/// Declares `$name` once per backend.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::helpers::Backend::Postgres).await;
                }
            )*
        }
    };
}

mod auth;
mod authz_matrix;
mod bulk;
mod children;
mod client_credentials;
mod compat;
mod contract_details;
mod gate;
mod health;
mod json_numbers;
mod keycloak_harness;
mod limits;
mod list_filters;
mod me_groups;
mod me_links;
mod rules;
mod schemathesis;
mod sign_in;
mod teams_projects;
mod threat_models;
mod xss;
