//! Authentication (tmi-compat.md §4): `tokens` (HS256 JWTs with TMI's claim set, the
//! authenticated caller, refresh rotation, revocation, cookies), `revocations` (revoked tokens and
//! families: in the database, cached per replica), `kv` (the token store: Redis or process memory), `provider` (the identity-provider trait and the `tmi` dev provider), `provider_config` (external
//! providers from `OAUTH_PROVIDERS_<ID>_*`), `oauth` (OAuth 2.0 / OIDC sign-in at those providers),
//! `claims` (reading an identity through claim mappings), `logos` (the sign-in logos) and `handlers` (the
//! OAuth 2.0 endpoints and discovery documents, routed here). The application state holds the
//! first three; only `handlers` depends on the state. `client_credentials` is users' machine
//! credentials and their grant (service-account tokens).

pub mod claims;
pub mod client_credentials;
pub mod handlers;
pub mod kv;
pub mod logos;
pub mod oauth;
pub mod provider;
pub mod provider_config;
pub mod revocations;
pub mod tokens;

use crate::routes::Routes;

/// Discovery, OAuth 2.0 and the (empty) SAML provider list.
pub fn router() -> Routes {
    use handlers as h;
    Routes::new()
        .get("/.well-known/openid-configuration", h::openid_configuration)
        .get("/.well-known/oauth-authorization-server", h::authorization_server)
        .get("/.well-known/jwks.json", h::jwks)
        .get("/.well-known/oauth-protected-resource", h::protected_resource)
        .get("/oauth2/providers", h::providers)
        .get("/oauth2/providers/{idp}/groups", h::provider_groups)
        .get("/oauth2/authorize", h::authorize)
        .get("/oauth2/callback", h::callback)
        .post("/oauth2/token", h::token)
        .post("/oauth2/refresh", h::refresh)
        .post("/oauth2/revoke", h::revoke)
        .post("/oauth2/introspect", h::introspect)
        .get("/oauth2/userinfo", h::userinfo)
        .get("/saml/providers", h::saml_providers)
}
