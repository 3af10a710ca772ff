//! The Secret of generated values (`<name>-generated`). Pure: the random value is a parameter.
//!
//! `apply` creates this Secret once, with a fresh random key, and never updates it: overwriting it would log
//! every user out (the JWT key signs their sessions). Delete the Secret to rotate the key.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::controller::{names, validate::ValidInstance};

/// Renders the generated Secret holding `jwt_key` under [`names::JWT_SECRET_KEY`].
pub fn render(i: &ValidInstance, jwt_key: String) -> Secret {
    let mut metadata = names::child_meta(i, names::generated_secret(i));
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(names::GENERATED_LABEL.to_owned(), "true".to_owned());
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            names::JWT_SECRET_KEY.to_owned(),
            ByteString(jwt_key.into_bytes()),
        )])),
        ..Default::default()
    }
}
