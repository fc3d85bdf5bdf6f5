#!/usr/bin/env bash
# Makes the Python venv the tests use (.venv in the repo) if it is missing,
# with schemathesis pinned: the OpenAPI test (integration-tests/tests/openapi.rs)
# runs `.venv/bin/schemathesis run` against a live control plane.
#
#   scripts/python-venv.sh           # creates or completes .venv
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCHEMATHESIS_VERSION=4.32.5
python=${PYTHON:-python3}

if [ -x .venv/bin/schemathesis ] \
    && .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    echo "python-venv: creating .venv with $("$python" --version)"
    "$python" -m venv .venv
fi
echo "python-venv: installing schemathesis==$SCHEMATHESIS_VERSION into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
