#!/usr/bin/env bash
# `make run`: a local kcp with kcp-tmc installed and two physical clusters, ready to try with
# kubectl.
#
# Starts kcp (embedded etcd, loopback, free port, state under .tmc-run/) and two clusters
# (tests/cluster.sh), installs the APIs into root:tmc, creates the tenant workspace root:demo
# bound with config/samples/apibinding.yaml, starts `tmc manager`, registers both clusters as
# push-mode SyncTargets, applies config/samples/synctarget.yaml (a pull-mode target without a
# syncer), config/samples/placement.yaml (which places namespaces labelled app=web on both
# clusters) and config/samples/deployment.yaml in such a namespace, and prints what to try.
# Stops everything on Ctrl-C.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
state=${TMC_RUN_DIR:-$repo/.tmc-run}
tmc=$repo/target/debug/tmc
log() { printf '>> %s\n' "$*" >&2; }

[[ -n ${TMC_KCP_ONLY:-} || -x $tmc ]] || { log "build first: cargo build --bins"; exit 1; }
kcp_bin=$("$repo/tests/servers.sh" kcp)
rm -rf "$state"
mkdir -p "$state"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
etcd_client=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
etcd_peer=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

pids=()
cleanup() {
  log "stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for c in cluster-1 cluster-2; do "$repo/tests/cluster.sh" down "$state/$c" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

log "starting kcp on https://127.0.0.1:$port (log: $state/kcp.log)"
"$kcp_bin" start --root-directory="$state/.kcp" --bind-address=127.0.0.1 --secure-port="$port" \
  --embedded-etcd-client-port="$etcd_client" --embedded-etcd-peer-port="$etcd_peer" \
  >"$state/kcp.log" 2>&1 &
pids+=($!)

admin=$state/.kcp/admin.kubeconfig
for _ in $(seq 1 600); do
  [[ -f $admin ]] && kubectl --kubeconfig "$admin" get workspaces >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { log "kcp exited; see $state/kcp.log"; tail -20 "$state/kcp.log" >&2; exit 1; }
  sleep 0.5
done
kubectl --kubeconfig "$admin" get workspaces >/dev/null || { log "kcp did not become ready"; exit 1; }

if [[ -n ${TMC_KCP_ONLY:-} ]]; then
  cat <<TXT

kcp is running on https://127.0.0.1:$port (log: $state/kcp.log).

  export KUBECONFIG=$admin
  kubectl get workspaces

Press Ctrl-C to stop it.
TXT
  wait "${pids[0]}"
  exit 0
fi

log "starting two physical clusters (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
for c in cluster-1 cluster-2; do "$repo/tests/cluster.sh" up "$state/$c" 2 >/dev/null; done

log "installing kcp-tmc's APIExport into root:tmc"
"$tmc" install --kubeconfig "$admin" --workspace root:tmc --create-workspace

# A kubeconfig whose current context is the tenant workspace root:demo.
kc=$state/kubeconfig
cp "$admin" "$kc"
ca=$(kubectl --kubeconfig "$kc" config view --raw -o jsonpath='{.clusters[?(@.name=="root")].cluster.certificate-authority-data}')
kubectl --kubeconfig "$kc" config set-cluster demo --server="https://127.0.0.1:$port/clusters/root:demo" >/dev/null
kubectl --kubeconfig "$kc" config set clusters.demo.certificate-authority-data "$ca" >/dev/null
kubectl --kubeconfig "$kc" config set-context demo --cluster=demo --user=kcp-admin >/dev/null
kubectl --kubeconfig "$kc" config use-context demo >/dev/null

log "creating the tenant workspace root:demo and binding the export"
kubectl --kubeconfig "$admin" apply -f - >/dev/null <<'YAML'
apiVersion: tenancy.kcp.io/v1alpha1
kind: Workspace
metadata: {name: demo}
spec: {type: {name: universal, path: root}}
YAML
kubectl --kubeconfig "$admin" wait --for=jsonpath='{.status.phase}'=Ready workspace/demo --timeout=120s >/dev/null
kubectl --kubeconfig "$kc" apply -f "$repo/config/samples/apibinding.yaml"
for _ in $(seq 1 120); do kubectl --kubeconfig "$kc" get synctargets >/dev/null 2>&1 && break; sleep 0.5; done

log "starting tmc manager (log: $state/manager.log)"
# The clusters run on this machine: opt loopback in (a production manager never does).
"$tmc" manager --kubeconfig "$admin" --workspace root:tmc --cluster-address-allow 127.0.0.1/32 \
  --metrics-bind-address 127.0.0.1:8080 --health-bind-address 127.0.0.1:8081 >"$state/manager.log" 2>&1 &
pids+=($!)
kubectl --kubeconfig "$kc" apply -f "$repo/config/samples/synctarget.yaml"
kubectl --kubeconfig "$kc" wait --for=condition=Ready=false synctarget/east --timeout=60s >/dev/null || true

log "registering cluster-1 and cluster-2 as push-mode SyncTargets"
for c in cluster-1 cluster-2; do
  kubectl --kubeconfig "$kc" -n default create secret generic "$c-kubeconfig" \
    --from-file=kubeconfig="$state/$c/kubeconfig" --dry-run=client -o yaml | kubectl --kubeconfig "$kc" apply -f -
  kubectl --kubeconfig "$kc" apply -f - <<YAML
apiVersion: sync.kcp.io/v1alpha1
kind: SyncTarget
metadata: {name: $c, labels: {cluster: $c}}
spec:
  kubeconfigSecretRef: {namespace: default, name: $c-kubeconfig}
YAML
done
kubectl --kubeconfig "$kc" wait --for=condition=Ready synctarget/cluster-1 synctarget/cluster-2 --timeout=120s

log "placing namespaces labelled app=web on both clusters (config/samples/placement.yaml) and deploying a sample"
kubectl --kubeconfig "$kc" apply -f "$repo/config/samples/placement.yaml"
kubectl --kubeconfig "$kc" apply -f - <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: web
  labels: {app: web}
YAML
kubectl --kubeconfig "$kc" wait --for=jsonpath='{.status.phase}'=Bound placement/web --timeout=60s >/dev/null || true
kubectl --kubeconfig "$kc" -n web apply -f "$repo/config/samples/deployment.yaml"
kubectl --kubeconfig "$kc" -n web wait --for=jsonpath='{.status.availableReplicas}'=2 deployment/web --timeout=120s >/dev/null || true

cat <<TXT

kcp-tmc is running. In another terminal:

  export KUBECONFIG=$kc        # current context: workspace root:demo

  kubectl get synctargets                      # conditions written by the manager and syncers
  kubectl get placements                       # chosen targets, placed namespaces
  kubectl get namespace web --show-labels      # the assignment labels the Placement wrote
  kubectl -n web get deployments               # web 2/2: the 2 replicas divided, one per cluster, summed
  kubectl -n web get deployment web -o yaml    # per-cluster status in status.tmc.kcp.io/<key> annotations
  kubectl --kubeconfig $state/cluster-1/kubeconfig get deployments -A -l tmc.kcp.io/target
  kubectl get placement web -o jsonpath='{.status.overrides}'   # override cluster-2-canary: where it applies
  kubectl --kubeconfig $state/cluster-2/kubeconfig get deployments -A -l tmc.kcp.io/target -o yaml | grep tier
  kubectl get synctarget east -o yaml          # pull mode, no syncer: Ready=False, WaitingForSyncer
  kubectl explain synctarget.spec              # API docs from the Rust types
  $tmc placement preview -f $repo/config/samples/placement.yaml   # where it would go, and why

  # Do by hand what a syncer's heartbeat does, and watch Ready flip to True, then back to
  # False (HeartbeatStale) 40s later:
  kubectl patch synctarget east --subresource=status --type=merge \\
    -p "{\"status\":{\"lastSyncTime\":\"\$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}}"

  # Point it at a kubeconfig Secret that does not exist, and read the reason:
  kubectl patch synctarget east --type=merge -p '{"spec":{"kubeconfigSecretRef":{"namespace":"default","name":"east-kubeconfig"}}}'

  kubectl --context root get workspaces        # the kcp root workspace
  tail -f $state/manager.log

  curl -s http://127.0.0.1:8080/metrics | grep '^tmc_'   # the manager's metrics
  curl -s http://127.0.0.1:8081/readyz                   # readiness (and /healthz: liveness)

Press Ctrl-C to stop kcp, the clusters and the manager.
TXT
kubectl --kubeconfig "$kc" get synctargets
kubectl --kubeconfig "$kc" -n web get deployments
wait "${pids[0]}"
