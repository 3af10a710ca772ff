# The two commands a newcomer needs: `make run` (the server on SQLite with the dev login) and `make test`
# (every test, starting PostgreSQL, Redis and a local Kubernetes control plane itself).
.PHONY: run test bench-api bench-collab bench-operator controlplane cluster-up cluster-down crds docs fmt lint images

CLUSTER_DIR ?= .cluster

run:
	cargo run -p tmi-server

test:
	scripts/test.sh

# Benchmarks (release builds), with the same services the tests use. See docs/server.md and docs/operator.md.
bench-api:
	scripts/with-services.sh cargo bench -p tmi-server --bench api

# Collaboration: WebSocket fan-out latency and operations/s on one and two replicas (docs/development.md).
bench-collab:
	scripts/with-services.sh cargo bench -p tmi-server --bench collab

bench-operator:
	scripts/with-services.sh cargo bench -p tmi-operator --bench operator

# Builds the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok) into
# ~/.cache/tmi-operator/controlplane/<pins>/bin, or reuses that build.
controlplane:
	e2e/controlplane/build.sh

# The same control plane the tests use, in the background; kubeconfig at $(CLUSTER_DIR)/kubeconfig.
cluster-up:
	scripts/cluster.sh up $(CLUSTER_DIR)

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

# Container images (needs a container engine; none runs on our CI machines, so CI does not build them).
IMAGE_REGISTRY ?= ghcr.io/tmi-operator
IMAGE_TAG ?= $(shell cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
CONTAINER_ENGINE ?= docker
images:
	$(CONTAINER_ENGINE) build -f tmi-server/Dockerfile -t $(IMAGE_REGISTRY)/tmi-server:$(IMAGE_TAG) .
	$(CONTAINER_ENGINE) build -f operator/Dockerfile -t $(IMAGE_REGISTRY)/tmi-operator:$(IMAGE_TAG) .
