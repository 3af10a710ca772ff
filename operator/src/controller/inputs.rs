//! Resolves the Secrets and ConfigMaps an instance references into per-key digests. IO: reads Secrets and
//! ConfigMaps; writes nothing.
//!
//! [`references`] (pure) lists what the pod will read. [`resolve`] turns each into a SHA-256 digest of the
//! value, or into a [`Problem`] (`SecretNotFound`, `SecretKeyMissing`, …) that becomes a `Stalled` reason
//! instead of a pod stuck in `CreateContainerConfigError`.
//!
//! Secret values never leave this module: only digests are kept, in memory, keyed by the Secret's
//! resourceVersion. A metadata-only watch on Secrets tells the operator the current resourceVersion, so in
//! steady state resolving costs no API request at all; a Secret is read again only after it changed.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use sha2::{Digest, Sha256};

use crate::controller::{
    Context, Error,
    validate::{CaBundle, Cache, Database, ValidInstance},
};

/// Kind of a referenced object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    /// A Secret.
    Secret,
    /// A ConfigMap.
    ConfigMap,
}

/// One thing the server pod reads from an object it does not own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    /// Secret or ConfigMap.
    pub kind: SourceKind,
    /// Object name (same namespace as the instance).
    pub name: String,
    /// The key, or `None` for the whole object (`envFrom`).
    pub key: Option<String>,
    /// Whether the pod tolerates its absence (`optional: true`).
    pub optional: bool,
}

/// A reference that cannot be satisfied. Messages name objects and keys, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The Secret does not exist.
    SecretNotFound {
        /// Secret name.
        name: String,
    },
    /// The Secret exists but lacks the key.
    SecretKeyMissing {
        /// Secret name.
        name: String,
        /// Missing key.
        key: String,
    },
    /// The ConfigMap does not exist.
    ConfigMapNotFound {
        /// ConfigMap name.
        name: String,
    },
    /// The ConfigMap exists but lacks the key.
    ConfigMapKeyMissing {
        /// ConfigMap name.
        name: String,
        /// Missing key.
        key: String,
    },
}

impl Problem {
    /// CamelCase condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::SecretNotFound { .. } => "SecretNotFound",
            Problem::SecretKeyMissing { .. } => "SecretKeyMissing",
            Problem::ConfigMapNotFound { .. } => "ConfigMapNotFound",
            Problem::ConfigMapKeyMissing { .. } => "ConfigMapKeyMissing",
        }
    }

    /// Human-readable message.
    pub fn message(&self) -> String {
        match self {
            Problem::SecretNotFound { name } => format!("Secret {name:?} not found"),
            Problem::SecretKeyMissing { name, key } => format!("Secret {name:?} has no key {key:?}"),
            Problem::ConfigMapNotFound { name } => format!("ConfigMap {name:?} not found"),
            Problem::ConfigMapKeyMissing { name, key } => format!("ConfigMap {name:?} has no key {key:?}"),
        }
    }
}

/// Digests of every satisfied reference, and the problems with the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// `secret/<name>/<key>` (or `secret/<name>` for a whole object) → hex SHA-256 of the value(s).
    pub digests: BTreeMap<String, String>,
    /// Unsatisfied references, in reference order.
    pub problems: Vec<Problem>,
    /// The Ingress controller preset in effect (`spec.exposure.ingress.controller`, `Auto` resolved from the
    /// IngressClass by `cluster::ingress_preset`); `None` without an Ingress.
    pub ingress_controller: Option<crate::crd::IngressController>,
    /// Why no preset applies to the Ingress, for the `ExposureReady` message.
    pub exposure_note: Option<String>,
}

