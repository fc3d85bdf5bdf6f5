#!/usr/bin/env bash
# Table swaps under load: keep-alive throughput of one replica while its table
# is swapped, against the same replica with no swaps, in alternating rounds.
#
#   bench/swaps.sh                      # 1,000 swaps/s applied inside the replica
#   MODE=control-plane bench/swaps.sh   # end to end: REST writes as fast as the control
#                                       # plane takes them, streamed to the replica
#
# The first mode measures what a swap costs the proxy (benches/swap_server.rs:
# the real proxy, with a thread that applies a new snapshot every millisecond);
# the second the whole path, with the control plane and the writers sharing the
# same CPUs. Prints the median throughput ratio, failed requests and swaps/s.
#
# Needs: nginx (the backends, as in ../shared/bench), wrk, curl, python3.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${DURATION:=5}" "${WRITERS:=4}" "${ROUNDS:=5}" "${MODE:=data-plane}"
: "${BACKEND1_PORT:=18081}" "${BACKEND2_PORT:=18082}"

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
if [ "$MODE" = control-plane ]; then
    start_control_plane 18130 18131 "$BENCH_TMP/bootstrap.json"
    start_data_plane swaps-dp 18132 18133 18131
    swaps_now() { curl -fsS http://127.0.0.1:18133/config | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])'; }
    start_swapping() {
        python3 "$ROOT/bench/writer.py" "http://127.0.0.1:18130" "$DURATION" "$WRITERS" 2>/dev/null &
        WRITER=$!
    }
    stop_swapping() { wait "$WRITER"; }
else
    server=$(cd "$ROOT" && cargo bench -p switchyard-data-plane --bench swap_server --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("executable") and m["target"]["name"] == "swap_server": print(m["executable"])')
    coproc SWAP { "$server" 127.0.0.1:18132 "http://127.0.0.1:$BACKEND1_PORT" "http://127.0.0.1:$BACKEND2_PORT"; }
    BENCH_PIDS+=("$SWAP_PID")
    wait_tcp() { local i; for ((i = 0; i < 100; i++)); do (exec 3<>/dev/tcp/127.0.0.1/18132) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
    wait_tcp
    swaps_now() { echo count >&"${SWAP[1]}"; local n; read -r n <&"${SWAP[0]}"; echo "$n"; }
    start_swapping() { echo on >&"${SWAP[1]}"; }
    stop_swapping() { echo off >&"${SWAP[1]}"; }
fi

load() { wrk -t1 -c64 -d"$DURATION" "http://127.0.0.1:18132/" >"$BENCH_TMP/wrk-$1.txt"; }
rps() { awk '/Requests\/sec/ {print $2}' "$BENCH_TMP/wrk-$1.txt"; }
failed() { awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",", ""); n+=$4+$6+$8+$10} END {print n+0}' "$BENCH_TMP/wrk-$1.txt"; }

# Rounds alternate a quiet run and a swapping run, so that the machine's
# drifting speed hits both alike; the ratio is the median of the rounds'.
results=()
for ((round = 1; round <= ROUNDS; round++)); do
    load quiet
    before=$(swaps_now)
    start_swapping
    load swapping
    stop_swapping
    after=$(swaps_now)
    results+=("$(rps quiet) $(rps swapping) $(failed swapping) $((after - before))")
    echo "$MODE round $round: quiet $(rps quiet) req/s, swapping $(rps swapping) req/s, failed $(failed swapping), swaps $((after - before)) in ${DURATION}s" >&2
done
printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [line.split() for line in sys.stdin if line.strip()]
ratios = [float(s) / float(q) for q, s, _, _ in rows]
failed = sum(int(f) for _, _, f, _ in rows)
swaps = statistics.median(int(n) for *_, n in rows) / float(sys.argv[1])
print(f"{sys.argv[2]}: keep-alive throughput while swapping / quiet: median {statistics.median(ratios):.3f} "
      f"over {len(rows)} rounds; failed requests while swapping: {failed}; swaps applied: {swaps:.0f}/s")
' "$DURATION" "$MODE"
