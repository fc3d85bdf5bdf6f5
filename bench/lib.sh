# Helpers shared by the bench scripts: start the release binaries on 127.0.0.1,
# remember their PIDs, stop exactly those on exit.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# BIN=DIR uses the binaries in DIR as they are (no build), e.g. target/debug.
BIN="${BIN:-$ROOT/target/release}"
BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-bench.XXXXXX")
BENCH_PIDS=()

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${BENCH_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "${KEEP_TMP:-}" ]; then echo "logs kept in $BENCH_TMP" >&2; else rm -rf "$BENCH_TMP"; fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

build_release() {
    if [ "$BIN" = "$ROOT/target/release" ]; then
        (cd "$ROOT" && cargo build --release --bins --quiet)
    fi
}

# wait_http URL [seconds]: poll until URL answers 200.
wait_http() {
    local url=$1 deadline=$((SECONDS + ${2:-30}))
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for $url" >&2; return 1; fi
        sleep 0.1
    done
}

# start_control_plane API_PORT GRPC_PORT BOOTSTRAP_JSON
start_control_plane() {
    "$BIN/switchyard-control-plane" --api-listen "127.0.0.1:$1" --grpc-listen "127.0.0.1:$2" \
        --state-file "$BENCH_TMP/state.json" --config "$3" >"$BENCH_TMP/control-plane.log" 2>&1 &
    BENCH_PIDS+=("$!")
    wait_http "http://127.0.0.1:$1/healthz"
}

# start_data_plane NAME PORT ADMIN_PORT GRPC_PORT [extra flags...]; sets DP_PID
start_data_plane() {
    local name=$1 port=$2 admin=$3 grpc=$4
    shift 4
    "$BIN/switchyard-data-plane" --control-plane "http://127.0.0.1:$grpc" --node-id "$name" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" "$@" >"$BENCH_TMP/$name.log" 2>&1 &
    DP_PID=$!
    BENCH_PIDS+=("$DP_PID")
    wait_http "http://127.0.0.1:$admin/readyz"
}
