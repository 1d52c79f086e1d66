#!/usr/bin/env bash
# Builds the real servers the tests and `make run` use, from the Go module proxy, and caches
# the binaries by version outside the clone. Prints the binary's path on stdout; progress goes
# to stderr.
#
#   tests/servers.sh kcp      # -> $CACHE/bin/kcp-<version>/kcp
#   tests/servers.sh kcp-sharded  # -> $CACHE/bin/kcp-sharded-<version>/ (kcp, kcp-front-proxy, cache-server,
#                                 #    sharded-test-server: a two-shard kcp, see tests/sharded.sh)
#   tests/servers.sh kube     # -> $CACHE/bin/kube-<version>/ (kube-apiserver, -controller-manager, -scheduler)
#   tests/servers.sh etcd     # -> $CACHE/bin/etcd-<version>/etcd
#   tests/servers.sh kwok     # -> $CACHE/bin/kwok-<version>/kwok
#   tests/servers.sh prometheus  # -> $CACHE/bin/prometheus-<version>/ (prometheus, promtool), from Debian's package
#   tests/servers.sh helm     # -> $CACHE/bin/helm-<version>/helm (lints and renders charts/kcp-tmc in the e2e suite)
#   tests/servers.sh all      # all of the above; prints nothing
#   tests/servers.sh api-syncagent  # -> $CACHE/bin/api-syncagent-<version>/api-syncagent, the benchmark peer
#                                   # (only `make bench` needs it, so `all` leaves it out)
#
# Cache: $TMC_CACHE_DIR, else $XDG_CACHE_HOME/kcp-tmc, else ~/.cache/kcp-tmc.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${TMC_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kcp-tmc}

KCP_VERSION=v0.32.3
KCP_KUBE_VERSION=v1.36.0
KUBE_VERSION=v1.34.3
ETCD_VERSION=v3.6.5
KWOK_VERSION=v0.8.0
SYNCAGENT_VERSION=v0.7.0
HELM_VERSION=v4.3.2
# kcp v0.32.3 requires virtual-workspace-framework at an unpublished v0.32 state; v0.31.2 is the
# newest the proxy serves and lacks one function, which kcp-server/vwf-shim adds.
VWF_VERSION=v0.31.2

log() { printf '>> %s\n' "$*" >&2; }

# Reads `go build -v` package lines and prints a progress line every 100 packages.
progress() {
  local start=$SECONDS n=0 line
  while IFS= read -r line; do
    case "$line" in
      *.go:[0-9]*|go:\ *|\#\ *) printf '%s\n' "$line" >&2 ;;
      *) n=$((n + 1)); if ((n % 100 == 0)); then log "$1: $n packages compiled ($((SECONDS - start))s)"; fi ;;
    esac
  done
}

