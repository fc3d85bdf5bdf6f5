#!/usr/bin/env bash
# Makes the Python venv the tests use (.venv in the repo) if it is missing,
# with its packages pinned: schemathesis, which the OpenAPI test
# (integration-tests/tests/openapi.rs) runs as `.venv/bin/schemathesis run`
# against a live control plane, and selenium, with which the dashboard test
# (integration-tests/tests/dashboard.rs) drives Debian's chromium through
# /usr/bin/chromedriver (apt: chromium chromium-driver).
#
#   scripts/python-venv.sh           # creates or completes .venv
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCHEMATHESIS_VERSION=4.32.5
SELENIUM_VERSION=4.50.0
python=${PYTHON:-python3}

pinned() {
    .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null
}

if [ -x .venv/bin/schemathesis ] && pinned schemathesis "$SCHEMATHESIS_VERSION" \
    && pinned selenium "$SELENIUM_VERSION"; then
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    echo "python-venv: creating .venv with $("$python" --version)"
    "$python" -m venv .venv
fi
echo "python-venv: installing schemathesis==$SCHEMATHESIS_VERSION and selenium==$SELENIUM_VERSION into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "selenium==$SELENIUM_VERSION"
