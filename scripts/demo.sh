#!/usr/bin/env bash
# The local demo, no Docker: two backends, the control plane and two proxy replicas on 127.0.0.1.
#
#   scripts/demo.sh                  # Ctrl-C stops everything it started
#
#   backends        http://127.0.0.1:8080 ("Hello world!")  http://127.0.0.1:8081 ("Howdy world!")
#                   the Flask app (examples/flask-backend/app.py), as in the Docker demo: with
#                   the system python3 if it can import flask, else from a virtualenv that the
#                   script makes once in target/demo-venv (python3 -m venv, or virtualenv) and
#                   fills with `pip install -r examples/flask-backend/requirements.txt`. Only if
#                   that fails (no venv module, no access to PyPI) do the same answers come from
#                   plain_server.py (Python standard library only), and the script says why.
#   control plane   REST API http://127.0.0.1:9000, gRPC 127.0.0.1:18000, state in ./.demo/
#   replicas        http://127.0.0.1:8001 and :8002 (admin :9901 and :9902)
#
# Bootstraps cluster `mycluster` (both backends, round robin) and route `web` on `/`, waits until
# every replica is ready, prints commands to try, and stays in the foreground until Ctrl-C; then
# stops exactly the processes it started. Logs: ./.demo/logs/.
#
# Environment:
#   PROFILE=release|debug          which build to use (default release); `cargo build` runs first
#                                  (a no-op when up to date)
#   SWITCHYARD_BIN_DIR=DIR         use the binaries in DIR instead; cargo is not run
#   BACKEND1_PORT, BACKEND2_PORT   8080, 8081
#   API_PORT, GRPC_PORT            9000, 18000
#   REPLICA1_PORT, REPLICA2_PORT   8001, 8002
#   ADMIN1_PORT, ADMIN2_PORT       9901, 9902
#   DEMO_DIR=./.demo               state, caches and logs
#   DEMO_KEEP_STATE=1              keep the control plane's store and the replicas' caches from
#                                  the previous run (default: start from the bootstrap config)
#   DEMO_TIMEOUT=30                seconds to wait for each process to become ready
#   DEMO_VENV=DIR                  the backends' virtualenv (default target/demo-venv); made and
#                                  used only when python3 cannot import flask; its pip log is
#                                  ./.demo/logs/demo-venv.log. DEMO_VENV=off: never make one
#                                  (no network), use plain_server.py instead
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=${PROFILE:-release}
BACKEND1_PORT=${BACKEND1_PORT:-8080}
BACKEND2_PORT=${BACKEND2_PORT:-8081}
API_PORT=${API_PORT:-9000}
GRPC_PORT=${GRPC_PORT:-18000}
REPLICA1_PORT=${REPLICA1_PORT:-8001}
REPLICA2_PORT=${REPLICA2_PORT:-8002}
ADMIN1_PORT=${ADMIN1_PORT:-9901}
ADMIN2_PORT=${ADMIN2_PORT:-9902}
DEMO_DIR=${DEMO_DIR:-$ROOT/.demo}
TIMEOUT=${DEMO_TIMEOUT:-30}
LOG_DIR=$DEMO_DIR/logs

say() { printf 'demo: %s\n' "$*"; }
die() {
    printf 'demo: error: %s\n' "$*" >&2
    exit 1
}

# --- processes we start, and stopping exactly them ----------------------------------------------

declare -a PIDS=() NAMES=()
stopping=0

stop_all() {
    local status=$?
    ((stopping)) && return
    stopping=1
    trap - INT TERM
    set +e
    if ((${#PIDS[@]})); then
        say "stopping ${NAMES[*]}"
        local i
        for i in "${!PIDS[@]}"; do
            kill -TERM "${PIDS[$i]}" 2>/dev/null
        done
        # Graceful shutdown first; whatever is still there after 10 s gets SIGKILL.
        local deadline=$((SECONDS + 10)) alive
        while ((SECONDS < deadline)); do
            alive=0
            for i in "${!PIDS[@]}"; do
                kill -0 "${PIDS[$i]}" 2>/dev/null && alive=1
            done
            ((alive)) || break
            sleep 0.2
        done
        for i in "${!PIDS[@]}"; do
            if kill -0 "${PIDS[$i]}" 2>/dev/null; then
                say "${NAMES[$i]} (pid ${PIDS[$i]}) did not stop in 10 s: SIGKILL"
                kill -KILL "${PIDS[$i]}" 2>/dev/null
            fi
            wait "${PIDS[$i]}" 2>/dev/null
        done
        say "stopped; logs are in $LOG_DIR"
    fi
    exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND...: runs COMMAND in the background, output to $LOG_DIR/NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$LOG_DIR/$name.log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
    say "started $name (pid $!): log $LOG_DIR/$name.log"
}

# running NAME: the process started as NAME is still alive.
running() {
    local i
    for i in "${!NAMES[@]}"; do
        [[ ${NAMES[$i]} == "$1" ]] && kill -0 "${PIDS[$i]}" 2>/dev/null && return 0
    done
    return 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

http_ok() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null) == 200 ]]; }

