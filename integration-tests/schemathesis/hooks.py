"""Switchyard's own checks for `schemathesis run` (SCHEMATHESIS_HOOKS=hooks),
beside schemathesis's: run by integration-tests/tests/openapi.rs against a
live control plane, with one worker (the config is compared before and after
each request, so no other request may run between).

- every 4xx answers `{"error": "<non-empty text>"}`;
- a refused request (4xx) changes neither the config nor its version.
"""

import json
import os
import urllib.request

import schemathesis

API = os.environ["SWITCHYARD_API"].rstrip("/")
WRITES = {"PUT", "POST", "PATCH", "DELETE"}
# The config each write request was sent over, by the id of its case.
_BEFORE = {}


def _config():
    with urllib.request.urlopen(API + "/api/v1/config", timeout=10) as answer:
        return json.load(answer)


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.method.upper() in WRITES:
        _BEFORE[id(case)] = _config()


@schemathesis.check
def error_body_on_4xx(ctx, response, case):
    """A 4xx says what was wrong: `{"error": "..."}`."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except Exception as e:  # noqa: BLE001 - any undecodable body is the failure
        raise AssertionError(f"{response.status_code} without a JSON body: {response.text[:200]!r} ({e})")
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        raise AssertionError(f'{response.status_code} whose body is not {{"error": "..."}}: {response.text[:200]!r}')
    return None


@schemathesis.check
def refused_write_changes_nothing(ctx, response, case):
    """A write answered with a 4xx leaves the config and its version as they were."""
    before = _BEFORE.pop(id(case), None)
    if before is None or not 400 <= response.status_code < 500:
        return None
    after = _config()
    if after != before:
        raise AssertionError(
            f"{case.method} {case.formatted_path} was refused with {response.status_code} "
            f"but the config changed: version {before.get('version')} -> {after.get('version')}, "
            f"hash {before.get('hash')} -> {after.get('hash')}"
        )
    return None
