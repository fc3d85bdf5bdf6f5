#!/usr/bin/env bash
# Docker Compose, v2 or v1, with a `--wait` that works on both.
#
#   scripts/compose.sh up --no-build -d --wait                 # the whole demo, healthy
#   scripts/compose.sh --profile extra up -d --wait backend3   # one more service, healthy
#   scripts/compose.sh ps | stop control-plane | down -v ...   # anything else: passed through
#
# Runs `docker compose` (v2) if it works, else `docker-compose` (v1, which has no `--wait`:
# `docker-compose up --wait` prints its usage, exits 0 and starts nothing). `--wait` is never
# passed on: after `up` has started the services, this script waits itself until every container
# of the services named (of the project, if none is named) is healthy (running, for one without
# a health check), and fails, showing `ps`, if one exits or COMPOSE_WAIT_TIMEOUT seconds pass.
#
# Environment: COMPOSE_WAIT_TIMEOUT=120 (seconds).
set -euo pipefail

say() { printf 'compose: %s\n' "$*" >&2; }

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    say "neither 'docker compose' (v2) nor 'docker-compose' (v1) is installed"
    exit 1
fi

# The options before the command (--profile, -p, -f ...) are kept for `ps` while waiting.
global=()
while (($#)) && [[ $1 == -* ]]; do
    case $1 in
        --profile | -p | --project-name | -f | --file | --env-file | --project-directory)
            global+=("$1" "${2:-}")
            shift 2 || shift
            ;;
        *)
            global+=("$1")
            shift
            ;;
    esac
done
if [[ ${1:-} != up ]]; then
    exec "${COMPOSE[@]}" "${global[@]}" "$@"
fi
shift

wait=0 args=() services=()
while (($#)); do
    case $1 in
        --wait) wait=1 ;;
        --wait-timeout) shift ;;
        --scale | -t | --timeout | --exit-code-from | --attach | --no-attach | --pull)
            args+=("$1" "${2:-}")
            shift
            ;;
        -*) args+=("$1") ;;
        *) services+=("$1") ;;
    esac
    shift
done

"${COMPOSE[@]}" "${global[@]}" up "${args[@]}" "${services[@]}"
((wait)) || exit 0

timeout=${COMPOSE_WAIT_TIMEOUT:-120}
deadline=$((SECONDS + timeout))
say "waiting until ${services[*]:-every service} is healthy (at most ${timeout}s)"
while true; do
    mapfile -t ids < <("${COMPOSE[@]}" "${global[@]}" ps -q "${services[@]}")
    pending=()
    for id in "${ids[@]}"; do
        [[ -n $id ]] || continue
        state=$(docker inspect --format \
            '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
            "$id" 2>/dev/null) || state="$id gone gone"
        read -r name status health <<<"$state"
        case "$status/$health" in
            running/healthy | running/none) ;;
            exited/* | dead/* | gone/*)
                say "${name#/} is $status"
                "${COMPOSE[@]}" "${global[@]}" ps >&2
                exit 1
                ;;
            *) pending+=("${name#/} ($status, $health)") ;;
        esac
    done
    if ((${#ids[@]} > 0 && ${#pending[@]} == 0)); then
        say "healthy: ${#ids[@]} container(s)"
        exit 0
    fi
    if ((SECONDS >= deadline)); then
        say "not healthy after ${timeout}s: ${pending[*]:-no container started}"
        "${COMPOSE[@]}" "${global[@]}" ps >&2
        exit 1
    fi
    sleep 1
done