# wait_for NAME URL: poll URL until it answers 200 (deadline TIMEOUT), NAME must stay alive.
wait_for() {
    local name=$1 url=$2 deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        running "$name" || die "$name exited; last lines of $LOG_DIR/$name.log:
$(tail -n 20 "$LOG_DIR/$name.log")"
        if http_ok "$url"; then
            say "$name is ready ($url)"
            return 0
        fi
        sleep 0.2
    done
    die "$name not ready after ${TIMEOUT}s ($url); see $LOG_DIR/$name.log"
}

# --- checks and binaries ----------------------------------------------------------------------

command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install curl)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed for the demo backends"

for port in "$BACKEND1_PORT" "$BACKEND2_PORT" "$API_PORT" "$GRPC_PORT" \
    "$REPLICA1_PORT" "$REPLICA2_PORT" "$ADMIN1_PORT" "$ADMIN2_PORT"; do
    if port_in_use "$port"; then
        die "port $port on 127.0.0.1 is already in use (another demo? see the port variables in $0)"
    fi
done

if [[ -n ${SWITCHYARD_BIN_DIR:-} ]]; then
    BIN_DIR=$SWITCHYARD_BIN_DIR
    say "binaries: $BIN_DIR (SWITCHYARD_BIN_DIR; cargo not run)"
else
    case $PROFILE in
        release) cargo_args=(--release) ;;
        debug) cargo_args=() ;;
        *) die "PROFILE must be release or debug" ;;
    esac
    BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
    if command -v cargo >/dev/null 2>&1; then
        say "binaries: cargo build ${cargo_args[*]} --bins (the first release build takes a while)"
        (cd "$ROOT" && cargo build "${cargo_args[@]}" --bins)
    else
        say "binaries: cargo not found, using $BIN_DIR"
    fi
fi
CONTROL_PLANE=$BIN_DIR/switchyard-control-plane
DATA_PLANE=$BIN_DIR/switchyard-data-plane
[[ -x $CONTROL_PLANE && -x $DATA_PLANE ]] || die "missing binaries in $BIN_DIR"

# --- state ------------------------------------------------------------------------------------

mkdir -p "$LOG_DIR"
if [[ ${DEMO_KEEP_STATE:-0} != 1 ]]; then
    rm -rf "$DEMO_DIR/control-plane" "$DEMO_DIR/replica-1" "$DEMO_DIR/replica-2"
fi
mkdir -p "$DEMO_DIR/control-plane" "$DEMO_DIR/replica-1" "$DEMO_DIR/replica-2"
cat >"$DEMO_DIR/bootstrap.json" <<EOF
{
  "clusters": [
    {
      "name": "mycluster",
      "policy": "round_robin",
      "members": [
        { "url": "http://127.0.0.1:$BACKEND1_PORT", "weight": 1 },
        { "url": "http://127.0.0.1:$BACKEND2_PORT", "weight": 1 }
      ]
    }
  ],
  "routes": [
    { "name": "web", "path_prefix": "/", "cluster": "mycluster" }
  ]
}
EOF

# --- backends ---------------------------------------------------------------------------------

BACKEND_DIR=$ROOT/examples/flask-backend
REQUIREMENTS=$BACKEND_DIR/requirements.txt

# flask_version PYTHON: prints the Flask version PYTHON imports; fails if it cannot import flask.
flask_version() {
    "$1" -c 'import importlib.metadata as m, flask; print(m.version("flask"))' 2>/dev/null
}

# discard_venv: removes $VENV_DIR, but only if it is (what is left of) a virtualenv: a
# DEMO_VENV pointing at some other directory is never deleted.
discard_venv() {
    if [[ -f $VENV_DIR/pyvenv.cfg ]]; then
        rm -rf "$VENV_DIR"
    elif [[ -d $VENV_DIR ]]; then
        rmdir "$VENV_DIR" 2>/dev/null || return 1
    fi
    return 0
}