module_dir() {
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

# vwf_overlay WORK: assembles WORK/.vwf-overlay, which the kcp and api-syncagent wrappers use in
# place of virtual-workspace-framework (see tests/kcp-server/README.md).
vwf_overlay() {
  local work=$1 vwf
  vwf=$(cd "$work" && GOFLAGS=-mod=mod module_dir "github.com/kcp-dev/virtual-workspace-framework@$VWF_VERSION")
  [[ -n $vwf ]] || { log "cannot download virtual-workspace-framework $VWF_VERSION"; exit 1; }
  cp -R "$vwf" "$work/.vwf-overlay"
  chmod -R u+w "$work/.vwf-overlay"
  cp "$here/kcp-server/vwf-shim/path_segment_name.go.in" "$work/.vwf-overlay/pkg/forwardingregistry/zz_path_segment_name.go"
}

# kcp_go_build OUT_DIR NAME PACKAGE...: builds kcp's commands from the wrapper module
# tests/kcp-server into OUT_DIR (a fresh build directory each time; Go's build cache makes a
# second command of the same module cheap).
kcp_go_build() {
  local out=$1 name=$2
  shift 2
  local work=$cache/build/$name-$KCP_VERSION
  rm -rf "$work"
  mkdir -p "$work" "$out"
  cp "$here/kcp-server/go.mod" "$here/kcp-server/go.sum" "$work/"
  echo 'package kcpserver' >"$work/doc.go"
  vwf_overlay "$work"
  local v="$KCP_KUBE_VERSION+kcp-$KCP_VERSION" ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=36"
  done
  (
    cd "$work"
    # The kcp fork's pseudo-versions are not in the checksum database this proxy serves;
    # the committed go.sum pins their hashes instead.
    export GONOSUMDB='github.com/kcp-dev/*' GOTOOLCHAIN=local CGO_ENABLED=0
    export GOFLAGS="$(go env GOFLAGS) -trimpath"
    go build -v -ldflags "$ld" -o "$out/" "$@" 2>&1 | progress "$name"
    exit "${PIPESTATUS[0]}"
  )
}

build_kcp() {
  local out=$cache/bin/kcp-$KCP_VERSION/kcp
  if [[ -x $out ]]; then echo "$out"; return; fi
  log "building kcp $KCP_VERSION from the Go module proxy into $out"
  log "a cold build takes 10-40 minutes on 2 cores; later runs reuse the cached binary"
  rm -rf "$out.tmp"
  kcp_go_build "$out.tmp" kcp github.com/kcp-dev/kcp/cmd/kcp
  mv "$out.tmp/kcp" "$out"
  rm -rf "$out.tmp"
  log "built $out"
  echo "$out"
}

# kcp's sharded topology (tests/sharded.sh): the front-proxy, the cache server and kcp's own
# sharded-test-server (which makes the PKI and starts them), beside a link to the kcp above.
build_kcp_sharded() {
  local kcp out=$cache/bin/kcp-sharded-$KCP_VERSION
  kcp=$(build_kcp)
  if [[ -f $out/.complete ]]; then echo "$out"; return; fi
  log "building kcp-front-proxy, cache-server and sharded-test-server $KCP_VERSION into $out"
  log "with kcp built, a build takes 1-5 minutes on 2 cores"
  rm -rf "$out"
  kcp_go_build "$out" kcp-sharded github.com/kcp-dev/kcp/cmd/kcp-front-proxy \
    github.com/kcp-dev/kcp/cmd/cache-server github.com/kcp-dev/kcp/cmd/sharded-test-server
  ln -s "$kcp" "$out/kcp"
  touch "$out/.complete"
  log "built $out"
  echo "$out"
}

# The benchmark peer (benches/peer/): kcp-dev/api-syncagent, built like kcp, on the same pins of
# kcp's Kubernetes fork and the same virtual-workspace-framework overlay (tests/syncagent-server).
# Beside the binary: publishedresources.yaml, the agent's PublishedResource CRD from its module.
build_syncagent() {
  local out=$cache/bin/api-syncagent-$SYNCAGENT_VERSION/api-syncagent
  local crd=${out%/*}/publishedresources.yaml
  if [[ -x $out && -f $crd ]]; then echo "$out"; return; fi
  log "building api-syncagent $SYNCAGENT_VERSION from the Go module proxy into $out"
  log "a cold build takes 5-20 minutes on 2 cores (less once kcp is built); later runs reuse the cached binary"
  local work=$cache/build/api-syncagent-$SYNCAGENT_VERSION
  rm -rf "$work"
  mkdir -p "$work" "$(dirname "$out")"
  cp "$here/syncagent-server/go.mod" "$here/syncagent-server/go.sum" "$work/"
  echo 'package syncagentserver' >"$work/doc.go"
  vwf_overlay "$work"
  local ld="-s -w -X github.com/kcp-dev/api-syncagent/internal/version.gitVersion=$SYNCAGENT_VERSION"
  (
    cd "$work"
    export GONOSUMDB='github.com/kcp-dev/*' GOTOOLCHAIN=local CGO_ENABLED=0
    export GOFLAGS="$(go env GOFLAGS) -trimpath"
    go build -v -ldflags "$ld" -o "$out.tmp" github.com/kcp-dev/api-syncagent/cmd/api-syncagent 2>&1 | progress api-syncagent
    exit "${PIPESTATUS[0]}"
  )
  mv "$out.tmp" "$out"
  local src
  src=$(cd "$work" && module_dir "github.com/kcp-dev/api-syncagent@$SYNCAGENT_VERSION")
  install -m 0644 "$src/deploy/crd/kcp.io/syncagent.kcp.io_publishedresources.yaml" "$crd"
  log "built $out"
  echo "$out"
}

# build_wrapper NAME VERSION WRAPPER_DIR LDFLAGS PACKAGE... : builds the packages of a wrapper
# module under tests/ into $cache/bin/NAME-VERSION/ and prints that directory.
build_wrapper() {
  local name=$1 version=$2 wrapper=$3 ld=$4
  shift 4
  local out=$cache/bin/$name-$version
  if [[ -f $out/.complete ]]; then echo "$out"; return; fi
  log "building $name $version from the Go module proxy into $out (cold: 5-30 minutes on 2 cores)"
  local work=$cache/build/$name-$version
  rm -rf "$work" "$out"
  mkdir -p "$work" "$out"
  cp "$here/$wrapper/go.mod" "$here/$wrapper/go.sum" "$work/"
  (
    cd "$work"
    export GOTOOLCHAIN=local CGO_ENABLED=0
    export GOFLAGS="$(go env GOFLAGS) -trimpath"
    go build -v -ldflags "$ld" -o "$out/" "$@" 2>&1 | progress "$name"
    exit "${PIPESTATUS[0]}"
  )
  touch "$out/.complete"
  log "built $name into $out"
  echo "$out"
}

build_kube() {
  local ld="-s -w" pkg minor=${KUBE_VERSION#v1.}
  minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  done
  build_wrapper kube "$KUBE_VERSION" kube-server "$ld" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
}

build_etcd() {
  local dir
  dir=$(build_wrapper etcd "$ETCD_VERSION" etcd-server "-s -w" go.etcd.io/etcd/server/v3)
  # go build names the binary after the module's last path element that is not a version.
  [[ -x $dir/etcd ]] || mv "$dir/server" "$dir/etcd"
  echo "$dir"
}

# go_install OUT NAME LDFLAGS PACKAGE@VERSION: `go install` of a module without replace
# directives into OUT, statically, with progress lines named NAME.
go_install() {
  local out=$1 name=$2 ld=$3 pkg=$4
  mkdir -p "$out"
  (
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN=$out
    export GOFLAGS="$(go env GOFLAGS) -trimpath"
    go install -v -ldflags "$ld" "$pkg" 2>&1 | progress "$name"
    exit "${PIPESTATUS[0]}"
  )
}

build_kwok() {
  local out=$cache/bin/kwok-$KWOK_VERSION
  if [[ -x $out/kwok && -f $out/stages.yaml ]]; then echo "$out"; return; fi
  log "building kwok $KWOK_VERSION from the Go module proxy into $out"
  go_install "$out" kwok "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # The "fast" stages shipped in the kwok module: nodes become Ready at once, pods become Ready
  # once scheduled, complete and get deleted.
  local src
  src=$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")/kustomize/stage
  for f in node/fast/node-initialize.yaml pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    printf -- '---\n'
    cat "$src/$f"
  done >"$out/stages.yaml"
  echo "$out"
}

# Helm's own module has no replace directives, so `go install` takes it, like kwok.
build_helm() {
  local out=$cache/bin/helm-$HELM_VERSION
  if [[ -x $out/helm ]]; then echo "$out/helm"; return; fi
  log "building helm $HELM_VERSION from the Go module proxy into $out (cold: 3-10 minutes on 2 cores)"
  go_install "$out" helm "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  echo "$out/helm"
}

# Prometheus is not built: Debian's package (the version this machine's apt lists) is downloaded
# with apt-get and unpacked, which takes seconds instead of a Go build of its web UI.
fetch_prometheus() {
  local version
  version=$(apt-cache show --no-all-versions prometheus 2>/dev/null | sed -n 's/^Version: //p' | head -n1)
  if [[ -z $version ]]; then
    log "apt knows no prometheus package; fix: run 'apt-get update' (as root) and try again"
    exit 1
  fi
  local out=$cache/bin/prometheus-$version
  if [[ -f $out/.complete ]]; then echo "$out"; return; fi
  log "fetching Debian's prometheus $version with apt-get into $out"
  local work
  work=$(mktemp -d)
  # apt's download user must be able to write there.
  chmod 755 "$work"
  # The unpacked tree and the .deb are only needed until the two binaries are copied out.
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  (cd "$work" && apt-get download "prometheus=$version" >&2)
  log "unpacking $(cd "$work" && ls ./*.deb)"
  dpkg-deb -x "$work"/*.deb "$work/root"
  rm -rf "$out"
  mkdir -p "$out"
  cp "$work/root/usr/bin/prometheus" "$work/root/usr/bin/promtool" "$out/"
  touch "$out/.complete"
  log "prometheus $version ready in $out"
  echo "$out"
}

case "${1:-}" in
  kcp) build_kcp ;;
  kcp-sharded) build_kcp_sharded ;;
  kube) build_kube ;;
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  prometheus) fetch_prometheus ;;
  helm) build_helm ;;
  api-syncagent) build_syncagent ;;
  all) build_kcp >/dev/null; build_kcp_sharded >/dev/null; build_etcd >/dev/null; build_kwok >/dev/null; build_kube >/dev/null; fetch_prometheus >/dev/null; build_helm >/dev/null ;;
  *) echo "usage: $0 kcp|kcp-sharded|kube|etcd|kwok|prometheus|helm|api-syncagent|all" >&2; exit 2 ;;
esac