/// Everything the server pod reads from Secrets and ConfigMaps: the spec's references and the ones in the
/// `env`/`envFrom` escape hatch. Sorted and de-duplicated.
pub fn references(i: &ValidInstance) -> Vec<Reference> {
    let mut refs = BTreeSet::new();
    let mut secret_key = |r: &crate::crd::SecretKeyRef| {
        refs.insert(Reference {
            kind: SourceKind::Secret,
            name: r.name.clone(),
            key: Some(r.key.clone()),
            optional: false,
        });
    };
    if let Database::External { url } = &i.database {
        secret_key(url);
    }
    match &i.cache {
        Cache::None => {}
        Cache::Url(url) => secret_key(url),
        Cache::Host { password, .. } => password.iter().for_each(&mut secret_key),
    }
    secret_key(&i.jwt);
    for p in &i.providers {
        secret_key(&p.client_id_secret_ref);
        secret_key(&p.client_secret_secret_ref);
    }
    match &i.trusted_ca {
        None => {}
        Some(CaBundle::Secret(r)) => secret_key(r),
        Some(CaBundle::ConfigMap(r)) => {
            refs.insert(Reference {
                kind: SourceKind::ConfigMap,
                name: r.name.clone(),
                key: Some(r.key.clone()),
                optional: false,
            });
        }
    }
    for e in &i.env {
        let Some(from) = &e.value_from else { continue };
        if let Some(s) = &from.secret_key_ref {
            refs.insert(Reference {
                kind: SourceKind::Secret,
                name: s.name.clone(),
                key: Some(s.key.clone()),
                optional: s.optional.unwrap_or(false),
            });
        }
        if let Some(c) = &from.config_map_key_ref {
            refs.insert(Reference {
                kind: SourceKind::ConfigMap,
                name: c.name.clone(),
                key: Some(c.key.clone()),
                optional: c.optional.unwrap_or(false),
            });
        }
    }
    for f in &i.env_from {
        if let Some(s) = &f.secret_ref {
            refs.insert(Reference {
                kind: SourceKind::Secret,
                name: s.name.clone(),
                key: None,
                optional: s.optional.unwrap_or(false),
            });
        }
        if let Some(c) = &f.config_map_ref {
            refs.insert(Reference {
                kind: SourceKind::ConfigMap,
                name: c.name.clone(),
                key: None,
                optional: c.optional.unwrap_or(false),
            });
        }
    }
    refs.into_iter().collect()
}

/// Names of the Secrets an instance references (for mapping Secret events back to instances).
pub fn secret_names(i: &ValidInstance) -> BTreeSet<String> {
    references(i)
        .into_iter()
        .filter(|r| r.kind == SourceKind::Secret)
        .map(|r| r.name)
        .collect()
}

/// Per-key digests of one object's data at one resourceVersion.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectDigests {
    /// resourceVersion the digests were computed at.
    pub resource_version: String,
    /// key → hex SHA-256 of the value.
    pub keys: BTreeMap<String, String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Digests of a Secret's data (and stringData, which only appears on objects not read back from the API).
pub fn secret_digests(s: &Secret) -> ObjectDigests {
    let mut keys: BTreeMap<String, String> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), sha256_hex(&v.0)))
        .collect();
    keys.extend(
        s.string_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), sha256_hex(v.as_bytes()))),
    );
    ObjectDigests {
        resource_version: s.metadata.resource_version.clone().unwrap_or_default(),
        keys,
    }
}

/// Digests of a ConfigMap's data.
pub fn config_map_digests(c: &ConfigMap) -> ObjectDigests {
    let mut keys: BTreeMap<String, String> = c
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), sha256_hex(v.as_bytes())))
        .collect();
    keys.extend(
        c.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), sha256_hex(&v.0))),
    );
    ObjectDigests {
        resource_version: c.metadata.resource_version.clone().unwrap_or_default(),
        keys,
    }
}

/// Pure: combines the fetched objects' digests into [`Inputs`]. `objects` maps `(kind, name)` to the
/// object's digests, or `None` if it does not exist.
pub fn combine(
    refs: &[Reference],
    objects: &BTreeMap<(SourceKind, String), Option<ObjectDigests>>,
) -> Inputs {
    let mut inputs = Inputs::default();
    for r in refs {
        let prefix = match r.kind {
            SourceKind::Secret => "secret",
            SourceKind::ConfigMap => "configmap",
        };
        match (
            objects.get(&(r.kind, r.name.clone())).and_then(Option::as_ref),
            &r.key,
        ) {
            (None, _) if r.optional => {}
            (None, _) => inputs.problems.push(match r.kind {
                SourceKind::Secret => Problem::SecretNotFound { name: r.name.clone() },
                SourceKind::ConfigMap => Problem::ConfigMapNotFound { name: r.name.clone() },
            }),
            (Some(obj), None) => {
                let all = obj
                    .keys
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                inputs
                    .digests
                    .insert(format!("{prefix}/{}", r.name), sha256_hex(all.as_bytes()));
            }
            (Some(obj), Some(key)) => match obj.keys.get(key) {
                Some(d) => {
                    inputs
                        .digests
                        .insert(format!("{prefix}/{}/{key}", r.name), d.clone());
                }
                None if r.optional => {}
                None => inputs.problems.push(match r.kind {
                    SourceKind::Secret => Problem::SecretKeyMissing {
                        name: r.name.clone(),
                        key: key.clone(),
                    },
                    SourceKind::ConfigMap => Problem::ConfigMapKeyMissing {
                        name: r.name.clone(),
                        key: key.clone(),
                    },
                }),
            },
        }
    }
    inputs
}

