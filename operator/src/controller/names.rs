//! Names, labels, annotations and owner references of everything the operator creates. Pure.
//!
//! Child names derive from the instance name only, so a reconcile never has to look anything up to find its
//! children, and two instances in one namespace never collide.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

/// What names derive from: the instance's name, namespace and uid (`validate::ValidInstance`
/// implements it, so this module does not depend on validation).
pub trait Instance {
    fn name(&self) -> &str;
    fn namespace(&self) -> &str;
    fn uid(&self) -> &str;
}

/// The single server-side-apply field manager for every write the operator makes.
pub const FIELD_MANAGER: &str = "tmi-operator";
/// Standard label naming the tool that manages an object; owned watches select on it, so the operator's
/// cache holds only its own objects.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "tmi-operator";
/// Standard label naming the application.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Value of [`NAME_LABEL`].
pub const APP_NAME: &str = "tmi";
/// Standard label naming the `TmiInstance` an object belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Standard label naming the component inside the instance.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Value of [`COMPONENT_LABEL`] on the server's objects.
pub const SERVER_COMPONENT: &str = "server";
/// Label on Secrets the operator generated (and will never overwrite).
pub const GENERATED_LABEL: &str = "tmi.dev/generated";
/// Pod-template annotation: SHA-256 over every referenced Secret/ConfigMap key and the rendered ConfigMap,
/// so that editing any of them rolls the pods.
pub const INPUTS_HASH_ANNOTATION: &str = "tmi.dev/inputs-hash";
/// Annotation on every applied child: a hash of the object the operator last applied. A field the operator
/// stops setting (say, a nodeSelector the user removed) leaves the live object a superset of the new desired
/// one; only this hash tells that the desired object changed and must be applied, so that server-side apply
/// removes the field.
pub const APPLIED_HASH_ANNOTATION: &str = "tmi.dev/applied-hash";
/// Default server image repository; the tag is `spec.version`.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/tmi-operator/tmi-server";
/// Image of the backup before migration when `spec.upgrade.backup.image` is unset: upstream PostgreSQL, whose
/// `pg_dump` (18) dumps servers from 9.2 to 18.
pub const DEFAULT_BACKUP_IMAGE: &str = "docker.io/library/postgres:18-alpine";
/// Port tmi-server listens on (`TMI_SERVER_PORT`).
pub const SERVER_PORT: i32 = 8080;
/// Port of the Service in front of the server.
pub const SERVICE_PORT: i32 = 80;
/// Key of the JWT signing key in the generated Secret.
pub const JWT_SECRET_KEY: &str = "jwt-secret";
/// Mount path of the SQLite volume.
pub const DATA_MOUNT_PATH: &str = "/data";

/// ServiceAccount of the server pods.
pub fn service_account(i: &impl Instance) -> String {
    format!("{}-server", i.name())
}
/// ConfigMap holding the non-secret environment.
pub fn config_map(i: &impl Instance) -> String {
    format!("{}-config", i.name())
}
/// Secret holding the values the operator generated.
pub fn generated_secret(i: &impl Instance) -> String {
    generated_secret_for(i.name())
}
/// [`generated_secret`] from a bare instance name.
pub fn generated_secret_for(instance: &str) -> String {
    format!("{instance}-generated")
}
/// The server Deployment.
pub fn deployment(i: &impl Instance) -> String {
    format!("{}-server", i.name())
}
/// ServiceAccount of the migrate Jobs: their own, with no API token and no permissions.
pub fn migrate_service_account(i: &impl Instance) -> String {
    format!("{}-migrate", i.name())
}
/// The migrate Job taking the database from `from_image`'s schema to `to_image`'s: a new name for every pair
/// of images, so a finished Job is never mistaken for the next upgrade's.
pub fn migrate_job(i: &impl Instance, from_image: &str, to_image: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{from_image}\n{to_image}").as_bytes());
    let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-migrate-{short}", i.name())
}
/// Value of [`COMPONENT_LABEL`] on the migrate Jobs and their pods (never selected by the Service).
pub const MIGRATE_COMPONENT: &str = "migrate";
/// The server Service; named after the instance, so the in-cluster URL is `http://<name>.<namespace>.svc`.
pub fn service(i: &impl Instance) -> String {
    i.name().to_owned()
}
/// The server PodDisruptionBudget.
pub fn pod_disruption_budget(i: &impl Instance) -> String {
    format!("{}-server", i.name())
}
/// The SQLite PersistentVolumeClaim.
pub fn data_volume_claim(i: &impl Instance) -> String {
    format!("{}-data", i.name())
}

/// The Ingress, HTTPRoute and cert-manager Certificate: named after the instance.
pub fn route(i: &impl Instance) -> String {
    i.name().to_owned()
}
/// The Secret cert-manager writes the instance's certificate to.
pub fn tls_secret(i: &impl Instance) -> String {
    format!("{}-tls", i.name())
}
/// Name of the affinity cookie the proxy sets (every preset uses the same one).
pub const AFFINITY_COOKIE: &str = "tmi-affinity";

/// Labels that select the server pods. Never change them: a Deployment's selector is immutable.
pub fn selector_labels(i: &impl Instance) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), APP_NAME.to_owned()),
        (INSTANCE_LABEL.to_owned(), i.name().to_owned()),
        (COMPONENT_LABEL.to_owned(), SERVER_COMPONENT.to_owned()),
    ])
}

/// `status.selector`: [`selector_labels`] as a label-selector string, for the scale subresource.
pub fn selector_string(i: &impl Instance) -> String {
    selector_labels(i)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// [`selector_labels`] as a `LabelSelector`.
pub fn pod_selector(i: &impl Instance) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(i)),
        ..Default::default()
    }
}

/// Labels on every object the operator creates: the selector labels plus managed-by.
pub fn labels(i: &impl Instance) -> BTreeMap<String, String> {
    let mut labels = selector_labels(i);
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    labels
}

/// The label selector the operator's owned-object watches use.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// Owner reference to the instance, as the controller, so children are garbage-collected with it.
pub fn owner_ref(i: &impl Instance) -> OwnerReference {
    OwnerReference {
        api_version: "tmi.dev/v1alpha1".to_owned(),
        kind: "TmiInstance".to_owned(),
        name: i.name().to_owned(),
        uid: i.uid().to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Metadata of a child object: name, namespace, labels and the owner reference.
pub fn child_meta(i: &impl Instance, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(i.namespace().to_owned()),
        labels: Some(labels(i)),
        owner_references: Some(vec![owner_ref(i)]),
        ..Default::default()
    }
}

/// The environment-variable infix of an OAuth provider id: `azure-ad` becomes `AZURE_AD`.
pub fn provider_env_id(id: &str) -> String {
    id.to_ascii_uppercase().replace('-', "_")
}
