#!/usr/bin/env bash
# Build the images docker-compose.yml uses (switchyard:latest, switchyard-flask-backend:latest)
# without pulling anything from an image registry:
#
#   1. debootstrap a minimal Debian root (bookworm, --variant=minbase) from the apt mirror this
#      machine already uses, once with python3-flask and once without, and `docker import` each
#      as a local base image (cached: an existing base image, or a cached rootfs tarball, is reused);
#   2. build the release binaries on the host (`cargo build --release --bins`, a no-op when they
#      are up to date);
#   3. `docker build` the two runtime images FROM those bases (docker/Dockerfile.offline,
#      examples/flask-backend/Dockerfile.offline), copying the host-built binaries in.
#
# Then `docker compose up --no-build` (or `docker-compose up --no-build`) uses them as they are.
# Idempotent: a second run reuses the bases, and docker's layer cache keeps unchanged images.
#
# Options:  --base-only      stop after the base images
#           --rebuild-base   debootstrap again even if a base image / cached rootfs exists
# Environment:
#   SWITCHYARD_IMAGE, SWITCHYARD_BACKEND_IMAGE   tags to build (default switchyard:latest,
#                                                switchyard-flask-backend:latest)
#   SWITCHYARD_BIN_DIR     take the two binaries from this directory; cargo is not run
#   SWITCHYARD_RUNTIME_BASE    base of the switchyard image (default the minbase import; e.g. the
#                              -flask base to have python3 in it)
#   CARGO_TARGET_DIR       where cargo puts its output (default ./target)
#   DEBIAN_MIRROR          mirror for debootstrap (default: the one /etc/apt/sources* names)
#   SWITCHYARD_OFFLINE_CACHE   rootfs tarballs and .deb cache (default ~/.cache/switchyard-offline)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=bookworm
# Bump when the base recipe (packages, clean-up) changes: new tags, new tarballs.
RECIPE=r1
CACHE_DIR=${SWITCHYARD_OFFLINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-offline}
BASE_IMAGE=switchyard-offline-base:$SUITE-minbase-$RECIPE
FLASK_BASE_IMAGE=switchyard-offline-base:$SUITE-flask-$RECIPE
SWITCHYARD_IMAGE=${SWITCHYARD_IMAGE:-switchyard:latest}
BACKEND_IMAGE=${SWITCHYARD_BACKEND_IMAGE:-switchyard-flask-backend:latest}
BINARIES=(switchyard-control-plane switchyard-data-plane switchyard)

base_only=0
rebuild_base=0
for arg in "$@"; do
    case $arg in
        --base-only) base_only=1 ;;
        --rebuild-base) rebuild_base=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "offline-images: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

