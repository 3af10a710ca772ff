//! Test harness for everything that must be proven against a real Kubernetes API server.
//!
//! [`shared`] starts one local control plane per test binary (see [`controlplane`]); each test takes its own
//! namespace with [`ControlPlane::namespace`], so tests in one binary run in parallel without seeing each
//! other's objects.

pub mod controlplane;
pub mod edge;
mod namespace;
pub mod node;
mod pki;

use std::sync::OnceLock;

pub use controlplane::{ControlPlane, NODE_NAME, Options};
pub use edge::{Edge, GatewayApiChannel};
pub use namespace::TestNamespace;
pub use node::REAL_NODE_NAME;

/// The first start's outcome; a failed start is kept, so the other tests fail at once with the same message.
static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
static SHARED_WITH_NODE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The control plane shared by every test in this test binary, started on first use (blocking, a few seconds
/// when the binaries are cached). Its components stop when the test process exits.
///
/// # Panics
/// When the control plane cannot start; the message names the component and ends with its log.
pub fn shared() -> &'static ControlPlane {
    start_once(&SHARED, false)
}

/// Like [`shared`], with a real node that runs pods from the images of `make images` (see [`node`]); the
/// kwok node is tainted. Only inside `scripts/isolated.sh` (`make test` runs every test there).
///
/// # Panics
/// When the control plane or the node cannot start.
pub fn shared_with_node() -> &'static ControlPlane {
    start_once(&SHARED_WITH_NODE, true)
}

fn start_once(cell: &'static OnceLock<Result<ControlPlane, String>>, node: bool) -> &'static ControlPlane {
    let started = cell.get_or_init(|| {
        let began = std::time::Instant::now();
        let cp = Options::for_tests()
            .and_then(|o| ControlPlane::start(Options { node, ..o }))
            .map_err(|e| format!("{e:#}"))?;
        eprintln!(
            "local control plane{} ready at {} in {:.1?} ({})",
            if node { " and node" } else { "" },
            cp.server(),
            began.elapsed(),
            cp.dir().display()
        );
        Ok(cp)
    });
    match started {
        Ok(cp) => cp,
        Err(e) => panic!("the local control plane failed to start: {e}"),
    }
}
