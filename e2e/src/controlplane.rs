//! Starts a real Kubernetes control plane on loopback: etcd, kube-apiserver (secure serving, per-run PKI),
//! kube-controller-manager, kube-scheduler and kwok with one fake node whose pods become Running and Ready;
//! with [`Options::node`], also a real node that runs pods (see [`crate::node`]).
//! IO: spawns processes and writes certificates, kubeconfig, data and logs under the run's directory.
//!
//! Every component runs under a small supervisor that stops it as soon as the supervisor's standard input
//! closes. The harness holds the write end of that pipe, so the components die with the process that started
//! them, also when it is killed, and a crashed test binary never leaves a control plane behind.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;

use crate::node::{self, Isolation, NodeLayout, NodePorts, REAL_NODE_NAME};
use crate::pki;

/// Name of the fake node kwok manages; scheduled pods land on it.
pub const NODE_NAME: &str = "kwok-node-0";

/// The binaries a control plane needs, all built by `e2e/controlplane/build.sh`.
const BINARIES: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
];

/// What a real node adds to [`BINARIES`] (runc and the CNI plugins come from Debian's packages).
const NODE_BINARIES: [&str; 6] = [
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "kubelet",
    "kube-proxy",
    "coredns",
];

/// How long a component may take to become ready before the start is reported as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Where and how to start a control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory for PKI, kubeconfig, etcd data and logs. Created if missing.
    pub dir: PathBuf,
    /// Directory holding the binaries listed in [`BINARIES`].
    pub bin_dir: PathBuf,
    /// Also start a real node (containerd, kubelet, kube-proxy, CoreDNS) that runs pods from the images of
    /// `make images`. Only inside `scripts/isolated.sh`'s namespaces; the kwok node is then tainted, so that
    /// only pods that tolerate `kwok.x-k8s.io/node` land on it.
    pub node: bool,
}

impl Options {
    /// A fresh directory under the system temp dir, binaries from [`locate_binaries`].
    pub fn for_tests() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "tmi-e2e-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        remove_stale_runs();
        Ok(Self {
            dir,
            bin_dir: locate_binaries()?,
            node: false,
        })
    }
}

/// Finds the control-plane binaries: `TMI_CONTROLPLANE_BIN` when set (`make test` sets it), otherwise the
/// cached build, building it first when needed (the first build takes a while; later calls return at once).
pub fn locate_binaries() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("TMI_CONTROLPLANE_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}); see its output above",
            script.display(),
            out.status
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(dir))
}

