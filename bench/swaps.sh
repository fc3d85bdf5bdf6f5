#!/usr/bin/env bash
# Table swaps under load: keep-alive throughput of one replica with no config
# changes, then while the control plane is sent writes as fast as it takes them
# (every write is a new snapshot the replica compiles and swaps in). Prints both
# req/s, their ratio, the failed requests and the swaps per second the replica made.
#
#   bench/swaps.sh                 # DURATION=10 WRITERS=4
#
# Needs: nginx (the backends, as in ../shared/bench), wrk, curl, python3.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${DURATION:=10}" "${WRITERS:=4}" "${BACKEND1_PORT:=18081}" "${BACKEND2_PORT:=18082}"

build_release
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
sed -e "s|@TMP@|$BENCH_TMP|g" -e "s|@B1@|$BACKEND1_PORT|g" -e "s|@B2@|$BACKEND2_PORT|g" \
    "$SHARED_BENCH/backends.nginx.conf" >"$BENCH_TMP/backends.conf"
nginx -c "$BENCH_TMP/backends.conf" -p "$BENCH_TMP" >"$BENCH_TMP/backends.log" 2>&1 &
BENCH_PIDS+=("$!")
wait_http "http://127.0.0.1:$BACKEND1_PORT/"

cat >"$BENCH_TMP/bootstrap.json" <<JSON
{ "clusters": [ { "name": "bench", "members": [
    { "url": "http://127.0.0.1:$BACKEND1_PORT" }, { "url": "http://127.0.0.1:$BACKEND2_PORT" } ] } ],
  "routes": [ { "name": "all", "path_prefix": "/", "cluster": "bench" } ] }
JSON
start_control_plane 18130 18131 "$BENCH_TMP/bootstrap.json"
start_data_plane swaps-dp 18132 18133 18131

load() { wrk -t1 -c64 -d"$DURATION" "http://127.0.0.1:18132/" | tee "$BENCH_TMP/wrk-$1.txt" >&2; }
rps() { awk '/Requests\/sec/ {print $2}' "$BENCH_TMP/wrk-$1.txt"; }
failed() { awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",", ""); n+=$4+$6+$8+$10} END {print n+0}' "$BENCH_TMP/wrk-$1.txt"; }
version() { curl -fsS http://127.0.0.1:18133/config | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])'; }

load quiet
before=$(version)
python3 "$ROOT/bench/writer.py" "http://127.0.0.1:18130" "$DURATION" "$WRITERS" &
writer=$!
load swapping
wait "$writer"
after=$(version)
python3 - "$(rps quiet)" "$(rps swapping)" "$(failed swapping)" "$before" "$after" "$DURATION" <<'PY'
import sys
quiet, swapping, failed, before, after, duration = sys.argv[1:]
print(f"keep-alive req/s: quiet {float(quiet):.0f}, while swapping {float(swapping):.0f} "
      f"(ratio {float(swapping) / float(quiet):.3f}); failed requests while swapping: {failed}; "
      f"swaps applied: {int(after) - int(before)} in {duration} s "
      f"({(int(after) - int(before)) / float(duration):.0f}/s)")
PY
