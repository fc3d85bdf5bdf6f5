#!/usr/bin/env bash
# End-to-end test of the docker-compose demo: the real images, the real compose file.
#
#   scripts/e2e-docker.sh
#
# Builds the images with scripts/offline-images.sh (no registry needed), starts the stack under a
# project name of its own on free host ports, and checks what a user of the README's Docker
# Compose walk-through sees:
#   - Hello world! / Howdy world! alternate strictly through every replica (waiting only until a
#     replica answers, then a fresh sample of 8 requests);
#   - backend3 added through the API (?wait=5s) answers "Hi world!" through every replica at once
#     (6 requests right after the ACKed write, no waiting);
#   - once removed, it is never seen again (12 requests right after the ACKed delete);
#   - with one replica stopped and then the control plane stopped, the others keep serving: the
#     outage is sampled every 0.2 s over a fixed 3 s window, every sample must be good;
#   - the restarted control plane keeps its version and every running replica is `synced` at it,
#     the stopped replica too once started again.
# Whatever happens, a trap removes the containers, networks and volumes the run made.
# Prints one line per check and ends with "N passed, M failed"; exits non-zero on any failure.
#
# Environment:
#   E2E_IMAGES=offline|compose|none  how to get the images: scripts/offline-images.sh (default),
#                                    `compose build` (needs a registry), or use existing ones
#   E2E_TIMEOUT=60                   seconds allowed to each wait
#   E2E_KEEP=1                       leave the stack running at the end (prints how to remove it)
#   E2E_PROJECT=name                 compose project name (default switchyard-e2e-<pid>)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMPOSE_FILE=$ROOT/docker-compose.yml
TIMEOUT=${E2E_TIMEOUT:-60}
PROJECT=${E2E_PROJECT:-switchyard-e2e-$$}
REPLICAS=(data-plane-1 data-plane-2 data-plane-3)

passed=0
failed=0
stack_started=0

say() { printf 'e2e: %s\n' "$*"; }
pass() {
    passed=$((passed + 1))
    printf 'PASS  %s\n' "$*"
}
fail() {
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$*"
}
summary() { printf '%d passed, %d failed\n' "$passed" "$failed"; }
# A problem that makes the remaining checks meaningless: count it, stop (the trap cleans up).
abort() {
    fail "$*"
    exit 1
}

# apt_install PACKAGE: install a missing Debian package when we can (root with apt-get, as on CI).
apt_updated=0
apt_install() {
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || return 1
    say "installing $1 with apt-get"
    if ((!apt_updated)); then
        apt-get update -qq >/dev/null || return 1
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

command -v docker >/dev/null 2>&1 || abort "setup: docker is not installed"
docker info >/dev/null 2>&1 || abort "setup: cannot talk to the docker daemon"
for tool in curl python3; do
    command -v "$tool" >/dev/null 2>&1 || apt_install "$tool" || abort "setup: $tool is not installed"
done
# scripts/compose.sh, as the README uses it: v2 or v1, and a --wait that works on both.
if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 ||
    apt_install docker-compose; then
    COMPOSE=("$ROOT/scripts/compose.sh")
else
    abort "setup: neither 'docker compose' nor 'docker-compose' is available"
fi
compose() { "${COMPOSE[@]}" --project-name "$PROJECT" --file "$COMPOSE_FILE" "$@"; }

cleanup() {
    local status=$?
    set +e
    if ((stack_started)); then
        if ((failed > 0 || status != 0)); then
            say "state at failure:"
            compose --profile extra ps
            compose --profile extra logs --no-color --tail=60
        fi
        if [[ ${E2E_KEEP:-0} == 1 ]]; then
            say "E2E_KEEP=1: stack left running; remove it with:"
            say "  ${COMPOSE[*]} -p $PROJECT -f $COMPOSE_FILE --profile extra down -v --remove-orphans"
        else
            say "tearing down project $PROJECT (containers, networks, volumes)"
            compose --profile extra down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 ||
                say "warning: compose down failed"
        fi
    fi
    if ((status != 0 && failed == 0)); then
        failed=1
        case $status in
            130 | 143) printf 'FAIL  interrupted (exit status %d)\n' "$status" ;;
            *) printf 'FAIL  unexpected error (exit status %d)\n' "$status" ;;
        esac
    fi
    summary
    if ((failed > 0)); then exit 1; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers ----------------------------------------------------------------------------------

