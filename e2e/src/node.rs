//! The local cluster's real node: containerd (with Debian's runc and CNI plugins), the kubelet, kube-proxy and
//! CoreDNS, all from the cluster build, running pods from images imported from OCI archives.
//! IO: writes the node's configuration under the run's directory, spawns its processes through the control
//! plane's supervisor, imports images, and on teardown ends the node's containers, mounts and cgroups.
//!
//! A real node changes the machine's network, mounts and cgroups, so it starts only inside the namespaces that
//! `scripts/isolated.sh` creates (`make test` and `make cluster-up` run in them): the node's address, the
//! pods' bridge and kube-proxy's rules exist only there. The kubelet's cgroups go under the parent that script
//! created and removes.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Name of the real node.
pub const REAL_NODE_NAME: &str = "tmi-node";

/// Pod addresses: one /24 on the node's bridge.
const POD_SUBNET: &str = "10.244.0.0/24";
/// The cluster's pod range, for kube-proxy's masquerading decisions.
const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// Images the node imports at start, from `TMI_E2E_IMAGES` (default `target/images`, written by
/// `make images`): the sandbox image first, then the project's.
pub const IMAGES: [&str; 3] = ["pause", "tmi-server", "tmi-operator"];

/// Test-only server images the node imports when `make images` wrote them (the upgrade tests need them):
/// the same binary tagged `<version>-next` (one more migration) and `<version>-broken` (a failing migration),
/// and `tmi-pgdump` (pg_dump and a shell, for the backups before migration).
pub const TEST_IMAGES: [&str; 3] = ["tmi-server-next", "tmi-server-broken", "tmi-pgdump"];

/// What `scripts/isolated.sh` tells the harness.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// The node's address (on the namespace's `tmi-node` link).
    pub node_ip: Ipv4Addr,
    /// The cgroup (relative to each hierarchy's root) under which this run's cgroups go.
    pub cgroup_parent: String,
}

impl Isolation {
    /// Reads the namespace's settings, or explains how to get them.
    pub fn from_env() -> anyhow::Result<Self> {
        if std::env::var("TMI_E2E_ISOLATED").as_deref() != Ok("1") {
            bail!(
                "a real node runs only inside the namespaces of scripts/isolated.sh, so that its pods, bridge \
                 and firewall rules never touch this machine's network: run `make test`, or \
                 `scripts/isolated.sh scripts/with-services.sh cargo test ...`"
            );
        }
        let node_ip = std::env::var("TMI_E2E_NODE_IP")
            .context("TMI_E2E_NODE_IP is not set")?
            .parse()
            .context("TMI_E2E_NODE_IP is not an IPv4 address")?;
        let cgroup_parent =
            std::env::var("TMI_E2E_CGROUP_PARENT").context("TMI_E2E_CGROUP_PARENT is not set")?;
        Ok(Self {
            node_ip,
            cgroup_parent,
        })
    }
}

/// Files and settings of one node, all under `<run>/node`.
pub(crate) struct NodeLayout {
    pub dir: PathBuf,
    pub isolation: Isolation,
    /// `/<parent>/<run>`: the kubelet's cgroup root.
    pub cgroup_root: String,
}

