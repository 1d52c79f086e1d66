#!/usr/bin/env bash
# CPU profiles of kcp during a bench run's largest burst: the floor's and kcp-tmc's.
#
#   benches/tools/kcp-cpu-profile.sh BENCH_LOG OUT_DIR [FLOOR_SECONDS] [TMC_SECONDS]
#
# Start it beside `cargo bench --bench sync` (its stderr in BENCH_LOG). It waits for the first
# progress line of the floor's 10,000-object burst and of kcp-tmc's, then fetches kcp's
# /debug/pprof/profile for the given seconds (15 and 30 by default) as the shard admin of the
# bench's kcp (the `shard-base` context of its admin.kubeconfig; kcp-admin may not read pprof).
# Read the results with `go tool pprof`, or by part with kcp-cpu-by-part.py.
set -euo pipefail
log=$1 out=$2 floor_s=${3:-15} tmc_s=${4:-30}
mkdir -p "$out"
kcp_arg() { pgrep -a kcp | grep -o -- "--$1=[^ ]*" | head -n1 | cut -d= -f2; }
profile() {
	local seconds=$1 file=$2
	kubectl --kubeconfig="$(kcp_arg root-directory)/admin.kubeconfig" --context=shard-base \
		--server="https://127.0.0.1:$(kcp_arg secure-port)" \
		get --raw "/debug/pprof/profile?seconds=$seconds" >"$file"
	echo "kcp-cpu-profile: $file ($seconds s) at $(date -u +%T)"
}
until grep -q "fburst0x[0-9]: .*/10000 arrived" "$log"; do sleep 0.5; done
profile "$floor_s" "$out/floor.pprof"
until grep -q "^bench:   burst0x[0-9]: .*/10000 arrived" "$log"; do sleep 0.5; done
profile "$tmc_s" "$out/tmc.pprof"
