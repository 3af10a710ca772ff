//! A namespace of its own for one test, deleted when the test drops it. IO: creates and deletes the namespace.

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::ControlPlane;

/// A namespace created for one test. Deleting it (on drop) removes everything the test made inside it.
pub struct TestNamespace {
    /// The namespace's generated name, `<prefix>-<random>`.
    pub name: String,
    /// A client bound to the test's runtime.
    pub client: kube::Client,
    delete: Command,
}

impl ControlPlane {
    /// Creates a uniquely named namespace and waits until its `default` ServiceAccount exists, so that pods
    /// can be admitted in it.
    ///
    /// # Panics
    /// When the namespace cannot be created or never gets its ServiceAccount (the control plane is broken).
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let client = self.client().await;
        let name = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        let mut waited = Duration::ZERO;
        while sas.get_opt("default").await.ok().flatten().is_none() {
            assert!(
                waited < Duration::from_secs(60),
                "namespace {name} got no default ServiceAccount; kube-controller-manager log:\n{}",
                self.log_tail("kube-controller-manager", 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
        let mut delete = self.kubectl();
        delete.args(["delete", "namespace", &name, "--wait=false", "--ignore-not-found"]);
        TestNamespace { name, client, delete }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await; kubectl returns as soon as deletion has started.
        let _ = self.delete.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}
