#!/usr/bin/env bash
# `make run-sharded`: `make run` on kcp's sharded topology. A two-shard kcp (tests/sharded.sh:
# root shard, shard-1, cache server, front-proxy on https://127.0.0.1:6443), two physical
# clusters, kcp-tmc installed into root:tmc (on the root shard) through the front-proxy, a
# tenant on each shard (root:east on root, root:west on shard-1, pinned by their Workspaces'
# location selectors), one `tmc manager` pointed at the front-proxy, and in each tenant a
# push-mode SyncTarget, config/samples/placement.yaml and config/samples/deployment.yaml.
# Prints what to try; stops everything on Ctrl-C.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
state=${TMC_RUN_DIR:-$repo/.tmc-run-sharded}
tmc=$repo/target/debug/tmc
log() { printf '>> %s\n' "$*" >&2; }

[[ -x $tmc ]] || { log "build first: cargo build --bins"; exit 1; }
rm -rf "$state"
mkdir -p "$state"
pids=()
cleanup() {
  log "stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for c in cluster-1 cluster-2; do "$repo/tests/cluster.sh" down "$state/$c" 2>/dev/null || true; done
  "$repo/tests/sharded.sh" down "$state/kcp" || true
}
trap cleanup EXIT INT TERM

admin=$("$repo/tests/sharded.sh" up "$state/kcp")
k() { kubectl --kubeconfig "$admin" --server "https://127.0.0.1:6443/clusters/$1" "${@:2}"; }

log "starting two physical clusters (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
for c in cluster-1 cluster-2; do "$repo/tests/cluster.sh" up "$state/$c" 2 >/dev/null; done

# workspace NAME SHARD: a workspace below root, scheduled on SHARD.
workspace() {
  k root apply -f - >/dev/null <<YAML
apiVersion: tenancy.kcp.io/v1alpha1
kind: Workspace
metadata: {name: $1}
spec: {location: {selector: {matchLabels: {name: $2}}}}
YAML
  k root wait --for=jsonpath='{.status.phase}'=Ready "workspace/$1" --timeout=120s >/dev/null
  log "workspace root:$1 is on shard $(k root get workspace "$1" -o jsonpath='{.metadata.annotations.core\.kcp\.io/shard}')"
}

workspace tmc root
log "installing kcp-tmc's APIExport into root:tmc through the front-proxy"
"$tmc" install --kubeconfig "$admin" --workspace root:tmc

log "starting tmc manager against the front-proxy (log: $state/manager.log)"
"$tmc" manager --kubeconfig "$admin" --workspace root:tmc --cluster-address-allow 127.0.0.1/32 \
  --metrics-bind-address 127.0.0.1:8080 --health-bind-address 127.0.0.1:8081 >"$state/manager.log" 2>&1 &
pids+=($!)

for pair in east:root:cluster-1 west:shard-1:cluster-2; do
  IFS=: read -r ws shard cluster <<<"$pair"
  workspace "$ws" "$shard"
  k "root:$ws" apply -f "$repo/config/samples/apibinding.yaml" >/dev/null
  for _ in $(seq 1 120); do k "root:$ws" get synctargets >/dev/null 2>&1 && break; sleep 0.5; done
  k "root:$ws" -n default create secret generic "$cluster-kubeconfig" \
    --from-file=kubeconfig="$state/$cluster/kubeconfig" --dry-run=client -o yaml | k "root:$ws" apply -f - >/dev/null
  k "root:$ws" apply -f - >/dev/null <<YAML
apiVersion: sync.kcp.io/v1alpha1
kind: SyncTarget
metadata: {name: $cluster, labels: {cluster: $cluster}}
spec:
  kubeconfigSecretRef: {namespace: default, name: $cluster-kubeconfig}
YAML
  # The sample Placement selects namespaces labelled app=web and targets with a cluster label.
  k "root:$ws" apply -f "$repo/config/samples/placement.yaml" >/dev/null
  k "root:$ws" create namespace web >/dev/null
  k "root:$ws" label namespace web app=web >/dev/null
  k "root:$ws" -n web apply -f "$repo/config/samples/deployment.yaml" >/dev/null
done
for ws in east west; do
  k "root:$ws" wait --for=condition=Ready synctarget --all --timeout=120s >/dev/null
  k "root:$ws" -n web wait --for=jsonpath='{.status.availableReplicas}'=2 deployment/web --timeout=120s >/dev/null || true
done

cat <<TXT

kcp-tmc is running on a two-shard kcp. In another terminal:

  export KUBECONFIG=$admin                 # the front-proxy, as kcp-admin
  K="kubectl --server https://127.0.0.1:6443/clusters"

  kubectl --context root get shards                          # root and shard-1
  kubectl --context root get workspaces -o custom-columns=NAME:.metadata.name,SHARD:'.metadata.annotations.core\.kcp\.io/shard'
  \$K/root:tmc get apiexportendpointslice tmc.kcp.io -o jsonpath='{.status.endpoints[*].url}'; echo
  \$K/root:east get synctargets,placements                    # reconciled through the root shard
  \$K/root:west get synctargets,placements                    # ... and through shard-1
  \$K/root:west -n web get deployments                        # synced to cluster-2, status back
  kubectl --kubeconfig $state/cluster-2/kubeconfig get deployments -A -l tmc.kcp.io/target

  tests/sharded.sh restart-shard $state/kcp                  # restart shard-1; the manager follows
  tail -f $state/manager.log

Press Ctrl-C to stop kcp, the clusters and the manager.
TXT
for ws in east west; do k "root:$ws" -n web get deployments; done
wait "${pids[0]}"
