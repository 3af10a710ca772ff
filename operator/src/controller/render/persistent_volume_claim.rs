//! PersistentVolumeClaim holding the SQLite file, only for `spec.database.sqlite`. Pure.
//!
//! The claim is owned by the instance, so deleting the instance deletes the data; that is the documented
//! contract of SQLite mode (use an external database for data that must outlive the instance).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::controller::{
    names,
    validate::{Database, ValidInstance},
};

/// Renders the claim (`ReadWriteOnce`), or `None` for an external database.
pub fn render(i: &ValidInstance) -> Option<PersistentVolumeClaim> {
    let Database::Sqlite {
        size,
        storage_class_name,
    } = &i.database
    else {
        return None;
    };
    Some(PersistentVolumeClaim {
        metadata: names::child_meta(i, names::data_volume_claim(i)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(size.clone()))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