# Seven free TCP ports on 127.0.0.1, so the run never collides with a demo already running.
read -r API_PORT P1 P2 P3 A1 A2 A3 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
')
export SWITCHYARD_BIND=127.0.0.1 SWITCHYARD_API_PORT=$API_PORT
export SWITCHYARD_PORT_1=$P1 SWITCHYARD_PORT_2=$P2 SWITCHYARD_PORT_3=$P3
export SWITCHYARD_ADMIN_PORT_1=$A1 SWITCHYARD_ADMIN_PORT_2=$A2 SWITCHYARD_ADMIN_PORT_3=$A3
API=http://127.0.0.1:$API_PORT
declare -A PORT=([data-plane-1]=$P1 [data-plane-2]=$P2 [data-plane-3]=$P3)
declare -A ADMIN=([data-plane-1]=$A1 [data-plane-2]=$A2 [data-plane-3]=$A3)

# body URL: the response body, or nothing (and status 1) if the request failed.
body() { curl -sS --fail --max-time 5 "$1" 2>/dev/null; }
# code URL: the HTTP status ("000" if no answer).
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" 2>/dev/null || true; }

# json EXPR: evaluates a Python expression on the JSON document on stdin (bound to `d`).
json() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

# eventually DESCRIPTION COMMAND...: run COMMAND every 0.5 s until it succeeds or TIMEOUT passes.
# For waiting only (a container starting, a replica coming up): what must hold is then checked on
# a fresh sample, or with `consistently`.
eventually() {
    local what=$1
    shift
    local deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        if "$@"; then return 0; fi
        sleep 0.5
    done
    say "timed out after ${TIMEOUT}s waiting for: $what"
    return 1
}

# now_ms: milliseconds on the wall clock.
now_ms() {
    if [[ -n ${EPOCHREALTIME:-} ]]; then
        local us=${EPOCHREALTIME/[.,]/}
        printf '%s\n' $((10#$us / 1000))
    else
        date +%s%3N
    fi
}

# consistently DESCRIPTION WINDOW COMMAND...: the opposite of eventually: a state that must hold
# all along, sampled, not waited for. Runs COMMAND every 0.2 s over a fixed window of WINDOW
# seconds (at least once) and fails at the first run that fails. Sets RUNS to the runs made.
RUNS=0
consistently() {
    local what=$1 window=$2
    shift 2
    local start end
    start=$(now_ms)
    end=$((start + window * 1000))
    RUNS=0
    while true; do
        RUNS=$((RUNS + 1))
        if ! "$@"; then
            say "not consistently: $what (sample $RUNS, $(($(now_ms) - start)) ms into the ${window}s window)"
            return 1
        fi
        (($(now_ms) < end)) || return 0
        sleep 0.2
    done
}

# sample REPLICA N: N bodies through the replica, one a line ("<error>" for a failed request).
sample() {
    local port=${PORT[$1]} i
    for ((i = 0; i < $2; i++)); do
        body "http://127.0.0.1:$port/" || printf '<error>'
        printf '\n'
    done
}

# shown SAMPLE: a sample on one line, for a check's message.
shown() { paste -sd '|' <<<"$1"; }

# answers REPLICA: one request through REPLICA is answered by Hello or Howdy: the replica is up
# and routes to mycluster. (A condition to wait for; alternation is checked on a fresh sample.)
answers() {
    local out
    out=$(body "http://127.0.0.1:${PORT[$1]}/") || return 1
    [[ $out == 'Hello world!' || $out == 'Howdy world!' ]]
}

# strict_alternation SAMPLE: every line of SAMPLE is Hello world! or Howdy world!, no two
# consecutive lines are the same, and both are there (round robin over two members, weights 1:1).
strict_alternation() {
    local last="" line hello=0 howdy=0
    while IFS= read -r line; do
        case $line in
            'Hello world!') hello=1 ;;
            'Howdy world!') howdy=1 ;;
            *) return 1 ;;
        esac
        [[ $line == "$last" ]] && return 1
        last=$line
    done <<<"$1"
    ((hello && howdy))
}