/// Removes directories of earlier test runs whose process is gone (their components died with it).
fn remove_stale_runs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("tmi-e2e-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            // First what a real node left (containers, mounts, cgroups), then the files.
            node::cleanup_stale_run(&entry.path());
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// One supervised process.
struct Component {
    name: &'static str,
    supervisor: Child,
    /// Closing this stops the component (see the module docs).
    lifeline: Option<ChildStdin>,
    log: PathBuf,
}

/// A running control plane. Dropping it stops every component, newest first.
pub struct ControlPlane {
    dir: PathBuf,
    bin_dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    components: Mutex<Vec<Component>>,
    pub(crate) node: Option<NodeLayout>,
    /// cert-manager and Traefik, once a test asks for them (see [`crate::edge`]).
    pub(crate) edge: crate::edge::EdgeState,
}

impl ControlPlane {
    /// Starts every component and returns once the API server is ready and the fake node is Ready.
    /// On failure, the error names the component that failed and ends with the tail of its log.
    pub fn start(opts: Options) -> anyhow::Result<Self> {
        let isolation = if opts.node {
            Some(Isolation::from_env()?)
        } else {
            None
        };
        let needed = BINARIES
            .iter()
            .chain(if opts.node { &NODE_BINARIES[..] } else { &[] });
        for b in needed {
            let p = opts.bin_dir.join(b);
            if !p.is_file() {
                bail!(
                    "control-plane binary {} is missing (run e2e/controlplane/build.sh)",
                    p.display()
                );
            }
        }
        let dir = opts.dir;
        let logs = dir.join("logs");
        let pki_dir = dir.join("pki");
        fs::create_dir_all(&logs)?;
        fs::create_dir_all(&pki_dir)?;
        let extra_ips: Vec<_> = isolation.iter().map(|i| i.node_ip).collect();
        let pki = pki::generate(&extra_ips)?;
        let write = |name: &str, pem: &str| -> anyhow::Result<PathBuf> {
            let p = pki_dir.join(name);
            fs::write(&p, pem).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        let ca = write("ca.crt", &pki.ca_cert)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert)?;
        let serving_key = write("apiserver.key", &pki.serving_key)?;
        let sa_key = write("sa.key", &pki.service_account_key)?;
        let sa_pub = write("sa.pub", &pki.service_account_pub)?;
        let admin_cert = write("admin.crt", &pki.admin_cert)?;
        let admin_key = write("admin.key", &pki.admin_key)?;
        fs::write(dir.join("supervise.sh"), SUPERVISOR)?;

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        fs::write(&kubeconfig, render_kubeconfig(&server, &pki))?;

        let cp = ControlPlane {
            bin_dir: opts.bin_dir,
            kubeconfig,
            server,
            components: Mutex::new(Vec::new()),
            node: isolation.map(|i| NodeLayout::new(&dir, i)),
            edge: Default::default(),
            dir,
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        cp.spawn(
            "etcd",
            &[
                "--name=default".into(),
                format!("--data-dir={}", cp.dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                // Test data is thrown away after the run: skip fsync, which dominates etcd latency on a
                // shared disk.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        cp.wait_for("etcd", || {
            Ok(std::net::TcpStream::connect(("127.0.0.1", etcd_port)).is_ok())
        })?;

        // With a real node, pods reach the API server through the `kubernetes` Service, whose endpoint is the
        // advertised address: the node's (inside the run's network namespace). Without one, loopback only.
        let mut api_args = match &cp.node {
            Some(n) => vec![
                "--bind-address=0.0.0.0".to_string(),
                format!("--advertise-address={}", n.isolation.node_ip),
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--kubelet-client-certificate={}", admin_cert.display()),
                format!("--kubelet-client-key={}", admin_key.display()),
            ],
            None => vec![
                "--bind-address=127.0.0.1".to_string(),
                "--advertise-address=127.0.0.1".into(),
                // The API server's own endpoint would be 127.0.0.1, which an Endpoints object may not hold.
                "--endpoint-reconciler-type=none".into(),
            ],
        };
        api_args.extend([
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", cp.dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", serving_cert.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--client-ca-file={}", ca.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", sa_pub.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--authorization-mode=RBAC".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ]);
        cp.spawn("kube-apiserver", &api_args)?;
        cp.wait_for("kube-apiserver", || {
            Ok(cp
                .kubectl()
                .args(["get", "--raw=/readyz"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false))
        })?;

        let kcm_port = free_port()?;
        cp.spawn(
            "kube-controller-manager",
            &[
                format!("--kubeconfig={}", cp.kubeconfig.display()),
                format!("--authentication-kubeconfig={}", cp.kubeconfig.display()),
                format!("--authorization-kubeconfig={}", cp.kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                "--leader-elect=false".into(),
                format!("--service-account-private-key-file={}", sa_key.display()),
                format!("--root-ca-file={}", ca.display()),
                "--use-service-account-credentials=false".into(),
                // Node IPAM would hand out pod CIDRs; kwok assigns fake pod IPs itself.
                "--controllers=*,-nodeipam".into(),
                "--v=1".into(),
            ],
        )?;
        let sched_port = free_port()?;
        cp.spawn(
            "kube-scheduler",
            &[
                format!("--kubeconfig={}", cp.kubeconfig.display()),
                format!("--authentication-kubeconfig={}", cp.kubeconfig.display()),
                format!("--authorization-kubeconfig={}", cp.kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={sched_port}"),
                "--leader-elect=false".into(),
            ],
        )?;
        let kwok_port = free_port()?;
        cp.spawn(
            "kwok",
            &[
                format!("--kubeconfig={}", cp.kubeconfig.display()),
                // Upstream's node and pod stages, installed beside the binaries by build.sh.
                format!("--config={}", cp.bin_dir.join("kwok-stages.yaml").display()),
                "--node-lease-duration-seconds=40".into(),
                "--manage-all-nodes=false".into(),
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
                "--cidr=10.244.0.1/16".into(),
                "--node-ip=10.244.0.1".into(),
                format!("--server-address=127.0.0.1:{kwok_port}"),
            ],
        )?;

        let fake_node = if cp.node.is_some() {
            format!("{FAKE_NODE}{FAKE_NODE_TAINT}")
        } else {
            FAKE_NODE.to_string()
        };
        cp.apply_stdin(&fake_node).context("creating the fake node")?;
        cp.wait_for("kwok", || {
            let out = cp
                .kubectl()
                .args([
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout).trim() == "True")
        })?;
        // kube-controller-manager is ready for tests once it has created the default ServiceAccount,
        // without which no pod can be admitted.
        cp.wait_for("kube-controller-manager", || {
            Ok(cp
                .kubectl()
                .args(["get", "serviceaccount", "default", "-n", "default"])
                .output()?
                .status
                .success())
        })?;
        if cp.node.is_some() {
            cp.start_node()?;
        }
        Ok(cp)
    }

    /// Starts containerd, imports the images, then the kubelet, kube-proxy and CoreDNS, and waits until the
    /// node is Ready and CoreDNS answers.
    fn start_node(&self) -> anyhow::Result<()> {
        let Some(node) = &self.node else {
            return Ok(());
        };
        let images = node::images_dir();
        for name in node::IMAGES {
            let p = images.join(format!("{name}.tar"));
            if !p.is_file() {
                bail!(
                    "image archive {} is missing: run `make images` (TMI_E2E_IMAGES moves the folder)",
                    p.display()
                );
            }
        }
        let ports = NodePorts {
            kubelet: free_port()?,
            kubelet_healthz: free_port()?,
            proxy_healthz: free_port()?,
            proxy_metrics: free_port()?,
            dns_health: free_port()?,
            dns_ready: free_port()?,
        };
        let ca = self.dir.join("pki/ca.crt");
        node.write_configs(&self.kubeconfig, &ca, &ports)?;
        node.create_cgroups()?;
        let d = &node.dir;

        self.spawn(
            "containerd",
            &[format!("--config={}", d.join("containerd/config.toml").display())],
        )?;
        self.wait_for("containerd", || {
            Ok(self.ctr().args(["version"]).output()?.status.success())
        })?;
        let present_test_images = node::TEST_IMAGES
            .into_iter()
            .filter(|name| images.join(format!("{name}.tar")).is_file());
        for name in node::IMAGES.into_iter().chain(present_test_images) {
            let began = Instant::now();
            let out = self
                .ctr()
                .args(["-n", "k8s.io", "images", "import", "--no-unpack"])
                .arg(images.join(format!("{name}.tar")))
                .output()?;
            if !out.status.success() {
                bail!(
                    "importing {name}.tar into containerd failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            eprintln!("imported {name}.tar in {:.1?}", began.elapsed());
        }

        let ip = node.isolation.node_ip;
        self.spawn(
            "kubelet",
            &[
                format!("--config={}", d.join("kubelet/config.yaml").display()),
                format!("--kubeconfig={}", self.kubeconfig.display()),
                format!("--root-dir={}", d.join("kubelet/root").display()),
                format!("--cert-dir={}", d.join("kubelet-certs").display()),
                format!("--hostname-override={REAL_NODE_NAME}"),
                format!("--node-ip={ip}"),
                "--node-labels=tmi.dev/e2e-node=real".into(),
                "--v=1".into(),
            ],
        )?;
        self.spawn(
            "kube-proxy",
            &[format!("--config={}", d.join("kube-proxy.yaml").display())],
        )?;
        self.spawn(
            "coredns",
            &["-conf".into(), d.join("coredns/Corefile").display().to_string()],
        )?;
        self.wait_for("kubelet", || {
            let out = self
                .kubectl()
                .args([
                    "get",
                    "node",
                    REAL_NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout).trim() == "True")
        })?;
        let ready = format!("http://127.0.0.1:{}/ready", ports.dns_ready);
        self.wait_for("coredns", || {
            Ok(Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", "--max-time", "2", &ready])
                .status()?
                .success())
        })?;
        let healthz = format!("http://127.0.0.1:{}/healthz", ports.proxy_healthz);
        self.wait_for("kube-proxy", || {
            Ok(Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", "--max-time", "2", &healthz])
                .status()?
                .success())
        })?;
        Ok(())
    }

    /// `ctr` talking to this run's containerd (only with a real node).
    pub fn ctr(&self) -> Command {
        let mut c = Command::new(self.bin_dir.join("ctr"));
        if let Some(node) = &self.node {
            c.arg(format!("--address={}", node.containerd_socket().display()));
        }
        c
    }

    /// Whether this control plane has a real node.
    pub fn has_node(&self) -> bool {
        self.node.is_some()
    }

    /// Path of the admin kubeconfig (client certificate in group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The directory holding this run's PKI, data and `logs/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the control-plane binaries (kubectl among them).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// `kubectl` with this control plane's kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(self.bin_dir.join("kubectl"));
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        c
    }

    /// A client for the calling async runtime. Create one per test: a client must not outlive its runtime.
    pub async fn client(&self) -> kube::Client {
        self.try_client()
            .await
            .unwrap_or_else(|e| panic!("building a client for {}: {e:#}", self.server))
    }

    /// Like [`ControlPlane::client`], returning the error.
    pub async fn try_client(&self) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Runs kubectl with `input` on its standard input and returns its output.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> anyhow::Result<std::process::Output> {
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(input.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// Applies YAML from a string with `kubectl apply --server-side`.
    pub fn apply_stdin(&self, yaml: &str) -> anyhow::Result<()> {
        let out = self.kubectl_stdin(
            &["apply", "--server-side", "--field-manager=tmi-e2e", "-f", "-"],
            yaml,
        )?;
        if !out.status.success() {
            bail!(
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The last `lines` lines of a component's log.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        tail(&self.dir.join("logs").join(format!("{component}.log")), lines)
    }

    pub(crate) fn spawn(&self, name: &'static str, args: &[String]) -> anyhow::Result<()> {
        self.spawn_env(name, args, &[])
    }

    /// Starts `<bin_dir>/<name>` under the supervisor, with extra environment variables; its output goes to
    /// `logs/<name>.log`.
    pub(crate) fn spawn_env(
        &self,
        name: &'static str,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let out = fs::File::create(&log)?;
        // The node's processes find their helpers on PATH: containerd its shim, the shim runc.
        let path = format!(
            "{}:{}:/usr/sbin:/sbin",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut supervisor = Command::new("bash")
            .env("PATH", path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg(self.dir.join("supervise.sh"))
            .arg(self.bin_dir.join(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let lifeline = supervisor.stdin.take();
        self.lock().push(Component {
            name,
            supervisor,
            lifeline,
            log,
        });
        Ok(())
    }

    /// Polls `ready` every 100 ms until it returns true; fails early when the component has exited.
    pub(crate) fn wait_for(
        &self,
        name: &str,
        mut ready: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if ready().unwrap_or(false) {
                return Ok(());
            }
            if let Some(status) = self.exited(name) {
                bail!(
                    "{name} exited ({status}) while starting; last lines of its log:\n{}",
                    self.log_tail(name, 40)
                );
            }
            if start.elapsed() > READY_TIMEOUT {
                bail!(
                    "{name} not ready after {}s; last lines of its log:\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail(name, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn exited(&self, name: &str) -> Option<std::process::ExitStatus> {
        let mut components = self.lock();
        let c = components.iter_mut().find(|c| c.name == name)?;
        c.supervisor.try_wait().ok().flatten()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Component>> {
        self.components
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let mut components = std::mem::take(&mut *self.lock());
        if let Some(node) = &self.node {
            // The kubelet first, so that it restarts nothing; then the containers, which outlive containerd.
            if let Some(i) = components.iter().position(|c| c.name == "kubelet") {
                stop(components.remove(i));
            }
            node.teardown();
        }
        while let Some(c) = components.pop() {
            stop(c);
        }
    }
}

/// Closes a component's lifeline and waits for it to exit (killing it after 10 s).
fn stop(mut c: Component) {
    drop(c.lifeline.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.supervisor.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if c.supervisor.try_wait().ok().flatten().is_none() {
        let _ = c.supervisor.kill();
        let _ = c.supervisor.wait();
        eprintln!("{} did not stop in time; see {}", c.name, c.log.display());
    }
}

/// Runs `"$@"` and stops it (TERM, then KILL) when standard input reaches end of file.
const SUPERVISOR: &str = r#"#!/usr/bin/env bash
"$@" </dev/null &
child=$!
exec 3<&0
( cat <&3 >/dev/null; kill -TERM "$child" 2>/dev/null; sleep 5; kill -KILL "$child" 2>/dev/null ) </dev/null &
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
wait "$child"
"#;

/// With a real node beside it, the kwok node keeps ordinary pods away: only pods that tolerate this land there.
const FAKE_NODE_TAINT: &str =
    "spec:\n  taints:\n  - { key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule }\n";

/// A node that kwok manages (the annotation selects it); it carries no taint, so ordinary pods land on it.
const FAKE_NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: { cpu: "64", memory: 256Gi, pods: "1000" }
  capacity: { cpu: "64", memory: 256Gi, pods: "1000" }
"#;

fn render_kubeconfig(server: &str, pki: &pki::Pki) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: tmi-e2e\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {cert}\n    \
         client-key-data: {key}\ncontexts:\n- name: tmi-e2e\n  context:\n    cluster: tmi-e2e\n    user: admin\n\
         current-context: tmi-e2e\n",
        ca = b64(&pki.ca_cert),
        cert = b64(&pki.admin_cert),
        key = b64(&pki.admin_key),
    )
}

/// A currently free loopback port. The OS may hand it out again before the component binds it; with
/// ephemeral ports drawn at random the window is small, and a clash shows as a component failing to start.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(f) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let all: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
