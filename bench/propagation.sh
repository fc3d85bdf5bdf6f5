#!/usr/bin/env bash
# Time from a REST write to every replica acknowledging it: starts a control
# plane and REPLICAS data planes (release builds), makes WRITES writes with
# `?wait=10s` (the answer comes once every replica ACKed the new version), and
# prints p50/p99/max of the write's round trip.
#
#   bench/propagation.sh                   # 2 replicas, 100 writes
#   REPLICAS=3 WRITES=200 bench/propagation.sh
#   ROUTES=1000 REPLICAS=3 bench/propagation.sh   # snapshots of ~100 KB
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${REPLICAS:=2}" "${WRITES:=100}" "${ROUTES:=1}"

build_release
python3 - "$ROUTES" >"$BENCH_TMP/bootstrap.json" <<'PY'
import json, sys
routes = [{"name": "all", "path_prefix": "/", "cluster": "web"}]
routes += [{"name": f"r{i}", "path_prefix": f"/r{i}/", "cluster": "web"} for i in range(1, int(sys.argv[1]))]
print(json.dumps({"clusters": [{"name": "web", "members": [{"url": "http://127.0.0.1:18081"}]}], "routes": routes}))
PY
start_control_plane 18120 18121 "$BENCH_TMP/bootstrap.json"
for ((i = 0; i < REPLICAS; i++)); do
    start_data_plane "dp-$i" $((19000 + i)) $((20000 + i)) 18121 --workers 1
done
python3 "$ROOT/bench/propagation.py" "http://127.0.0.1:18120" "$WRITES" "$REPLICAS"
