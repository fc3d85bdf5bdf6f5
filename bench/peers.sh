#!/usr/bin/env bash
# One data-plane replica measured beside nginx, HAProxy and Apache by the
# shared harness (../shared/bench/peers.sh), in the same run.
#
#   bench/peers.sh                      # all scenarios: keepalive, close, h2
#   SCENARIOS=keepalive ROUNDS=4 bench/peers.sh
#
# Needs: nginx haproxy apache2 wrk nghttp2-client curl (Debian packages).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HARNESS=${PEERS_SCRIPT:-$ROOT/../shared/bench/peers.sh}
[ -f "$HARNESS" ] || { echo "cannot find the shared harness at $HARNESS (set PEERS_SCRIPT)" >&2; exit 1; }
: "${BACKEND1_PORT:=18081}" "${BACKEND2_PORT:=18082}" "${SY_PORT:=18100}"

build_release
cat >"$BENCH_TMP/bootstrap.json" <<JSON
{ "clusters": [ { "name": "bench", "members": [
    { "url": "http://127.0.0.1:$BACKEND1_PORT" }, { "url": "http://127.0.0.1:$BACKEND2_PORT" } ],
    "retry_window": "1s" } ],
  "routes": [ { "name": "all", "path_prefix": "/", "cluster": "bench" } ] }
JSON
start_control_plane 18110 18111 "$BENCH_TMP/bootstrap.json"
start_data_plane bench-dp "$SY_PORT" 18112 18111 ${SY_WORKERS:+--workers "$SY_WORKERS"}
export BACKEND1_PORT BACKEND2_PORT
TARGET_URL="http://127.0.0.1:$SY_PORT/" TARGET_NAME=switchyard TARGET_PID=$DP_PID bash "$HARNESS"