say() { printf 'offline-images: %s\n' "$*"; }
die() {
    printf 'offline-images: error: %s\n' "$*" >&2
    exit 1
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# The first mirror for $SUITE that the machine's apt sources name (deb822 .sources files and
# one-line .list files), else deb.debian.org.
find_mirror() {
    local files=() f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] && files+=("$f")
    done
    local found=""
    if ((${#files[@]})); then
        found=$(awk -v suite="$SUITE" '
            function flush() {
                if (uris != "" && (" " suites " ") ~ (" " suite " ") && types ~ /(^| )deb( |$)/) {
                    split(uris, u, " "); print u[1]; done = 1; exit
                }
                uris = ""; suites = ""; types = ""
            }
            FNR == 1 { flush() }
            FILENAME ~ /\.sources$/ {
                if ($0 ~ /^[[:space:]]*$/) { flush(); next }
                if ($1 == "URIs:") { $1 = ""; uris = $0 }
                if ($1 == "Suites:") { $1 = ""; suites = $0 }
                if ($1 == "Types:") { $1 = ""; types = $0 }
                next
            }
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; done = 1; exit }
            }
            END { if (!done) flush() }
' "${files[@]}" 2>/dev/null || true)
    fi
    found=${found#"${found%%[![:space:]]*}"}
    echo "${found:-http://deb.debian.org/debian}"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return 0
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "debootstrap is missing: installing it with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    else
        die "debootstrap is missing: install it (sudo apt-get install debootstrap)"
    fi
}

# make_rootfs NAME INCLUDE: a cached tarball $CACHE_DIR/NAME.tar of a debootstrapped root.
make_rootfs() {
    local name=$1 include=$2 tarball=$CACHE_DIR/$1.tar
    if [[ -s $tarball && $rebuild_base -eq 0 ]]; then
        say "rootfs $name: cached tarball $tarball reused"
        return 0
    fi
    ensure_debootstrap
    local mirror
    mirror=${DEBIAN_MIRROR:-$(find_mirror)}
    mkdir -p "$CACHE_DIR/debs"
    local dir=$CACHE_DIR/$name.root.tmp
    as_root rm -rf "$dir"
    local args=(--variant=minbase --cache-dir="$CACHE_DIR/debs")
    [[ -n $include ]] && args+=(--include="$include")
    say "rootfs $name: debootstrap ${args[*]} $SUITE from $mirror (a few minutes; log in $CACHE_DIR/$name.debootstrap.log)"
    local start=$SECONDS
    if ! as_root debootstrap "${args[@]}" "$SUITE" "$dir" "$mirror" >"$CACHE_DIR/$name.debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE_DIR/$name.debootstrap.log" >&2
        as_root rm -rf "$dir"
        die "debootstrap failed (see $CACHE_DIR/$name.debootstrap.log)"
    fi
    # Slim it the way debian:*-slim is slimmed: no package lists, docs, man pages or apt caches.
    as_root chroot "$dir" apt-get clean
    as_root rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
        "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
        "$dir"/var/log/*.log "$dir"/var/log/apt/*
    as_root tar --numeric-owner -C "$dir" -cf "$tarball.tmp" .
    as_root chown "$(id -u):$(id -g)" "$tarball.tmp"
    mv "$tarball.tmp" "$tarball"
    as_root rm -rf "$dir"
    say "rootfs $name: built in $((SECONDS - start)) s, $(du -h "$tarball" | cut -f1) at $tarball"
}

# import_base TAG NAME INCLUDE: the local base image TAG, imported from the rootfs NAME.
import_base() {
    local tag=$1 name=$2 include=$3
    if [[ -n $(image_id "$tag") && $rebuild_base -eq 0 ]]; then
        say "base image $tag: exists, reused"
        return 0
    fi
    make_rootfs "$name" "$include"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase $SUITE${include:+ --include=$include}" \
        "$CACHE_DIR/$name.tar" "$tag" >/dev/null
    say "base image $tag: imported from $CACHE_DIR/$name.tar"
}

# build_image TAG CONTEXT DOCKERFILE BASE: docker build, reporting whether the image changed.
build_image() {
    local tag=$1 context=$2 dockerfile=$3 base=$4
    local before after
    before=$(image_id "$tag")
    local log
    log=$(mktemp "${TMPDIR:-/tmp}/switchyard-build.XXXXXX")
    if ! docker build --build-arg "BASE=$base" -f "$dockerfile" -t "$tag" "$context" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "docker build of $tag failed"
    fi
    rm -f "$log"
    after=$(image_id "$tag")
    if [[ $before == "$after" ]]; then
        say "image $tag: up to date (${after#sha256:})"
    else
        say "image $tag: built FROM $base (${after#sha256:})"
    fi
}

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the docker daemon (docker info failed)"

mkdir -p "$CACHE_DIR"
import_base "$BASE_IMAGE" "$SUITE-minbase-$RECIPE" ""
import_base "$FLASK_BASE_IMAGE" "$SUITE-flask-$RECIPE" "python3-flask"
if ((base_only)); then
    say "done (--base-only)"
    exit 0
fi

# The binaries, built on the host (same Debian release as the base, so the same glibc).
if [[ -n ${SWITCHYARD_BIN_DIR:-} ]]; then
    bin_dir=$SWITCHYARD_BIN_DIR
    say "binaries: taken from SWITCHYARD_BIN_DIR=$bin_dir (cargo not run)"
else
    bin_dir=${CARGO_TARGET_DIR:-$ROOT/target}/release
    if command -v cargo >/dev/null 2>&1; then
        say "binaries: cargo build --release --bins (a no-op when up to date)"
        (cd "$ROOT" && cargo build --release --bins)
    else
        say "binaries: cargo not found, using what is in $bin_dir"
    fi
fi
for b in "${BINARIES[@]}"; do
    [[ -x $bin_dir/$b ]] || die "missing binary $bin_dir/$b"
done

context=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-offline.XXXXXX")
trap 'rm -rf "$context"' EXIT
for b in "${BINARIES[@]}"; do
    # Hard link when possible (no copy of a large binary), else copy; keeps the mtime either way.
    ln "$bin_dir/$b" "$context/$b" 2>/dev/null || cp -p "$bin_dir/$b" "$context/$b"
done
cp "$ROOT/docker/healthcheck.sh" "$context/healthcheck.sh"
cp "$ROOT/docker/Dockerfile.offline" "$context/Dockerfile"

build_image "$SWITCHYARD_IMAGE" "$context" "$context/Dockerfile" "${SWITCHYARD_RUNTIME_BASE:-$BASE_IMAGE}"
build_image "$BACKEND_IMAGE" "$ROOT/examples/flask-backend" \
    "$ROOT/examples/flask-backend/Dockerfile.offline" "$FLASK_BASE_IMAGE"

# Smoke test: the host-built binaries start in the image (glibc and loader match).
for b in "${BINARIES[@]}"; do
    docker run --rm --network none "$SWITCHYARD_IMAGE" "$b" --help >/dev/null ||
        die "$b --help failed inside $SWITCHYARD_IMAGE"
done
docker run --rm --network none --entrypoint python3 "$BACKEND_IMAGE" \
    -c 'import flask, app' >/dev/null || die "the Flask app does not import inside $BACKEND_IMAGE"
say "smoke test: both binaries run and the Flask app imports inside the images"
say "done: now run 'docker compose up --no-build' (or 'docker-compose up --no-build')"
