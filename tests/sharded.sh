#!/usr/bin/env bash
# A two-shard kcp on loopback, in kcp's own sharded topology: the root shard, a cache server and
# the front-proxy come from kcp's sharded-test-server (it makes the PKI and the kubeconfigs);
# the second shard, `shard-1`, is started here with the same flags sharded-test-server gives its
# shards, so that it can be killed and restarted alone (under sharded-test-server, one child's
# exit takes the whole topology down).
#
#   tests/sharded.sh up DIR             # starts everything, waits until both shards serve
#   tests/sharded.sh restart-shard DIR  # SIGTERM to shard-1, then the same command again
#   tests/sharded.sh kill-shard DIR     # SIGKILL to shard-1 (start it with restart-shard)
#   tests/sharded.sh down DIR           # stops everything started in DIR
#
# The ports are kcp's fixed ones (front-proxy 6443, shards 6444 and 6445, etcd 2379-2382, cache
# 8010-8012): one topology per machine at a time; `up` refuses to start when one is taken.
# Clients use DIR/.kcp/admin.kubeconfig (the front-proxy, user kcp-admin). Logs: DIR/*.log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
log() { printf '>> %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || die "usage: $0 up|restart-shard|kill-shard|down DIR"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
PORTS=(6443 6444 6445 2379 2380 2381 2382 8010 8011 8012)

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# kill_group PIDFILE SIGNAL: signals the process group recorded in PIDFILE (each server runs in
# a session of its own, so its children go with it) and waits up to 30 s for it to exit.
kill_group() {
  local pidfile=$1 sig=$2 pid
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  kill "-$sig" -- "-$pid" 2>/dev/null || true
  # Exited members may stay zombies here (nothing reaps orphans in some containers): only
  # living ones count.
  for _ in $(seq 300); do
    ps -o stat= -g "$pid" 2>/dev/null | grep -qv '^Z' || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

wait_for() {
  local what=$1 timeout=$2 start=$SECONDS
  shift 2
  local rc
  while true; do
    rc=0
    "$@" >/dev/null 2>&1 || rc=$?
    ((rc == 0)) && break
    # 99: what is waited for cannot come any more (its process is gone).
    ((rc == 99)) && return 1
    if ((SECONDS - start >= timeout)); then
      for f in "$dir"/sharded-test-server.log "$dir"/kcp-0.log "$dir"/kcp-front-proxy.log "$dir"/shard-1.log; do
        [[ -f $f ]] && { log "last lines of $f:"; tail -n 15 "$f" >&2; }
      done
      die "$what not ready after ${timeout}s; see the logs in $dir"
    fi
    sleep 1
  done
  log "$what ready after $((SECONDS - start))s"
}

shard_ready() {
  curl -sf --cacert "$dir/.kcp/serving-ca.crt" --cert "$dir/.kcp-0/shard-client-cert.crt" \
    --key "$dir/.kcp-0/shard-client-cert.key" https://127.0.0.1:6445/readyz
}

# Both shards registered (the front-proxy routes to a shard once its Shard object exists).
shards_listed() {
  local out
  out=" $(kubectl --kubeconfig "$dir/.kcp/admin.kubeconfig" --context root get shards \
    -o 'jsonpath={.items[*].metadata.name}') "
  [[ $out == *" root "* && $out == *" shard-1 "* ]]
}

# shard-1, with the flags sharded-test-server's newShard gives shard n=1 (kcp v0.32.3,
# cmd/sharded-test-server/shard.go and cmd/test-server/kcp/shard.go). Its serving and client
# certificates are the root shard's (same hostnames, same CAs).
start_shard() {
  local s=$dir/.kcp-1 k=$dir/.kcp
  mkdir -p "$s"
  cp "$dir/.kcp-0/apiserver.crt" "$dir/.kcp-0/apiserver.key" "$dir/.kcp-0/shard-client-cert.crt" \
    "$dir/.kcp-0/shard-client-cert.key" "$s/"
  setsid "$bin/kcp" start \
    --shard-name=shard-1 --embedded-etcd-client-port=2381 --embedded-etcd-peer-port=2382 \
    --root-shard-kubeconfig-file="$dir/.kcp-0/admin.kubeconfig" --root-directory="$s" \
    --client-ca-file="$k/client-ca.crt" --requestheader-client-ca-file="$k/requestheader-ca.crt" \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --service-account-key-file="$k/service-account.crt" \
    --service-account-private-key-file="$k/service-account.key" \
    --service-account-signing-key-file="$k/service-account.key" \
    --shard-external-url=https://127.0.0.1:6443 \
    --tls-cert-file="$s/apiserver.crt" --tls-private-key-file="$s/apiserver.key" --secure-port=6445 \
    --logical-cluster-admin-kubeconfig="$k/logical-cluster-admin.kubeconfig" \
    --external-logical-cluster-admin-kubeconfig="$k/external-logical-cluster-admin.kubeconfig" \
    --shard-client-cert-file="$s/shard-client-cert.crt" --shard-client-key-file="$s/shard-client-cert.key" \
    --shard-virtual-workspace-ca-file="$k/serving-ca.crt" \
    --mount-proxy-client-cert-file="$k/mounts-proxy.crt" --mount-proxy-client-key-file="$k/mounts-proxy.key" \
    --cache-kubeconfig="$dir/.kcp-cache/cache.kubeconfig" \
    --bind-address=127.0.0.1 --embedded-etcd-wal-size-bytes=5000 \
    >>"$dir/shard-1.log" 2>&1 &
  echo $! >"$dir/shard-1.pid"
  wait_for "shard-1 (:6445)" 300 shard_ready
}

# Starts the root shard, the cache server and the front-proxy from scratch; fails when
# sharded-test-server exits before it writes ready-to-test.
start_topology() {
  rm -rf "$dir/.kcp" "$dir/.kcp-0" "$dir/.kcp-1" "$dir/.kcp-cache" "$dir/.kcp-front-proxy"
  log "starting the root shard, the cache server and the front-proxy (sharded-test-server) in $dir"
  # Its children inherit the environment: no fsync for their etcds (test data only).
  NO_GORUN=true KCP_ASSET_KCP=$bin/kcp KCP_ASSET_KCP_FRONT_PROXY=$bin/kcp-front-proxy \
    KCP_ASSET_CACHE_SERVER=$bin/cache-server UNSAFE_E2E_HACK_DISABLE_ETCD_FSYNC=true \
    setsid "$bin/sharded-test-server" --number-of-shards=1 --work-dir-path="$dir" --log-dir-path="$dir" \
    --quiet --shard-embedded-etcd-wal-size-bytes=5000 >"$dir/sharded-test-server.log" 2>&1 &
  echo $! >"$dir/topology.pid"
  wait_for "root shard, cache server and front-proxy" 300 topology_ready
}

# 0 once ready-to-test exists; 99 (stop waiting) when sharded-test-server is gone.
topology_ready() {
  [[ -f $dir/.kcp/ready-to-test ]] && return 0
  ps -o stat= -p "$(cat "$dir/topology.pid")" 2>/dev/null | grep -qv '^Z' || return 99
  return 1
}

case $cmd in
  up)
    bin=$("$here/servers.sh" kcp-sharded)
    for p in "${PORTS[@]}"; do
      if port_taken "$p"; then
        die "port $p is taken: another sharded kcp runs (tests/sharded.sh down DIR stops one started here)"
      fi
    done
    echo "$bin" >"$dir/bin"
    # sharded-test-server labels the Shards through the front-proxy as soon as the proxy answers
    # /readyz, which can be a moment before the proxy has loaded its client CA: the request is
    # then anonymous, refused ("User \"\" cannot patch ... shards/root"), and sharded-test-server
    # exits. Seen on a loaded machine (the full e2e suite); a fresh start is the remedy.
    for attempt in 1 2 3; do
      if start_topology; then break; fi
      ((attempt < 3)) || die "the topology did not start in 3 attempts; see the logs in $dir"
      log "sharded-test-server exited before it was ready (attempt $attempt):"
      grep -E 'forbidden|error|failed' "$dir/sharded-test-server.log" | grep -v '^CACHE W' | tail -n 5 >&2 || true
      kill_group "$dir/topology.pid" TERM
      mv "$dir/sharded-test-server.log" "$dir/sharded-test-server.attempt-$attempt.log"
    done
    log "starting shard-1"
    UNSAFE_E2E_HACK_DISABLE_ETCD_FSYNC=true start_shard
    wait_for "both shards behind the front-proxy" 120 shards_listed
    echo "$dir/.kcp/admin.kubeconfig"
    ;;
  restart-shard)
    bin=$(cat "$dir/bin")
    kill_group "$dir/shard-1.pid" TERM
    log "restarting shard-1"
    UNSAFE_E2E_HACK_DISABLE_ETCD_FSYNC=true start_shard
    ;;
  kill-shard)
    kill_group "$dir/shard-1.pid" KILL
    ;;
  down)
    kill_group "$dir/shard-1.pid" TERM
    kill_group "$dir/topology.pid" TERM
    ;;
  *) die "usage: $0 up|restart-shard|kill-shard|down DIR" ;;
esac
