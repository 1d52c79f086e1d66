# kcp-tmc: Transparent Multi-Cluster for kcp.
#
#   make run    build everything, start a local kcp, install the APIs, bind a sample tenant
#               workspace, run the manager, apply a sample SyncTarget; prints what to try
#   make test   every test: unit tests, the image test and the end-to-end tests against a real kcp
#   make image  the container image as an OCI archive, without a daemon (target/image/kcp-tmc.oci.tar)
#   make soak   30 minutes of churn with a manager restart; memory, errors and state judged
#               (TMC_SOAK_MINUTES=3 for a short run; results in docs/reliability.md)
#   make chaos  faults against real servers (kill -9, SIGSTOP, restarts, compaction, a TCP proxy);
#               TMC_CHAOS_SHORT=1 for the smaller sizes CI runs (docs/reliability.md)
#
# Servers are built from the Go module proxy and cached by version outside the clone
# (~/.cache/kcp-tmc, or $TMC_CACHE_DIR); the first build prints progress and takes a while.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build test unit e2e e2e-sharded soak chaos run run-sharded kcp kcp-bin servers bench coverage generate fmt lint clean-cache help image image-rootfs

all: build

help:
	@sed -n '1,15p' Makefile

build:
	$(CARGO) build --bins

kcp-bin:
	@tests/servers.sh kcp >/dev/null

## kcp, etcd, kube-apiserver/-controller-manager/-scheduler, kwok and helm built, Prometheus fetched from Debian; cached.
servers:
	@tests/servers.sh all

## Unit tests, the image test (the image is built first) and the e2e suite against a real kcp and
## real clusters, which also lints and renders the chart with a real helm (built first, with progress).
test: servers image
	TMC_KCP_BIN=$$(tests/servers.sh kcp) TMC_HELM_BIN=$$(tests/servers.sh helm) \
	TMC_IMAGE_ARCHIVE=$(CURDIR)/$(IMAGE_DIR)/kcp-tmc.oci.tar $(CARGO) test --no-fail-fast

unit:
	$(CARGO) test --lib --bins

e2e: servers
	TMC_KCP_BIN=$$(tests/servers.sh kcp) $(CARGO) test --test e2e

## The two-shard kcp e2e test alone (it is part of `make test` too).
e2e-sharded: servers
	TMC_KCP_BIN=$$(tests/servers.sh kcp) $(CARGO) test --test e2e -- sharded

## Soak (release build): churn across 20 workspaces and 2 clusters for TMC_SOAK_MINUTES (default
## 30) with a manager restart at half time; samples in target/soak/, verdicts on stdout.
soak: servers
	TMC_KCP_BIN=$$(tests/servers.sh kcp) $(CARGO) test --release --test soak

## The chaos suite: one case at a time against a real kcp and two real clusters (~20 min).
chaos: servers
	TMC_KCP_BIN=$$(tests/servers.sh kcp) $(CARGO) test --test chaos

## A local kcp with the APIs installed, a bound tenant workspace, the manager and a sample.
run: servers build
	tests/run-local.sh

## `make run` on a two-shard kcp behind its front-proxy (tests/run-sharded.sh).
run-sharded: servers build
	tests/run-sharded.sh

## Only a local kcp (no kcp-tmc), for a person to use.
kcp: kcp-bin
	TMC_KCP_ONLY=1 tests/run-local.sh

## Line coverage of the unit and e2e tests (installs cargo-llvm-cov on first use).
coverage: servers
	@command -v cargo-llvm-cov >/dev/null || $(CARGO) install cargo-llvm-cov --locked
	TMC_KCP_BIN=$$(tests/servers.sh kcp) $(CARGO) llvm-cov --no-fail-fast --summary-only

## Benchmarks (release build): sync against real servers beside the peer kcp-dev/api-syncagent
## (built on first use), floor, kcp-tmc and peer interleaved over 3 repetitions →
## docs/benchmarks.md and docs/benchmarks.json (~30 min, progress on stderr); the Placement
## decision in process → docs/benchmarks-placement.md.
bench: servers
	TMC_KCP_BIN=$$(tests/servers.sh kcp) TMC_PEER_BIN=$$(tests/servers.sh api-syncagent) $(CARGO) bench --bench sync
	$(CARGO) bench --bench placement

## The container image, without a container daemon: `tmc` built statically, a root filesystem
## assembled (binary, CA bundle, user 65532), Containerfile built by buildah (installed with
## apt-get on first use) → target/image/kcp-tmc.oci.tar (an OCI archive: `skopeo copy
## oci-archive:target/image/kcp-tmc.oci.tar docker://<registry>/kcp-tmc:<tag>` publishes it).
VERSION := v$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
HOST_TARGET := $(shell rustc -vV | sed -n 's/^host: //p')
IMAGE_DIR := target/image
BUILDAH := buildah --storage-driver vfs
image-rootfs:
	@echo ">> building tmc $(VERSION) statically for $(HOST_TARGET)"
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked --target $(HOST_TARGET) --bin tmc
	rm -rf $(IMAGE_DIR)/rootfs
	mkdir -p $(IMAGE_DIR)/rootfs/usr/local/bin $(IMAGE_DIR)/rootfs/etc/ssl/certs
	install -m 0755 target/$(HOST_TARGET)/release/tmc $(IMAGE_DIR)/rootfs/usr/local/bin/tmc
	install -m 0644 /etc/ssl/certs/ca-certificates.crt $(IMAGE_DIR)/rootfs/etc/ssl/certs/ca-certificates.crt
	printf 'root:x:0:0:root:/:/sbin/nologin\ntmc:x:65532:65532:kcp-tmc:/:/sbin/nologin\n' >$(IMAGE_DIR)/rootfs/etc/passwd
	printf 'root:x:0:\ntmc:x:65532:\n' >$(IMAGE_DIR)/rootfs/etc/group

image: image-rootfs
	@command -v buildah >/dev/null || { echo ">> installing buildah (a daemonless OCI image builder) with apt-get"; apt-get install -y -q buildah >/dev/null; }
	$(BUILDAH) build --isolation chroot --quiet -f Containerfile -t localhost/kcp-tmc:$(VERSION) $(IMAGE_DIR)/rootfs
	rm -f $(IMAGE_DIR)/kcp-tmc.oci.tar
	$(BUILDAH) push --quiet localhost/kcp-tmc:$(VERSION) oci-archive:$(IMAGE_DIR)/kcp-tmc.oci.tar:kcp-tmc:$(VERSION)
	$(BUILDAH) rmi localhost/kcp-tmc:$(VERSION) >/dev/null
	@echo ">> wrote $(IMAGE_DIR)/kcp-tmc.oci.tar"

## Regenerate crds/, config/kcp/ and config/samples/apibinding.yaml from the Rust types.
generate:
	$(CARGO) run --quiet -- generate

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	# --all-targets leaves out test targets with `test = false` (the chaos and soak suites).
	$(CARGO) clippy --test chaos --test soak -- -D warnings

clean-cache:
	rm -rf $${TMC_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/kcp-tmc}