# make_venv: creates $VENV_DIR with a pip in it (python3 -m venv, else virtualenv), or without
# one (venv --without-pip) for the system's pip to install into with `pip --python`; sets
# VENV_PIP to the pip command to use. Output goes to $VENV_LOG.
make_venv() {
    discard_venv || {
        venv_why="$VENV_DIR exists and is not a virtualenv (set DEMO_VENV to another directory)"
        return 1
    }
    if python3 -m venv "$VENV_DIR" >>"$VENV_LOG" 2>&1 &&
        "$VENV_DIR/bin/python3" -m pip --version >>"$VENV_LOG" 2>&1; then
        VENV_PIP=("$VENV_DIR/bin/python3" -m pip)
        return 0
    fi
    discard_venv
    # Debian/Ubuntu without python3-venv: venv fails for want of ensurepip. virtualenv brings
    # its own pip, if it is installed.
    if python3 -m virtualenv --version >/dev/null 2>&1 &&
        python3 -m virtualenv "$VENV_DIR" >>"$VENV_LOG" 2>&1 &&
        "$VENV_DIR/bin/python3" -m pip --version >>"$VENV_LOG" 2>&1; then
        VENV_PIP=("$VENV_DIR/bin/python3" -m pip)
        return 0
    fi
    discard_venv
    # Last: a venv without pip, filled by the system's pip (pip >= 22.3 has --python).
    if python3 -m pip --version >/dev/null 2>&1 &&
        python3 -m venv --without-pip "$VENV_DIR" >>"$VENV_LOG" 2>&1 &&
        python3 -m pip --python "$VENV_DIR/bin/python3" --version >>"$VENV_LOG" 2>&1; then
        VENV_PIP=(python3 -m pip --python "$VENV_DIR/bin/python3")
        return 0
    fi
    discard_venv
    venv_why="no virtualenv with a pip could be made (python3 -m venv failed: on Debian/Ubuntu, apt-get install python3-venv); last lines of $VENV_LOG:
$(tail -n 3 "$VENV_LOG" | sed 's/^/      /')"
    return 1
}

# flask_venv: makes sure $VENV_DIR has requirements.txt installed, once: a stamp (a copy of the
# requirements it was installed from) marks a finished install, and only a changed
# requirements.txt or a venv that no longer imports flask is redone. On failure sets venv_why.
VENV_DIR=${DEMO_VENV:-$ROOT/target/demo-venv}
VENV_LOG=$LOG_DIR/demo-venv.log
VENV_STAMP=$VENV_DIR/switchyard-requirements.txt
venv_why=""
flask_venv() {
    if [[ -f $VENV_STAMP && $(<"$VENV_STAMP") == "$(<"$REQUIREMENTS")" ]] &&
        flask_version "$VENV_DIR/bin/python3" >/dev/null; then
        return 0
    fi
    : >"$VENV_LOG"
    VENV_PIP=()
    if [[ -f $VENV_DIR/pyvenv.cfg ]] && "$VENV_DIR/bin/python3" -m pip --version >>"$VENV_LOG" 2>&1; then
        say "backends: python3 cannot import flask; updating the virtualenv $VENV_DIR"
        VENV_PIP=("$VENV_DIR/bin/python3" -m pip)
    else
        say "backends: python3 cannot import flask; creating a virtualenv in $VENV_DIR (once)"
        make_venv || return 1
    fi
    say "backends: pip install -r examples/flask-backend/requirements.txt (log: $VENV_LOG)"
    rm -f "$VENV_STAMP"
    if ! "${VENV_PIP[@]}" install --disable-pip-version-check --no-input --retries 2 --timeout 15 \
        -r "$REQUIREMENTS" >>"$VENV_LOG" 2>&1; then
        venv_why="pip could not install examples/flask-backend/requirements.txt (no access to PyPI?); last lines of $VENV_LOG:
$(tail -n 3 "$VENV_LOG" | sed 's/^/      /')"
        return 1
    fi
    if ! flask_version "$VENV_DIR/bin/python3" >/dev/null; then
        venv_why="the virtualenv $VENV_DIR still cannot import flask after pip install (see $VENV_LOG)"
        return 1
    fi
    cp "$REQUIREMENTS" "$VENV_STAMP"
}

BACKEND_PYTHON=python3
if system_flask=$(flask_version python3); then
    backend_script=app.py
    say "backends: the Flask app (Flask $system_flask, system python3), examples/flask-backend/app.py"
elif [[ $VENV_DIR == off ]]; then
    backend_script=plain_server.py
    say "backends: python3 cannot import flask and DEMO_VENV=off, so examples/flask-backend/plain_server.py"
    say "          (Python standard library) answers the same"
elif flask_venv; then
    BACKEND_PYTHON=$VENV_DIR/bin/python3
    backend_script=app.py
    say "backends: the Flask app (Flask $(flask_version "$BACKEND_PYTHON"), virtualenv $VENV_DIR), examples/flask-backend/app.py"