/// IO: reads (or recalls) every referenced object and combines the digests. Secrets whose resourceVersion
/// in the metadata cache matches the remembered digests are not read again.
pub async fn resolve(ctx: &Context, i: &ValidInstance) -> Result<Inputs, Error> {
    let refs = references(i);
    let mut objects = BTreeMap::new();
    for r in &refs {
        let key = (r.kind, r.name.clone());
        if objects.contains_key(&key) {
            continue;
        }
        let found = match r.kind {
            SourceKind::Secret => secret(ctx, &i.namespace, &r.name).await?,
            SourceKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &i.namespace);
                api.get_opt(&r.name)
                    .await
                    .map_err(|source| Error::Read {
                        kind: "ConfigMap",
                        name: r.name.clone(),
                        source,
                    })?
                    .as_ref()
                    .map(config_map_digests)
            }
        };
        objects.insert(key, found);
    }
    Ok(combine(&refs, &objects))
}

async fn secret(ctx: &Context, namespace: &str, name: &str) -> Result<Option<ObjectDigests>, Error> {
    let memo_key = format!("{namespace}/{name}");
    let cached_rv = ctx
        .stores
        .secrets_meta
        .get(&ObjectRef::new(name).within(namespace))
        .and_then(|m| m.metadata.resource_version.clone());
    if let Some(rv) = &cached_rv {
        let memo = ctx.secret_digests.lock().map_err(|_| Error::Poisoned)?;
        if let Some(d) = memo.get(&memo_key).filter(|d| &d.resource_version == rv) {
            return Ok(Some(d.clone()));
        }
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let found = api
        .get_opt(name)
        .await
        .map_err(|source| Error::Read {
            kind: "Secret",
            name: name.to_owned(),
            source,
        })?
        .as_ref()
        .map(secret_digests);
    let mut memo = ctx.secret_digests.lock().map_err(|_| Error::Poisoned)?;
    match &found {
        Some(d) => memo.insert(memo_key, d.clone()),
        None => memo.remove(&memo_key),
    };
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::{EXTERNAL, FULL, valid_from_yaml};
    use k8s_openapi::ByteString;

    #[test]
    fn references_cover_spec_and_escape_hatch() {
        let mut i = valid_from_yaml(FULL);
        i.env_from.push(k8s_openapi::api::core::v1::EnvFromSource {
            secret_ref: Some(k8s_openapi::api::core::v1::SecretEnvSource {
                name: "extra".into(),
                optional: Some(true),
            }),
            ..Default::default()
        });
        let refs = references(&i);
        let secret_keys: Vec<String> = refs
            .iter()
            .map(|r| format!("{}/{}", r.name, r.key.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            secret_keys,
            [
                "acme-db/url",
                "acme-generated/jwt-secret",
                "acme-oauth/entra-id",
                "acme-oauth/entra-secret",
                "acme-oauth/github-id",
                "acme-oauth/github-secret",
                "acme-redis/password",
                "extra/",
            ]
        );
        assert!(refs.last().unwrap().optional);
    }

    /// The trusted CA is an input like the credentials: its key is referenced (so a missing ConfigMap or key
    /// stalls the instance with the usual reasons) and its digest enters the inputs hash (so a new bundle rolls
    /// the pods).
    #[test]
    fn trusted_ca_is_a_referenced_input() {
        let i = valid_from_yaml(crate::controller::test_support::SIGN_IN);
        let refs = references(&i);
        let ca = Reference {
            kind: SourceKind::ConfigMap,
            name: "corp-ca".into(),
            key: Some("ca.pem".into()),
            optional: false,
        };
        assert!(refs.contains(&ca), "{refs:?}");
        let secrets = |extra: Vec<((SourceKind, String), Option<ObjectDigests>)>| {
            let mut objects: BTreeMap<_, _> = [
                ("acme-db", vec![("url", "u")]),
                ("acme-generated", vec![("jwt-secret", "k")]),
                (
                    "acme-oauth",
                    vec![
                        ("github-id", "a"),
                        ("github-secret", "b"),
                        ("keycloak-id", "c"),
                        ("keycloak-secret", "d"),
                    ],
                ),
            ]
            .into_iter()
            .map(|(name, data)| ((SourceKind::Secret, name.to_owned()), Some(secret(&data, "1"))))
            .collect();
            objects.extend(extra);
            objects
        };
        let inputs = combine(&refs, &secrets(Vec::new()));
        assert_eq!(
            inputs.problems,
            [Problem::ConfigMapNotFound {
                name: "corp-ca".into()
            }]
        );
        let cm = |data: &str| {
            let mut c = ConfigMap::default();
            c.metadata.resource_version = Some("1".into());
            c.data = Some(BTreeMap::from([("other".to_owned(), data.to_owned())]));
            config_map_digests(&c)
        };
        let inputs = combine(
            &refs,
            &secrets(vec![((SourceKind::ConfigMap, "corp-ca".into()), Some(cm("x")))]),
        );
        assert_eq!(inputs.problems[0].reason(), "ConfigMapKeyMissing");
        let with_ca = |pem: &str| {
            let c = ConfigMap {
                data: Some(BTreeMap::from([("ca.pem".to_owned(), pem.to_owned())])),
                ..Default::default()
            };
            combine(
                &refs,
                &secrets(vec![(
                    (SourceKind::ConfigMap, "corp-ca".into()),
                    Some(config_map_digests(&c)),
                )]),
            )
        };
        let first = with_ca("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n");
        let rotated = with_ca("-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n");
        assert!(first.problems.is_empty(), "{:?}", first.problems);
        assert_ne!(
            first.digests["configmap/corp-ca/ca.pem"],
            rotated.digests["configmap/corp-ca/ca.pem"]
        );
    }

    fn secret(data: &[(&str, &str)], rv: &str) -> ObjectDigests {
        let mut s = Secret::default();
        s.metadata.resource_version = Some(rv.into());
        s.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        secret_digests(&s)
    }

    #[test]
    fn missing_secret_and_key_are_problems() {
        let i = valid_from_yaml(EXTERNAL);
        let refs = references(&i);
        let mut objects = BTreeMap::new();
        let inputs = combine(&refs, &objects);
        assert_eq!(
            inputs.problems,
            [
                Problem::SecretNotFound {
                    name: "acme-db".into()
                },
                Problem::SecretNotFound {
                    name: "acme-generated".into()
                }
            ]
        );
        objects.insert(
            (SourceKind::Secret, "acme-db".into()),
            Some(secret(&[("other", "x")], "1")),
        );
        objects.insert(
            (SourceKind::Secret, "acme-generated".into()),
            Some(secret(&[("jwt-secret", "k")], "1")),
        );
        let inputs = combine(&refs, &objects);
        assert_eq!(
            inputs.problems,
            [Problem::SecretKeyMissing {
                name: "acme-db".into(),
                key: "url".into()
            }]
        );
        assert_eq!(inputs.problems[0].reason(), "SecretKeyMissing");
    }

    #[test]
    fn digests_never_contain_values() {
        let i = valid_from_yaml(EXTERNAL);
        let refs = references(&i);
        let value = "postgres://u:hunter2@db/tmi";
        let objects = BTreeMap::from([
            (
                (SourceKind::Secret, "acme-db".to_string()),
                Some(secret(&[("url", value)], "1")),
            ),
            (
                (SourceKind::Secret, "acme-generated".to_string()),
                Some(secret(&[("jwt-secret", "k")], "1")),
            ),
        ]);
        let inputs = combine(&refs, &objects);
        assert!(inputs.problems.is_empty());
        let dump = format!("{inputs:?}");
        assert!(!dump.contains("hunter2"), "{dump}");
        assert_eq!(inputs.digests["secret/acme-db/url"], sha256_hex(value.as_bytes()));
    }
}
