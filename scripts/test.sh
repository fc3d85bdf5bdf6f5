#!/usr/bin/env bash
# Runs every test: the workspace's unit and integration tests (real binaries,
# real backends, over sockets on 127.0.0.1), then, when a Docker engine
# answers, the docker-compose demo end to end (scripts/e2e-docker.sh).
#
#   scripts/test.sh            # everything
#   SKIP_DOCKER=1 scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

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