# round_robin_of_three SAMPLE: every line is Hello, Howdy or Hi world!, and all three are there.
round_robin_of_three() {
    ! grep -qvxE 'Hello world!|Howdy world!|Hi world!' <<<"$1" &&
        grep -qxF 'Hello world!' <<<"$1" &&
        grep -qxF 'Howdy world!' <<<"$1" &&
        grep -qxF 'Hi world!' <<<"$1"
}

# only_hello_howdy SAMPLE: every line is Hello or Howdy (no Hi world!, no error).
only_hello_howdy() { ! grep -qvxE 'Hello world!|Howdy world!' <<<"$1"; }

# check_alternation REPLICA LABEL: a fresh sample of ALTERNATION_SAMPLE requests through REPLICA
# must alternate strictly; one PASS/FAIL line.
ALTERNATION_SAMPLE=8
check_alternation() {
    local seen
    seen=$(sample "$1" "$ALTERNATION_SAMPLE")
    if strict_alternation "$seen"; then
        pass "$2: $1 alternates Hello world! / Howdy world! strictly ($ALTERNATION_SAMPLE requests: $(shown "$seen"))"
    else
        fail "$2: $1 does not alternate Hello/Howdy strictly ($ALTERNATION_SAMPLE requests: $(shown "$seen"))"
    fi
}

ready() { [[ $(code "http://127.0.0.1:${ADMIN[$1]}/readyz") == 200 ]]; }
api_healthy() { [[ $(code "$API/healthz") == 200 ]]; }
config_version() { body "$API/api/v1/config" | json 'd["version"]'; }

# synced_at VERSION REPLICA...: /api/v1/dataplanes shows each REPLICA synced at VERSION.
synced_at() {
    local version=$1
    shift
    body "$API/api/v1/dataplanes" | python3 -c '
import json, sys
version, want = int(sys.argv[1]), sys.argv[2:]
planes = {p.get("node_id"): p for p in json.load(sys.stdin)}
sys.exit(0 if all(planes.get(n, {}).get("state") == "synced"
                  and planes[n].get("version") == version for n in want) else 1)
' "$version" "$@"
}

# --- images and stack -------------------------------------------------------------------------

say "compose: ${COMPOSE[*]}; project $PROJECT; API on $API; replicas on ports $P1 $P2 $P3 (admin $A1 $A2 $A3)"
case ${E2E_IMAGES:-offline} in
    offline)
        say "images: scripts/offline-images.sh"
        "$ROOT/scripts/offline-images.sh" || abort "setup: scripts/offline-images.sh failed"
        ;;
    compose)
        say "images: compose build"
        compose build || abort "setup: compose build failed"
        ;;
    none) say "images: using the existing ones" ;;
    *) abort "setup: E2E_IMAGES must be offline, compose or none" ;;
esac

stack_started=1
say "starting the stack"
up_log=$(mktemp "${TMPDIR:-/tmp}/switchyard-e2e-up.XXXXXX")
if ! compose up -d --no-build >"$up_log" 2>&1; then
    cat "$up_log"
    rm -f "$up_log"
    abort "stack: compose up failed"
