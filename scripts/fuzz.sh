#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each; not part of CI.
#
#   scripts/fuzz.sh                    # every target, FUZZ_SECONDS each
#   scripts/fuzz.sh chunked            # only these targets
#   FUZZ_SECONDS=600 scripts/fuzz.sh   # longer
#
# Targets: response_head (h1::parse_response over any bytes and method), chunked (the chunked
# decoder, whole against split input), request_rewrite (the proxy's path rewrite) and
# accept_encoding (the client's Accept-Encoding read for compression) and
# apache_config (the import-apache parser and translation over any text). A crash
# leaves its input in fuzz/artifacts/<target>/; replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>` and turn it into a unit test.
#
# Environment:
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_JOBS      build jobs (default 2)
#   FUZZ_SANITIZER address (default) or none, passed to `cargo fuzz --sanitizer`
#   FUZZ_ARGS      more libFuzzer flags, e.g. "-max_len=40000" to reach the 16 KiB caps
#
# Installs cargo-fuzz if it is missing (`cargo install cargo-fuzz --locked`). libFuzzer needs
# nightly flags; on a stable toolchain they are unlocked with RUSTC_BOOTSTRAP=1.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
export CARGO_BUILD_JOBS="${FUZZ_JOBS:-2}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

failed=()
for target in "${targets[@]}"; do
    echo "fuzz.sh: ${target} for ${seconds}s" >&2
    mkdir -p "fuzz/corpus/${target}"
    if ! cargo fuzz run --sanitizer "${sanitizer}" "${target}" "fuzz/corpus/${target}" -- \
        -max_total_time="${seconds}" -timeout=10 -rss_limit_mb=2048 ${FUZZ_ARGS:-}; then
        failed+=("${target}")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]}" >&2
