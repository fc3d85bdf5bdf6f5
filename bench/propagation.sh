#!/usr/bin/env bash
# Time from a REST write to every replica acknowledging it: starts a control
# plane and REPLICAS data planes (release builds), makes WRITES writes with
# `?wait=10s` (the answer comes once every replica ACKed the new version), and
# prints p50/p99/max of the write's round trip.
#
#   bench/propagation.sh                   # 2 replicas, 100 writes
#   REPLICAS=3 WRITES=200 bench/propagation.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${REPLICAS:=2}" "${WRITES:=100}"

build_release
cat >"$BENCH_TMP/bootstrap.json" <<JSON
{ "clusters": [ { "name": "web", "members": [ { "url": "http://127.0.0.1:18081" } ] } ],
  "routes": [ { "name": "all", "path_prefix": "/", "cluster": "web" } ] }
JSON
start_control_plane 18120 18121 "$BENCH_TMP/bootstrap.json"
for ((i = 0; i < REPLICAS; i++)); do
    start_data_plane "dp-$i" $((19000 + i)) $((20000 + i)) 18121 --workers 1
done
python3 "$ROOT/bench/propagation.py" "http://127.0.0.1:18120" "$WRITES" "$REPLICAS"
