#!/usr/bin/env bash
# A real physical Kubernetes cluster on loopback, for tests, benchmarks and `make run`:
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok (fake nodes whose pods
# become Ready, so Deployments reach availableReplicas without a kubelet).
#
#   tests/cluster.sh up DIR [NODES]   start one in DIR (state, logs, DIR/kubeconfig); default 2 nodes
#   tests/cluster.sh down DIR         stop it
#   tests/cluster.sh apiserver-kill DIR     kill -9 its kube-apiserver (etcd and the rest keep running)
#   tests/cluster.sh apiserver-start DIR    start it again on the same port and etcd
#   tests/cluster.sh etcd-delete DIR KEY    delete an etcd key behind the API server's back
#   tests/cluster.sh etcd-compact DIR       compact etcd to its current revision (resumed watches get 410)
#
# Ports are free loopback ports; authentication is a static token in group system:masters.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '>> %s\n' "$*" >&2; }
# A free loopback port below the kernel's ephemeral range: the chaos suite restarts servers on
# their ports, and a client's outgoing connection (whose local port comes from that range) once
# took a killed kube-apiserver's port before it came back.
free_port() {
  python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for port in ([random.randrange(10000, low) for _ in range(1000)] if low > 11000 else []) + [0]:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(s.getsockname()[1])
    break
PY
}

down() {
  local dir=$1
  [[ -f $dir/pids ]] || return 0
  # Reverse start order: kwok and controllers first, etcd last.
  tac "$dir/pids" | while read -r pid; do kill "$pid" 2>/dev/null || true; done
  sleep 0.5
  tac "$dir/pids" | while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$dir/pids"
}

start() { # start NAME CMD... : runs CMD in the background, logging to DIR/NAME.log
  local name=$1
  shift
  "$@" >"$dir/$name.log" 2>&1 &
  echo $! >>"$dir/pids"
}

wait_for() { # wait_for WHAT SECONDS CMD...
  local what=$1 secs=$2
  shift 2
  for _ in $(seq 1 $((secs * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "$what did not come up; logs in $dir"
  return 1
}

start_apiserver() { # the kube-apiserver of the cluster in $dir, on the ports in $dir/ports
  local kube pki=$dir/pki etcd_port api_port
  kube=$("$here/servers.sh" kube)
  # shellcheck disable=SC1091
  source "$dir/ports"
  start kube-apiserver "$kube/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --tls-cert-file="$pki/server.crt" --tls-private-key-file="$pki/server.key" --client-ca-file="$pki/ca.crt" \
    --token-auth-file="$pki/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" --service-cluster-ip-range=10.0.0.0/24 \
    --endpoint-reconciler-type=none --allow-privileged=true

  tail -n1 "$dir/pids" >"$dir/kube-apiserver.pid"
}

etcd_api() { # etcd_api DIR PATH JSON: one call to etcd's JSON gateway
  # shellcheck disable=SC1091
  source "$1/ports"
  curl -fsS -X POST "http://127.0.0.1:$etcd_port/v3/$2" -d "$3"
}

up() {
  dir=$1
  local nodes=${2:-2}
  mkdir -p "$dir/pki"
  dir=$(cd "$dir" && pwd)
  down "$dir"
  local etcd kube kwok
  etcd=$("$here/servers.sh" etcd)/etcd
  kube=$("$here/servers.sh" kube)
  local kwok_dir
  kwok_dir=$("$here/servers.sh" kwok)
  kwok=$kwok_dir/kwok

  local pki=$dir/pki
  if [[ ! -f $pki/ca.crt ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tmc-test-ca" \
      -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$pki/ext"
    openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3650 \
      -extfile "$pki/ext" -out "$pki/server.crt" 2>/dev/null
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
    echo "$(openssl rand -hex 16),admin,admin,system:masters" >"$pki/tokens.csv"
  fi
  local token
  token=$(cut -d, -f1 "$pki/tokens.csv")

  local etcd_port etcd_peer api_port
  etcd_port=$(free_port) etcd_peer=$(free_port) api_port=$(free_port)
  # TMC_ETCD_ARGS: extra etcd flags, e.g. a small --max-request-bytes for a cluster that must
  # refuse objects kcp accepts.
  local etcd_extra=()
  read -r -a etcd_extra <<<"${TMC_ETCD_ARGS:-}"
  start etcd "$etcd" --name=node0 --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="node0=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --log-level=warn "${etcd_extra[@]}"

  printf 'etcd_port=%s\napi_port=%s\n' "$etcd_port" "$api_port" >"$dir/ports"
  start_apiserver
  local kc=$dir/kubeconfig
  cat >"$kc" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: cluster
  context: {cluster: cluster, user: admin}
current-context: cluster
EOF
  wait_for kube-apiserver 120 kubectl --kubeconfig "$kc" get --raw /readyz

  start kube-controller-manager "$kube/kube-controller-manager" --kubeconfig="$kc" --leader-elect=false \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --bind-address=127.0.0.1 --secure-port="$(free_port)" --controllers='*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle'
  start kube-scheduler "$kube/kube-scheduler" --kubeconfig="$kc" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$(free_port)"
  start kwok "$kwok" --kubeconfig="$kc" --config="$kwok_dir/stages.yaml" --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --server-address="127.0.0.1:$(free_port)"

  for i in $(seq 1 "$nodes"); do
    kubectl --kubeconfig "$kc" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i}
EOF
  done
  # Node admission taints new nodes not-ready; the node lifecycle controller, disabled here (kwok
  # nodes send no heartbeats), would lift it. kwok marks them Ready, then we lift it ourselves.
  wait_for "kwok nodes Ready" 60 kubectl --kubeconfig "$kc" wait --for=condition=Ready nodes --all --timeout=1s
  kubectl --kubeconfig "$kc" taint nodes --all node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  wait_for "default service account" 60 kubectl --kubeconfig "$kc" -n default get serviceaccount default
  log "cluster up: https://127.0.0.1:$api_port (kubeconfig $kc, logs in $dir)"
  echo "$kc"
}

case "${1:-}" in
  up) up "${2:?DIR}" "${3:-2}" ;;
  down) down "${2:?DIR}" ;;
  apiserver-kill)
    pid=$(cat "${2:?DIR}/kube-apiserver.pid")
    kill -9 "$pid"
    # SIGKILL is asynchronous: until the process has exited (gone, or a zombie nobody reaped yet)
    # it still holds its port, and an apiserver-start right after would fail to bind.
    for _ in $(seq 100); do
      state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
      [[ -z $state || $state == Z ]] && break
      sleep 0.1
    done
    ;;
  apiserver-start)
    dir=$(cd "${2:?DIR}" && pwd)
    start_apiserver
    wait_for kube-apiserver 120 kubectl --kubeconfig "$dir/kubeconfig" get --raw /readyz
    ;;
  etcd-delete)
    key=$(printf '%s' "${3:?KEY}" | base64 -w0)
    etcd_api "$2" kv/deleterange "{\"key\":\"$key\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("deleted", "0"))'
    ;;
  etcd-compact)
    rev=$(etcd_api "$2" kv/range '{"key":"AA=="}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
    etcd_api "$2" kv/compaction "{\"revision\":\"$rev\",\"physical\":true}" >/dev/null
    echo "$rev"
    ;;
  *) echo "usage: $0 up DIR [NODES] | down DIR | apiserver-kill DIR | apiserver-start DIR | etcd-delete DIR KEY | etcd-compact DIR" >&2; exit 2 ;;
esac
