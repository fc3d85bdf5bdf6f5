#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind on one
# worker: deterministic, so two binaries can be compared on a busy machine.
#
#   bench/callgrind.sh ka|h2|close [REQUESTS]    # release binaries of this checkout
#   BIN=/path/to/dir bench/callgrind.sh h2        # or another build's binaries
#
# Needs: valgrind, nginx (the two backends of ../shared/bench), h2load (nghttp2-client), ab (apache2-utils).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=${1:?ka, h2 or close}
N=${2:-20000}
BIN=${BIN:-$ROOT/target/release}
[ -n "${BIN_BUILT:-}" ] || [ "$BIN" != "$ROOT/target/release" ] || cargo build --release --locked -p switchyard-data-plane -p switchyard-control-plane
TMP=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
sed -e "s|@TMP@|$TMP|g; s|@B1@|19001|; s|@B2@|19002|" "$ROOT/../shared/bench/backends.nginx.conf" >"$TMP/backends.conf"
mkdir -p "$TMP/backends.body"
nginx -c "$TMP/backends.conf" -p "$TMP" & pids+=($!)
cat >"$TMP/boot.json" <<JSON
{"clusters":[{"name":"app","members":[{"url":"http://127.0.0.1:19001"},{"url":"http://127.0.0.1:19002"}]}],
 "routes":[{"name":"all","path_prefix":"/","cluster":"app"}]}
JSON
"$BIN/switchyard-control-plane" --api-listen 127.0.0.1:19080 --grpc-listen 127.0.0.1:19081 \
    --state-file "$TMP/state.json" --config "$TMP/boot.json" >"$TMP/cp.log" 2>&1 & pids+=($!)
valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$BIN/switchyard-data-plane" \
    --control-plane http://127.0.0.1:19081 --listen 127.0.0.1:19100 --admin-listen 127.0.0.1:19101 \
    --workers 1 >"$TMP/dp.log" 2>&1 & DP=$!; pids+=($DP)
for _ in $(seq 1 300); do curl -sf -o /dev/null http://127.0.0.1:19100/ && break; sleep 0.2; done
case $MODE in
    ka) warm=(h2load --h1 -n 2000 -c 16); load=(h2load --h1 -n "$N" -c 16) ;;
    h2) warm=(h2load -n 2000 -c 16 -m 2); load=(h2load -n "$N" -c 16 -m 2) ;;
    close) warm=(ab -q -n 500 -c 16); load=(ab -q -n "$N" -c 16) ;;
    *) echo "unknown mode $MODE" >&2; exit 2 ;;
esac
"${warm[@]}" http://127.0.0.1:19100/ >/dev/null
callgrind_control -z "$DP" >/dev/null
timeout 600 "${load[@]}" http://127.0.0.1:19100/ >"$TMP/load.txt"
callgrind_control -d "$DP" >/dev/null
out=$(ls -t "$TMP"/cg.out.* | head -1)
total=$(grep -m1 '^summary:\|^totals:' "$out" | awk '{print $2}')
echo "$MODE: $N requests, $total instructions, $((total / N)) per request"