impl NodeLayout {
    pub fn new(run_dir: &Path, isolation: Isolation) -> Self {
        let run = run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        Self {
            dir: run_dir.join("node"),
            cgroup_root: format!("/{}/{run}", isolation.cgroup_parent),
            isolation,
        }
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    /// Writes containerd's, the CNI's, the kubelet's, kube-proxy's and CoreDNS's configuration.
    pub fn write_configs(&self, kubeconfig: &Path, ca: &Path, ports: &NodePorts) -> anyhow::Result<()> {
        for d in [
            "containerd",
            "cni/net.d",
            "cni/ipam",
            "kubelet",
            "kubelet-certs",
            "coredns",
        ] {
            fs::create_dir_all(self.dir.join(d))?;
        }
        let d = &self.dir;
        let ip = self.isolation.node_ip;
        fs::write(
            d.join("containerd/config.toml"),
            format!(
                r#"version = 3
root = "{root}"
state = "{state}"

[grpc]
  address = "{sock}"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # The machine may withhold CAP_SYS_RESOURCE: never lower a container's OOM score below containerd's own.
  restrict_oom_score_adj = true
  # Pod network namespaces as files under the state directory, not under /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni_conf}"
    max_conf_num = 1

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
                root = d.join("containerd/root").display(),
                state = d.join("containerd/state").display(),
                sock = self.containerd_socket().display(),
                cni_conf = d.join("cni/net.d").display(),
                pause = image_ref("pause"),
            ),
        )?;
        fs::write(
            d.join("cni/net.d/10-tmi-e2e.conflist"),
            serde_json::to_string_pretty(&serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "tmi-e2e",
                "plugins": [{
                    "type": "bridge",
                    "bridge": "tmi-cni0",
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": POD_SUBNET }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": d.join("cni/ipam"),
                    },
                }],
            }))?,
        )?;
        // Pods with dnsPolicy Default get this; there is no upstream resolver in the namespace.
        fs::write(d.join("resolv.conf"), format!("nameserver {ip}\n"))?;
        fs::write(
            d.join("kubelet/config.yaml"),
            format!(
                r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {ip}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{ enabled: false }}
  webhook: {{ enabled: false }}
  x509: {{ clientCAFile: {ca} }}
authorization: {{ mode: AlwaysAllow }}
containerRuntimeEndpoint: unix://{sock}
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failCgroupV1: false
failSwapOn: false
protectKernelDefaults: false
clusterDNS: [{ip}]
clusterDomain: cluster.local
resolvConf: {resolv}
podLogsDir: /var/log/pods
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{ memory.available: 50Mi, nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%" }}
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 2s
syncFrequency: 10s
fileCheckFrequency: 5s
shutdownGracePeriod: 0s
maxPods: 110
"#,
                port = ports.kubelet,
                healthz = ports.kubelet_healthz,
                ca = ca.display(),
                sock = self.containerd_socket().display(),
                cgroup_root = self.cgroup_root,
                resolv = d.join("resolv.conf").display(),
            ),
        )?;
        fs::write(
            d.join("kube-proxy.yaml"),
            format!(
                r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{ kubeconfig: {kubeconfig} }}
hostnameOverride: {node}
mode: iptables
clusterCIDR: {cluster_cidr}
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
# Conntrack sizes and timeouts are machine-wide: leave them alone.
conntrack: {{ maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s }}
iptables: {{ localhostNodePorts: false }}
"#,
                kubeconfig = kubeconfig.display(),
                node = REAL_NODE_NAME,
                cluster_cidr = CLUSTER_CIDR,
                healthz = ports.proxy_healthz,
                metrics = ports.proxy_metrics,
            ),
        )?;
        fs::write(
            d.join("coredns/Corefile"),
            format!(
                r#".:53 {{
    bind {ip}
    errors
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} tmi-e2e
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"#,
                health = ports.dns_health,
                ready = ports.dns_ready,
                kubeconfig = kubeconfig.display(),
            ),
        )?;
        Ok(())
    }

    /// Creates the kubelet's cgroup root in every hierarchy (the kubelet requires it to exist).
    pub fn create_cgroups(&self) -> anyhow::Result<()> {
        for m in cgroup_mounts() {
            let p = m.join(self.cgroup_root.trim_start_matches('/'));
            fs::create_dir_all(&p).with_context(|| format!("creating cgroup {}", p.display()))?;
        }
        Ok(())
    }

    /// Ends every container of this node and removes what they leave: their processes (found through the
    /// node's cgroups), containerd's shims, the mounts under the node's directory, and the cgroups.
    /// Called with the kubelet already stopped, so that nothing restarts a container meanwhile.
    pub fn teardown(&self) {
        for _ in 0..50 {
            let pids = self.container_pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let sock = self.containerd_socket();
        for pid in shim_pids(&sock) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        unmount_under(&self.dir);
        let deadline = Instant::now() + Duration::from_secs(5);
        for m in cgroup_mounts() {
            let root = m.join(self.cgroup_root.trim_start_matches('/'));
            while root.exists() && Instant::now() < deadline {
                remove_cgroup_tree(&root);
                if root.exists() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn container_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for m in cgroup_mounts() {
            collect_procs(&m.join(self.cgroup_root.trim_start_matches('/')), &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// Ends what a real node of an earlier run left behind, given that run's directory (`tmi-e2e-<pid>-<random>`,
/// whose process is gone). A test binary's shared control plane is a static, which Rust never drops: when the
/// binary exits, its supervisors stop the kubelet and containerd, but containers and their shims outlive
/// them. The next run, or the end of `scripts/isolated.sh`'s namespaces, ends them.
pub(crate) fn cleanup_stale_run(run_dir: &Path) {
    let Some(run) = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let sock = run_dir.join("node/containerd/containerd.sock");
    for pid in shim_pids(&sock) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    let roots: Vec<PathBuf> = cgroup_mounts()
        .iter()
        .flat_map(|m| {
            fs::read_dir(m)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("tmi-e2e-"))
                .map(|e| e.path().join(&run))
                .filter(|p| p.is_dir())
                .collect::<Vec<_>>()
        })
        .collect();
    for _ in 0..50 {
        let mut pids = Vec::new();
        for r in &roots {
            collect_procs(r, &mut pids);
        }
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unmount_under(run_dir);
    for r in &roots {
        remove_cgroup_tree(r);
    }
}

/// Ports the node's processes listen on (all but the kubelet's API on loopback).
pub(crate) struct NodePorts {
    pub kubelet: u16,
    pub kubelet_healthz: u16,
    pub proxy_healthz: u16,
    pub proxy_metrics: u16,
    pub dns_health: u16,
    pub dns_ready: u16,
}

/// The name an image archive of [`IMAGES`] carries (`scripts/images.sh`).
pub fn image_ref(name: &str) -> String {
    format!("ghcr.io/tmi-operator/{name}:{}", env!("CARGO_PKG_VERSION"))
}

/// Where `make images` put the archives.
pub fn images_dir() -> PathBuf {
    std::env::var_os("TMI_E2E_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/images")
                .components()
                .collect()
        })
}

/// Every mounted cgroup hierarchy (v1 controllers and the v2 tree).
fn cgroup_mounts() -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

fn collect_procs(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_procs(&e.path(), out);
            }
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// containerd's shims for the containerd listening on `sock` (their command line names its address).
fn shim_pids(sock: &Path) -> Vec<u32> {
    let needle = sock.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("containerd-shim") && c.contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Unmounts every mount point under `dir`, deepest first (overlay snapshots, pod volumes, netns files).
fn unmount_under(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let _ = Command::new("umount").args(["-l", &p]).status();
    }
}
