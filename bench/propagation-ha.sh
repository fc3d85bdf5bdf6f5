#!/usr/bin/env bash
# Write -> every replica ACKed, with the state file and with etcd, in the same
# run: first one control plane on its state file with 3 replicas; then a
# three-member etcd (Debian's etcd-server), two control-plane nodes on it and
# 3 replicas (two on node 1, one on node 2). The writes go to node 1 with
# `?wait=10s`, which also waits for the replica on node 2. Prints p50/p99/max
# for each.
#
#   bench/propagation-ha.sh                 # 100 writes each
#   WRITES=300 bench/propagation-ha.sh
#   BENCH_BIN=target/debug bench/propagation-ha.sh   # without a release build
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${WRITES:=100}"
REPLICAS=3
command -v etcd >/dev/null || { echo "etcd is not installed (apt-get install etcd-server)" >&2; exit 1; }
if [ -n "${BENCH_BIN:-}" ]; then BIN=$(cd "$BENCH_BIN" && pwd); else build_release; fi

cat >"$BENCH_TMP/bootstrap.json" <<JSON
{ "clusters": [ { "name": "web", "members": [ { "url": "http://127.0.0.1:18081" } ] } ],
  "routes": [ { "name": "all", "path_prefix": "/", "cluster": "web" } ] }
JSON

# node NAME API_PORT GRPC_PORT [extra flags...]
node() {
    local name=$1 api=$2 grpc=$3
    shift 3
    "$BIN/switchyard-control-plane" --api-listen "127.0.0.1:$api" --grpc-listen "127.0.0.1:$grpc" \
        --state-file "$BENCH_TMP/$name-state.json" --config "$BENCH_TMP/bootstrap.json" "$@" \
        >"$BENCH_TMP/$name.log" 2>&1 &
    BENCH_PIDS+=("$!")
    wait_http "http://127.0.0.1:$api/healthz"
}

# replica NAME INDEX CONTROL_PLANES
replica() {
    "$BIN/switchyard-data-plane" --control-plane "$3" --node-id "$1" --workers 1 \
        --listen "127.0.0.1:$((19000 + $2))" --admin-listen "127.0.0.1:$((20000 + $2))" \
        >"$BENCH_TMP/$1.log" 2>&1 &
    BENCH_PIDS+=("$!")
    wait_http "http://127.0.0.1:$((20000 + $2))/readyz"
}

# The state file.
node file 18120 18121
for i in 0 1 2; do replica "file-$i" "$i" http://127.0.0.1:18121; done
echo -n "file store, 1 node:           "
python3 "$ROOT/bench/propagation.py" "http://127.0.0.1:18120" "$WRITES" "$REPLICAS"

# etcd: three members, two nodes.
cluster=""
for i in 0 1 2; do cluster+="${cluster:+,}e$i=http://127.0.0.1:$((23800 + i))"; done
for i in 0 1 2; do
    etcd --name "e$i" --data-dir "$BENCH_TMP/e$i.etcd" \
        --listen-client-urls "http://127.0.0.1:$((23790 + i))" \
        --advertise-client-urls "http://127.0.0.1:$((23790 + i))" \
        --listen-peer-urls "http://127.0.0.1:$((23800 + i))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((23800 + i))" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        >"$BENCH_TMP/e$i.log" 2>&1 &
    BENCH_PIDS+=("$!")
done
for i in 0 1 2; do wait_http "http://127.0.0.1:$((23790 + i))/health"; done
store="etcd://127.0.0.1:23790,127.0.0.1:23791,127.0.0.1:23792"
node etcd-1 18130 18131 --store "$store"
node etcd-2 18140 18141 --store "$store"
replica etcd-0 3 http://127.0.0.1:18131,http://127.0.0.1:18141
replica etcd-1 4 http://127.0.0.1:18131,http://127.0.0.1:18141
replica etcd-2 5 http://127.0.0.1:18141,http://127.0.0.1:18131
echo -n "etcd (3 members), 2 nodes:    "
python3 "$ROOT/bench/propagation.py" "http://127.0.0.1:18130" "$WRITES" "$REPLICAS"
