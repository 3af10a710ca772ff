//! The cluster's edge, for tests of exposure: the real cert-manager controller (with its CRDs) and Traefik as
//! the ingress controller for both Kubernetes Ingress and Gateway API (with Gateway API's CRDs), all built by
//! `e2e/controlplane/build.sh` from their Go modules.
//! IO: applies CRDs and objects with kubectl, writes Traefik's configuration under the run's directory, and
//! spawns both controllers through the control plane's supervisor (they stop with it; logs in `logs/`).
//!
//! Only with the real node ([`crate::shared_with_node`]): Traefik runs as a process in the run's network
//! namespace, like kube-proxy, so it reaches pod addresses directly, and listens on the node's address.
//! Each function is idempotent per control plane (per test binary): the first call installs or starts, later
//! calls return the same outcome.

use std::collections::HashMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::ControlPlane;

/// The IngressClass [`ControlPlane::start_traefik`] creates.
pub const INGRESS_CLASS: &str = "traefik";
/// The controller name Traefik's Ingress provider claims IngressClasses by.
pub const INGRESS_CONTROLLER: &str = "traefik.io/ingress-controller";
/// The GatewayClass [`ControlPlane::start_traefik`] creates.
pub const GATEWAY_CLASS: &str = "traefik";
/// The controllerName Traefik's Gateway provider accepts GatewayClasses by.
pub const GATEWAY_CONTROLLER: &str = "traefik.io/gateway-controller";
/// Traefik's entry points' `respondingTimeouts.readTimeout` and `idleTimeout` here (Traefik's defaults: 60 s
/// and 180 s), short so that a test can outlast them quickly. They end idle keep-alive connections, not
/// upgraded ones: a WebSocket through Traefik outlives them (`e2e/tests/edge.rs` shows both).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The namespace holding the cert-manager Secrets that ClusterIssuers refer to (`--cluster-resource-namespace`).
pub const CERT_MANAGER_NAMESPACE: &str = "cert-manager";

/// How long a CRD, a controller or an issuer may take to become ready.
const TIMEOUT: Duration = Duration::from_secs(120);

/// What a test needs to send traffic through Traefik and to write Ingresses and Gateways it serves.
#[derive(Debug, Clone)]
pub struct Edge {
    /// The `web` entry point, plain HTTP, on the node's address.
    pub http: SocketAddr,
    /// The `websecure` entry point, TLS, on the node's address.
    pub https: SocketAddr,
    /// The IngressClass to name in `spec.ingressClassName` ([`INGRESS_CLASS`]).
    pub ingress_class: String,
    /// The GatewayClass to name in a Gateway's `spec.gatewayClassName` ([`GATEWAY_CLASS`]).
    pub gateway_class: String,
    /// Both entry points' read and idle timeout ([`IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// The address Traefik publishes: in an Ingress's `status.loadBalancer.ingress[].ip` and a Gateway's
    /// `status.addresses[].value`.
    pub address: Ipv4Addr,
}

impl Edge {
    /// A Gateway that Traefik serves, as JSON for `kubectl apply` or kube's `DynamicObject`: listener `http`
    /// (protocol HTTP on [`Edge::http`]'s port) and, with `tls_secret`, listener `https` (HTTPS on
    /// [`Edge::https`]'s port, terminating TLS with that Secret from the Gateway's namespace). Traefik maps a
    /// listener to the entry point whose address ends in the listener's port, so these ports are the only ones
    /// that work. Routes from the Gateway's own namespace attach (`allowedRoutes` default).
    pub fn gateway(&self, name: &str, tls_secret: Option<&str>) -> Value {
        let mut listeners = vec![json!({
            "name": "http",
            "protocol": "HTTP",
            "port": self.http.port(),
        })];
        if let Some(secret) = tls_secret {
            listeners.push(json!({
                "name": "https",
                "protocol": "HTTPS",
                "port": self.https.port(),
                "tls": { "mode": "Terminate", "certificateRefs": [{ "kind": "Secret", "name": secret }] },
            }));
        }
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": { "name": name },
            "spec": { "gatewayClassName": self.gateway_class, "listeners": listeners },
        })
    }
}

/// Which Gateway API CRDs to install (one per control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayApiChannel {
    /// The standard channel (HTTPRoute without `sessionPersistence`).
    Standard,
    /// The experimental channel: a superset, with HTTPRoute's `sessionPersistence` among others.
    Experimental,
}

impl GatewayApiChannel {
    fn file(self) -> &'static str {
        match self {
            Self::Standard => "gateway-api-standard.yaml",
            Self::Experimental => "gateway-api-experimental.yaml",
        }
    }
}