fi
rm -f "$up_log"
if [[ -z $(compose --profile extra ps -q backend3) ]]; then
    pass "stack: compose up -d started control plane, 3 replicas, 2 backends (not backend3)"
else
    fail "stack: compose up -d also started backend3 (it belongs to the 'extra' profile)"
fi

for r in "${REPLICAS[@]}"; do
    eventually "$r /readyz" ready "$r" || abort "stack: $r never became ready"
done
pass "stack: every replica answers 200 on /readyz"

# --- Hello / Howdy through every replica ------------------------------------------------------

for r in "${REPLICAS[@]}"; do
    if eventually "$r answering Hello/Howdy" answers "$r"; then
        check_alternation "$r" "round robin"
    else
        fail "round robin: $r never answered Hello/Howdy ($(shown "$(sample "$r" 4)"))"
    fi
done

version0=$(config_version || true)
if [[ $version0 =~ ^[0-9]+$ ]] && eventually "replicas synced at $version0" synced_at "$version0" "${REPLICAS[@]}"; then
    pass "dataplanes: all 3 replicas synced at version $version0"
else
    fail "dataplanes: not every replica synced at version ${version0:-?}"
fi

# --- add backend3 through the API -------------------------------------------------------------

compose --profile extra up -d --no-build --wait backend3 >/dev/null 2>&1 ||
    abort "backend3: compose up --wait backend3 failed"
backend3_healthy() {
    [[ $(docker inspect --format '{{.State.Health.Status}}' "$(compose --profile extra ps -q backend3)" 2>/dev/null) == healthy ]]
}
eventually "backend3 healthy" backend3_healthy || abort "backend3: container never became healthy"
pass "backend3: container started from the 'extra' profile and healthy"

answer=$(curl -sS --max-time 10 -w '\n%{http_code}' -H 'Content-Type: application/json' \
    -d '{"url": "http://backend3:8080", "weight": 1}' \
    "$API/api/v1/clusters/mycluster/members?wait=5s" 2>&1 || true)
status=${answer##*$'\n'}
member=${answer%$'\n'*}
member_id=$(printf '%s' "$member" | json 'd["id"]' 2>/dev/null || true)
if [[ $status == 201 && $member_id == backend3:8080 ]]; then
    pass "api: POST members?wait=5s added backend3 -> 201 $member"
else
    fail "api: POST members?wait=5s -> $status $member"
fi

# The write waited for every replica's ACK: right away, with no waiting, each replica balances
# over the three (weights 1:1:1), so any 6 requests show each of them.
for r in "${REPLICAS[@]}"; do
    seen=$(sample "$r" 6)
    if round_robin_of_three "$seen"; then
        pass "add member: $r answers Hi world! among Hello/Howdy right after the ACKed add (6 requests: $(shown "$seen"))"
    else
        fail "add member: $r does not balance over Hello/Howdy/Hi right after the ACKed add (6 requests: $(shown "$seen"))"
    fi
done

# --- remove it --------------------------------------------------------------------------------

status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X DELETE \
    "$API/api/v1/clusters/mycluster/members/backend3:8080?wait=5s" || true)
if [[ $status == 200 || $status == 204 ]]; then
    pass "api: DELETE members/backend3:8080?wait=5s -> $status"
else
    fail "api: DELETE members/backend3:8080?wait=5s -> $status"
fi
# The write waited for every replica's ACK: from now on no request may reach backend3. (Not a
# strict alternation check: the two members keep their round-robin scores from the three-member
# table, so the first pick after the removal may repeat the last one.)
for r in "${REPLICAS[@]}"; do
    seen=$(sample "$r" 12)
    if only_hello_howdy "$seen"; then
        pass "remove member: $r never answers Hi world! again (12 requests: $(shown "$seen"))"
    else
        fail "remove member: $r answers something other than Hello/Howdy (12 requests: $(shown "$seen"))"
    fi
done

# --- replicas keep serving without the control plane --------------------------------------------