else
    backend_script=plain_server.py
    say "backends: NOT the Flask app: python3 cannot import flask, and $venv_why"
    say "          so examples/flask-backend/plain_server.py (Python standard library) answers the same;"
    say "          to use the Flask app, pip install -r examples/flask-backend/requirements.txt for python3,"
    say "          or fix the above and run the demo again"
fi
start backend1 env -C "$BACKEND_DIR" HOST=127.0.0.1 PORT="$BACKEND1_PORT" MESSAGE='Hello world!' \
    BACKEND_NAME=backend1 PYTHONUNBUFFERED=1 "$BACKEND_PYTHON" "$backend_script"
start backend2 env -C "$BACKEND_DIR" HOST=127.0.0.1 PORT="$BACKEND2_PORT" MESSAGE='Howdy world!' \
    BACKEND_NAME=backend2 PYTHONUNBUFFERED=1 "$BACKEND_PYTHON" "$backend_script"
wait_for backend1 "http://127.0.0.1:$BACKEND1_PORT/healthz"
wait_for backend2 "http://127.0.0.1:$BACKEND2_PORT/healthz"

# --- control plane and replicas (configured through the flags' environment twins) --------------

start control-plane env \
    SWITCHYARD_API_LISTEN="127.0.0.1:$API_PORT" \
    SWITCHYARD_GRPC_LISTEN="127.0.0.1:$GRPC_PORT" \
    SWITCHYARD_STATE_FILE="$DEMO_DIR/control-plane/state.json" \
    SWITCHYARD_CONFIG="$DEMO_DIR/bootstrap.json" \
    "$CONTROL_PLANE"
wait_for control-plane "http://127.0.0.1:$API_PORT/healthz"

replica=0
for ports in "$REPLICA1_PORT:$ADMIN1_PORT" "$REPLICA2_PORT:$ADMIN2_PORT"; do
    replica=$((replica + 1))
    start "replica-$replica" env \
        SWITCHYARD_CONTROL_PLANE="http://127.0.0.1:$GRPC_PORT" \
        SWITCHYARD_LISTEN="127.0.0.1:${ports%:*}" \
        SWITCHYARD_ADMIN_LISTEN="127.0.0.1:${ports#*:}" \
        SWITCHYARD_NODE_ID="replica-$replica" \
        SWITCHYARD_CACHE_FILE="$DEMO_DIR/replica-$replica/cache.json" \
        "$DATA_PLANE"
done
wait_for replica-1 "http://127.0.0.1:$ADMIN1_PORT/readyz"
wait_for replica-2 "http://127.0.0.1:$ADMIN2_PORT/readyz"

API=http://127.0.0.1:$API_PORT
cat <<EOF

Switchyard is running: two replicas in front of two backends. Try, in another terminal:

  # each replica alternates Hello world! / Howdy world!
  for i in 1 2 3 4; do curl -s http://127.0.0.1:$REPLICA1_PORT/; echo; done
  for i in 1 2 3 4; do curl -s http://127.0.0.1:$REPLICA2_PORT/; echo; done
  # what a backend sees (X-Forwarded-For, X-Forwarded-Host, Host)
  curl -s http://127.0.0.1:$REPLICA1_PORT/headers; echo

  # the whole config, and the replicas with the version each one runs
  curl -s $API/api/v1/config; echo
  curl -s $API/api/v1/dataplanes; echo

  # a third backend, added live: answered once every replica has it
  (cd examples/flask-backend && HOST=127.0.0.1 PORT=8082 MESSAGE='Hi world!' $(printf '%q %q' "$BACKEND_PYTHON" "$backend_script")) &
  curl -s -X POST -H 'Content-Type: application/json' \\
       -d '{"url": "http://127.0.0.1:8082", "weight": 1}' \\
       '$API/api/v1/clusters/mycluster/members?wait=2s'; echo
  for i in 1 2 3; do curl -s http://127.0.0.1:$REPLICA2_PORT/; echo; done
  # and removed again
  curl -s -X DELETE '$API/api/v1/clusters/mycluster/members/127.0.0.1:8082?wait=2s'; echo

Logs: $LOG_DIR/   Press Ctrl-C to stop everything this script started.
EOF

# Stay in the foreground; if one of our processes dies on its own, say so and stop the rest.
while true; do
    wait -n "${PIDS[@]}" || true
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            die "${NAMES[$i]} exited on its own; last lines of $LOG_DIR/${NAMES[$i]}.log:
$(tail -n 20 "$LOG_DIR/${NAMES[$i]}.log")"
        fi
    done
done