/// What has been installed or started on one control plane; the first outcome is kept.
#[derive(Default)]
pub(crate) struct EdgeState {
    cert_manager: OnceLock<Result<(), String>>,
    cert_manager_crds: OnceLock<Result<(), String>>,
    gateway_api: OnceLock<Result<GatewayApiChannel, String>>,
    traefik: OnceLock<Result<Edge, String>>,
    /// ClusterIssuer name -> its CA certificate (PEM).
    issuers: Mutex<HashMap<String, String>>,
}

impl ControlPlane {
    /// Installs cert-manager: applies its CRDs (server-side, waits until Established), creates the
    /// [`CERT_MANAGER_NAMESPACE`] namespace and starts the controller (`cert-manager-controller`, the real
    /// controllers from cert-manager's module, see `e2e/controlplane/cert-manager/main.go`) with the admin
    /// kubeconfig; returns once its controllers run.
    pub fn install_cert_manager(&self) -> anyhow::Result<()> {
        let state = self.edge_state()?;
        once(&state.cert_manager, || {
            self.install_cert_manager_crds()?;
            self.apply_stdin(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {CERT_MANAGER_NAMESPACE} }}\n"
            ))?;
            self.spawn(
                "cert-manager-controller",
                &[
                    format!("--kubeconfig={}", self.kubeconfig().display()),
                    format!("--cluster-resource-namespace={CERT_MANAGER_NAMESPACE}"),
                ],
            )?;
            let log = self.dir().join("logs/cert-manager-controller.log");
            self.wait_for("cert-manager-controller", || {
                Ok(fs::read_to_string(&log)?.contains("controllers started"))
            })
        })
    }

    /// A CA `ClusterIssuer` named `name`, from a self-signed root: a SelfSigned ClusterIssuer
    /// (`<name>-selfsigned`) issues a CA Certificate (`<name>-root`, ECDSA P-256, in
    /// [`CERT_MANAGER_NAMESPACE`]) whose Secret the CA ClusterIssuer signs with. Installs cert-manager first
    /// and waits until the ClusterIssuer is Ready; returns the root certificate (PEM), to verify served
    /// certificates against. Idempotent per name.
    pub fn ca_cluster_issuer(&self, name: &str) -> anyhow::Result<String> {
        self.install_cert_manager()?;
        let state = self.edge_state()?;
        let mut issuers = state
            .issuers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pem) = issuers.get(name) {
            return Ok(pem.clone());
        }
        let ns = CERT_MANAGER_NAMESPACE;
        self.apply_stdin(&format!(
            r#"apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {{ name: {name}-selfsigned }}
spec: {{ selfSigned: {{}} }}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {{ name: {name}-root, namespace: {ns} }}
spec:
  isCA: true
  commonName: {name} root CA
  secretName: {name}-root
  privateKey: {{ algorithm: ECDSA, size: 256 }}
  issuerRef: {{ name: {name}-selfsigned, kind: ClusterIssuer, group: cert-manager.io }}
"#
        ))?;
        self.kubectl_wait(&["certificate", &format!("{name}-root"), "-n", ns], "Ready")?;
        self.apply_stdin(&format!(
            r#"apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {{ name: {name} }}
spec: {{ ca: {{ secretName: {name}-root }} }}
"#
        ))?;
        self.kubectl_wait(&["clusterissuer", name], "Ready")?;
        let out = self
            .kubectl()
            .args([
                "get",
                "secret",
                &format!("{name}-root"),
                "-n",
                ns,
                "-o",
                "jsonpath={.data.tls\\.crt}",
            ])
            .output()?;
        if !out.status.success() {
            bail!(
                "reading the root Secret {name}-root: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let pem = base64::engine::general_purpose::STANDARD
            .decode(out.stdout.trim_ascii())
            .context("decoding the root certificate")?;
        let pem = String::from_utf8(pem).context("the root certificate is not PEM")?;
        issuers.insert(name.to_owned(), pem.clone());
        Ok(pem)
    }

    /// Installs Gateway API's standard-channel CRDs (see [`ControlPlane::install_gateway_api_crds_channel`]).
    pub fn install_gateway_api_crds(&self) -> anyhow::Result<()> {
        self.install_gateway_api_crds_channel(GatewayApiChannel::Standard)
    }

    /// Installs Gateway API's CRDs of one channel (server-side apply, waits until Established). A control
    /// plane holds one channel: asking for the other one afterwards is an error.
    pub fn install_gateway_api_crds_channel(&self, channel: GatewayApiChannel) -> anyhow::Result<()> {
        // CRDs alone need no node.
        let state = &self.edge;
        let installed = state
            .gateway_api
            .get_or_init(|| {
                self.apply_crds(channel.file())
                    .map(|()| channel)
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(anyhow::Error::msg)?;
        if installed != channel {
            bail!("Gateway API's {installed:?} channel is installed already; {channel:?} was asked for");
        }
        Ok(())
    }

    /// Starts Traefik (installing Gateway API's standard CRDs first unless a channel is installed already):
    /// providers `kubernetesIngress` and `kubernetesGateway` on all namespaces, entry points `web` (HTTP) and
    /// `websecure` (TLS) on the node's address, Ingress status and Gateway addresses set to the node's
    /// address, no dashboard. Creates the IngressClass [`INGRESS_CLASS`] and the GatewayClass
    /// [`GATEWAY_CLASS`], and returns once Traefik answers its ping and has accepted the GatewayClass.
    pub fn start_traefik(&self) -> anyhow::Result<Edge> {
        let state = self.edge_state()?;
        if state.gateway_api.get().is_none() {
            self.install_gateway_api_crds()?;
        }
        state
            .traefik
            .get_or_init(|| self.start_traefik_once().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }

    fn start_traefik_once(&self) -> anyhow::Result<Edge> {
        let ip = self.node_ip()?;
        let port = |addr: Ipv4Addr| -> anyhow::Result<u16> {
            Ok(TcpListener::bind((addr, 0))?.local_addr()?.port())
        };
        let edge = Edge {
            http: SocketAddr::from((ip, port(ip)?)),
            https: SocketAddr::from((ip, port(ip)?)),
            ingress_class: INGRESS_CLASS.into(),
            gateway_class: GATEWAY_CLASS.into(),
            idle_timeout: IDLE_TIMEOUT,
            address: ip,
        };
        let ping_port = port(Ipv4Addr::LOCALHOST)?;
        let dir = self.dir().join("traefik");
        fs::create_dir_all(&dir)?;
        let config = dir.join("traefik.yaml");
        fs::write(&config, traefik_config(&edge, ping_port, &self.edge_access_log()))?;

        self.apply_stdin(&format!(
            r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{ name: {INGRESS_CLASS} }}
spec: {{ controller: {INGRESS_CONTROLLER} }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{ name: {GATEWAY_CLASS} }}
spec: {{ controllerName: {GATEWAY_CONTROLLER} }}
"#
        ))?;
        self.spawn_env(
            "traefik",
            &[format!("--configFile={}", config.display())],
            &[("KUBECONFIG", self.kubeconfig().display().to_string())],
        )?;
        let ping = format!("http://127.0.0.1:{ping_port}/ping");
        self.wait_for("traefik", || {
            Ok(Command::new("curl")
                .args(["-fs", "-o", "/dev/null", "--max-time", "2", &ping])
                .status()?
                .success())
        })?;
        self.kubectl_wait(&["gatewayclass", GATEWAY_CLASS], "Accepted")
            .context("Traefik did not accept its GatewayClass")?;
        Ok(edge)
    }

    /// Traefik's access log: one JSON object per request (`RequestPath`, `ServiceAddr` = the pod that served
    /// it, `DownstreamStatus`, …).
    pub fn edge_access_log(&self) -> std::path::PathBuf {
        self.dir().join("traefik/access.log")
    }

    /// Applies cert-manager's CRDs only (no controller): for tests of objects that reference them, on any
    /// control plane, with or without the real node.
    pub fn install_cert_manager_crds(&self) -> anyhow::Result<()> {
        self.edge
            .cert_manager_crds
            .get_or_init(|| self.apply_crds("cert-manager.yaml").map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }

    fn edge_state(&self) -> anyhow::Result<&EdgeState> {
        if !self.has_node() {
            bail!(
                "cert-manager and Traefik run only with the real node: use tmi_e2e::shared_with_node() inside \
                 scripts/isolated.sh"
            );
        }
        Ok(&self.edge)
    }

    fn node_ip(&self) -> anyhow::Result<Ipv4Addr> {
        self.node
            .as_ref()
            .map(|n| n.isolation.node_ip)
            .context("no real node")
    }

    /// Applies one of build.sh's CRD bundles (`<bin>/crds/<file>`) and waits until every CRD is Established.
    fn apply_crds(&self, file: &str) -> anyhow::Result<()> {
        let path = self.bin_dir().join("crds").join(file);
        let yaml = fs::read_to_string(&path)
            .with_context(|| format!("reading {} (run e2e/controlplane/build.sh)", path.display()))?;
        // Server-side: some CRDs are too large for client-side apply's last-applied annotation.
        self.apply_stdin(&yaml)
            .with_context(|| format!("applying {}", path.display()))?;
        let out = self.kubectl_stdin(
            &[
                "wait",
                "--for=condition=Established",
                &format!("--timeout={}s", TIMEOUT.as_secs()),
                "-f",
                "-",
            ],
            &only_crds(&yaml),
        )?;
        if !out.status.success() {
            bail!(
                "the CRDs of {file} did not become Established: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `kubectl wait --for=condition=<condition>` on one object, with [`TIMEOUT`]; the error carries the object.
    fn kubectl_wait(&self, object: &[&str], condition: &str) -> anyhow::Result<()> {
        let began = Instant::now();
        let out = self
            .kubectl()
            .arg("wait")
            .args(object)
            .arg(format!("--for=condition={condition}"))
            .arg(format!("--timeout={}s", TIMEOUT.as_secs()))
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        let seen = self
            .kubectl()
            .arg("get")
            .args(object)
            .args(["-o", "yaml"])
            .output()?;
        bail!(
            "{} was not {condition} after {:.0?}: {}\n{}",
            object.join(" "),
            began.elapsed(),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&seen.stdout)
        )
    }
}

/// Runs `init` once per cell; every call returns the first outcome.
fn once(
    cell: &OnceLock<Result<(), String>>,
    init: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    cell.get_or_init(|| init().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The documents of a multi-document YAML stream that are CRDs (a bundle may hold other kinds, such as Gateway
/// API's ValidatingAdmissionPolicy).
fn only_crds(yaml: &str) -> String {
    yaml.split("\n---")
        .filter(|d| d.lines().any(|l| l.trim() == "kind: CustomResourceDefinition"))
        .map(|d| format!("---{}\n", d.trim_start_matches("---")))
        .collect()
}

/// Traefik's static configuration.
fn traefik_config(edge: &Edge, ping_port: u16, access_log: &std::path::Path) -> String {
    let timeouts = format!(
        "respondingTimeouts: {{ readTimeout: {t}s, idleTimeout: {t}s }}",
        t = edge.idle_timeout.as_secs()
    );
    format!(
        r#"# Written by tmi-e2e (e2e/src/edge.rs).
global: {{ checkNewVersion: false, sendAnonymousUsage: false }}
log: {{ level: INFO }}
entryPoints:
  web:
    address: "{http}"
    transport: {{ {timeouts} }}
  websecure:
    address: "{https}"
    transport: {{ {timeouts} }}
    http: {{ tls: {{}} }}
  ping:
    address: "127.0.0.1:{ping_port}"
ping: {{ entryPoint: ping }}
# One JSON line per request, unbuffered: tests read which pod (ServiceAddr) served a request.
accessLog: {{ filePath: "{access_log}", format: json, bufferingSize: 0 }}
providers:
  kubernetesIngress:
    ingressEndpoint: {{ ip: "{ip}" }}
  kubernetesGateway:
    statusAddress: {{ ip: "{ip}" }}
"#,
        http = edge.http,
        https = edge.https,
        ip = edge.address,
        access_log = access_log.display(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_crds_keeps_the_crd_documents() {
        let yaml = "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: { name: a }\n\
                    ---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n\
                    metadata: { name: b }\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
                    metadata: { name: c }\n";
        let crds = only_crds(yaml);
        assert!(crds.contains("name: a") && crds.contains("name: c"), "{crds}");
        assert!(!crds.contains("ValidatingAdmissionPolicy"), "{crds}");
    }

    #[test]
    fn gateway_listeners_use_the_entry_points_ports() {
        let edge = Edge {
            http: "10.99.0.1:8000".parse().unwrap(),
            https: "10.99.0.1:8443".parse().unwrap(),
            ingress_class: INGRESS_CLASS.into(),
            gateway_class: GATEWAY_CLASS.into(),
            idle_timeout: IDLE_TIMEOUT,
            address: Ipv4Addr::new(10, 99, 0, 1),
        };
        let gw = edge.gateway("gw", Some("tls"));
        assert_eq!(gw["spec"]["listeners"][0]["port"], 8000);
        assert_eq!(gw["spec"]["listeners"][1]["port"], 8443);
        assert_eq!(
            gw["spec"]["listeners"][1]["tls"]["certificateRefs"][0]["name"],
            "tls"
        );
        assert_eq!(
            edge.gateway("gw", None)["spec"]["listeners"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
