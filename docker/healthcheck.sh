#!/bin/bash
# switchyard-healthcheck [HOST:PORT [PATH]]: exit 0 if GET http://HOST:PORT/PATH answers 200.
#
# The Docker HEALTHCHECK of the switchyard image. debian:bookworm-slim has no curl or wget, so
# this speaks HTTP itself over bash's /dev/tcp (bash is part of every Debian image).
# Without arguments it checks whatever process 1 is: the control plane's /healthz on
# $SWITCHYARD_API_LISTEN, else the data plane's /readyz on $SWITCHYARD_ADMIN_LISTEN.
set -euo pipefail

target=${1:-}
path=${2:-}
if [[ -z $target ]]; then
    cmdline=$(tr '\0' ' ' </proc/1/cmdline 2>/dev/null || true)
    case $cmdline in
        *switchyard-control-plane*)
            target=${SWITCHYARD_API_LISTEN:-127.0.0.1:8080}
            path=${path:-/healthz}
            ;;
        *)
            target=${SWITCHYARD_ADMIN_LISTEN:-127.0.0.1:9901}
            path=${path:-/readyz}
            ;;
    esac
fi
path=${path:-/healthz}
host=${target%:*}
port=${target##*:}
# A wildcard listen address is reached on loopback.
case $host in
    '' | 0.0.0.0 | '[::]' | '::') host=127.0.0.1 ;;
esac
host=${host#[}
host=${host%]}

if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
    echo "unhealthy: cannot connect to $host:$port" >&2
    exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$path" "$host" "$port" >&3
status=""
IFS= read -r -t 5 status <&3 || true
exec 3<&-
status=${status%$'\r'}
if [[ $status =~ ^HTTP/[0-9.]+\ 200($|\ ) ]]; then
    exit 0
fi
echo "unhealthy: GET http://$host:$port$path: ${status:-no answer}" >&2
exit 1
