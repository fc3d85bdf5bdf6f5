#!/usr/bin/env bash
# Runs every test: the workspace's unit and integration tests (real binaries,
# real backends, over sockets on 127.0.0.1), then, when a Docker engine
# answers, the docker-compose demo end to end (scripts/e2e-docker.sh).
#
#   scripts/test.sh            # everything
#   SKIP_DOCKER=1 scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# System packages the tests drive: a real etcd (the etcd store's tests),
# iproute2 (`ip netns` and veth pairs for etcd_partition.rs, which also needs
# root) and Debian's Chromium with its driver (the dashboard test). Installed here when
# missing and run as root; otherwise the tests that need them say what to install.
need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "test.sh: missing ${need_apt[*]} (apt-get install them as root); the tests that need them will fail" >&2
    fi
fi

# The OpenAPI test runs schemathesis from .venv (made here once, from PyPI), the
# dashboard test selenium (with Debian's chromium and chromium-driver).
scripts/python-venv.sh
cargo test --workspace --locked

if [ -n "${SKIP_DOCKER:-}" ]; then
    echo "test.sh: SKIP_DOCKER is set: not running the docker-compose end-to-end test"
elif docker info >/dev/null 2>&1; then
    scripts/e2e-docker.sh
else
    echo "test.sh: no Docker engine answers 'docker info': not running the docker-compose end-to-end test"
fi
