# The two commands a newcomer needs: `make run` (the server on SQLite with the dev login) and `make test`
# (every test, starting PostgreSQL, Redis and a local Kubernetes control plane itself).
.PHONY: run test bench bench-report bench-api bench-collab bench-collab-sessions bench-operator controlplane cluster-up cluster-shell cluster-down crds docs fmt lint images

CLUSTER_DIR ?= .cluster

run:
	cargo run -p tmi-server

test:
	scripts/test.sh

# Benchmarks (release builds), with the same services the tests use but Keycloak (a JVM starting beside the
# measurements would disturb them). See docs/server.md and docs/operator.md. Each suite also writes its results
# to $(BENCH_RESULTS_DIR)/<suite>.json; `make bench` runs them all and then `bench-report`, which turns those
# files into docs/benchmarks.md and its SVG charts (docs/benchmarks/). One suite alone: `make bench-api
# bench-report` refreshes the page with that suite's new figures and the others' last ones.
BENCH_RESULTS_DIR ?= $(CURDIR)/target/bench-results
export BENCH_RESULTS_DIR

bench: bench-api bench-collab bench-collab-sessions bench-operator
	$(MAKE) bench-report

bench-report:
	cargo run -q -p tmi-bench-report -- $(BENCH_RESULTS_DIR) docs/benchmarks.md

bench-api:
	mkdir -p $(BENCH_RESULTS_DIR)
	TMI_KEYCLOAK=off scripts/with-services.sh cargo bench -p tmi-server --bench api

# Collaboration: WebSocket fan-out latency and operations/s on one and two replicas (docs/development.md).
bench-collab:
	mkdir -p $(BENCH_RESULTS_DIR)
	TMI_KEYCLOAK=off scripts/with-services.sh cargo bench -p tmi-server --bench collab

bench-collab-sessions:
	mkdir -p $(BENCH_RESULTS_DIR)
	TMI_KEYCLOAK=off scripts/with-services.sh cargo bench -p tmi-server --bench collab-sessions

bench-operator:
	mkdir -p $(BENCH_RESULTS_DIR)
	TMI_KEYCLOAK=off scripts/with-services.sh cargo bench -p tmi-operator --bench operator

# Builds the local cluster (control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok; node: containerd, kubelet, kube-proxy, CoreDNS, pause) into
# ~/.cache/tmi-operator/controlplane/<pins>/, or reuses that build.
controlplane:
	e2e/controlplane/build.sh

# The same cluster the tests use (control plane and a real node), in the background, inside namespaces of its
# own; `make cluster-shell` opens a shell in them (kubectl, helm), `make cluster-down` stops it.
cluster-up:
	scripts/cluster.sh up $(CLUSTER_DIR)

cluster-shell:
	scripts/cluster.sh shell $(CLUSTER_DIR)

cluster-down:
	scripts/cluster.sh down $(CLUSTER_DIR)

# Regenerates the CRD from the Rust types, and the chart's copy (tests fail when either is stale).
crds:
	cargo run -q -p tmi-operator -- crd > crds/tmi.dev_tmiinstances.yaml
	cp crds/tmi.dev_tmiinstances.yaml charts/tmi-operator/crds/

# Regenerates docs/reference.md from the CRD schema (a test fails when it is stale).
docs:
	TMI_UPDATE_DOCS=1 cargo test -q -p tmi-e2e --test docs

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings

# OCI image archives of tmi-server and tmi-operator in target/images, without a container engine (static musl
# binaries, umoci; see scripts/images.sh). The tests run these images; `ctr images import`, `kind load
# image-archive` and `crane push` take the archives. The Dockerfiles remain for people with an engine.
images:
	scripts/images.sh
