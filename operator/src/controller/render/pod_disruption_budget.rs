//! PodDisruptionBudget for the server, only when it runs more than one replica. Pure.
//!
//! A PDB on a single replica would block every node drain, so with one replica there is none (and `apply`
//! deletes one left over from a scale-down).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controller::{names, validate::ValidInstance};

/// Renders the PDB (`maxUnavailable: 1`), or `None` for fewer than two replicas.
pub fn render(i: &ValidInstance) -> Option<PodDisruptionBudget> {
    (i.replicas > 1).then(|| PodDisruptionBudget {
        metadata: names::child_meta(i, names::pod_disruption_budget(i)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(names::pod_selector(i)),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::test_support::valid_from_yaml;

    #[test]
    fn only_with_several_replicas() {
        let mut i = valid_from_yaml(crate::controller::test_support::EXTERNAL);
        assert!(render(&i).is_none());
        i.replicas = 3;
        let pdb = render(&i).unwrap();
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
    }
}