compose stop data-plane-3 >/dev/null 2>&1 || fail "outage: compose stop data-plane-3 failed"
if [[ $(code "http://127.0.0.1:$P3/") == 000 ]]; then
    pass "outage: data-plane-3 stopped (its port no longer answers)"
else
    fail "outage: data-plane-3 still answers after compose stop"
fi
for r in data-plane-1 data-plane-2; do
    if eventually "$r answering" answers "$r"; then
        check_alternation "$r" "outage, data-plane-3 stopped"
    else
        fail "outage: $r stopped serving with data-plane-3 stopped ($(shown "$(sample "$r" 4)"))"
    fi
done

version_before=$(config_version || true)
compose stop control-plane >/dev/null 2>&1 || fail "outage: compose stop control-plane failed"
if api_healthy; then
    fail "outage: the control plane still answers after compose stop"
fi
# Sampled over a fixed window from the moment the control plane is gone, so that the replicas
# noticing the broken stream (and retrying it) fall inside it: every sample, each running replica
# must be ready and answer the next body of one unbroken Hello/Howdy alternation.
OUTAGE_WINDOW=3
declare -A LAST=()
outage_bad=""
outage_round() {
    local r got
    for r in data-plane-1 data-plane-2; do
        if ! ready "$r"; then
            outage_bad="$r: /readyz is not 200"
            return 1
        fi
        got=$(body "http://127.0.0.1:${PORT[$r]}/") || got="<error>"
        if [[ $got != 'Hello world!' && $got != 'Howdy world!' ]] || [[ $got == "${LAST[$r]:-}" ]]; then
            outage_bad="$r: answered '$got' after '${LAST[$r]:-}'"
            return 1
        fi
        LAST[$r]=$got
    done
}
if consistently "replicas serving without the control plane" "$OUTAGE_WINDOW" outage_round; then
    pass "outage: data-plane-1 and data-plane-2 stay ready and keep alternating Hello/Howdy without the control plane ($RUNS samples each over ${OUTAGE_WINDOW}s)"
else
    fail "outage: without the control plane, $outage_bad (sample $RUNS)"
fi

# --- control plane back: every running replica resyncs ----------------------------------------

compose start control-plane >/dev/null 2>&1 || fail "recovery: compose start control-plane failed"
eventually "control plane /healthz" api_healthy || abort "recovery: the control plane did not come back"
version_after=$(config_version || true)
if [[ -n $version_after && $version_after == "$version_before" ]]; then
    pass "recovery: the restarted control plane kept its state (version $version_after)"
else
    fail "recovery: version before the restart ${version_before:-?}, after ${version_after:-?}"
fi
if [[ $version_after =~ ^[0-9]+$ ]] &&
    eventually "replicas 1,2 synced at $version_after" synced_at "$version_after" data-plane-1 data-plane-2; then
    pass "recovery: data-plane-1 and data-plane-2 synced at version $version_after"
else
    fail "recovery: running replicas not all synced at ${version_after:-?} ($(body "$API/api/v1/dataplanes" || true))"
fi

compose start data-plane-3 >/dev/null 2>&1 || fail "recovery: compose start data-plane-3 failed"
if eventually "data-plane-3 ready" ready data-plane-3 && eventually "data-plane-3 answering" answers data-plane-3; then
    check_alternation data-plane-3 "recovery, data-plane-3 started again"
else
    fail "recovery: data-plane-3 does not serve after a restart ($(shown "$(sample data-plane-3 4)"))"
fi
if [[ $version_after =~ ^[0-9]+$ ]] &&
    eventually "all replicas synced at $version_after" synced_at "$version_after" "${REPLICAS[@]}"; then
    pass "recovery: all 3 replicas synced at version $version_after"
else
    fail "recovery: not all replicas synced at ${version_after:-?} ($(body "$API/api/v1/dataplanes" || true))"
fi
