#!/usr/bin/env bash
# The project's own Docker engine: a private dockerd whose socket, pid file, data root and exec
# root live under one state dir (never the system's /var/run/docker.sock), plus the images the
# containers mode and the container tests need, built here from the Debian archive (no container
# registry is needed).
#
#   scripts/docker-engine.sh install   apt-get install docker.io + debootstrap when missing (root)
#   scripts/docker-engine.sh start     start the engine (idempotent); prints DOCKER_HOST=unix://...
#   scripts/docker-engine.sh stop      stop it by pid (and its containerd)
#   scripts/docker-engine.sh status    running or not, socket, storage driver
#   scripts/docker-engine.sh images    build the local images that are missing or out of date
#   scripts/docker-engine.sh env       `export K=V` lines for callers: eval "$(scripts/docker-engine.sh env)"
#
# Environment (all optional):
#   MMA_DOCKER_STATE     state dir (default <repo>/.mina/docker); the data root in it keeps images
#                        between runs, so a second `images` builds nothing
#   MMA_DOCKER_STORAGE   storage driver (default: overlay2 when an overlay mount works here,
#                        else fuse-overlayfs when installed, else vfs)
#   MMA_BASE_IMAGE       local Debian base     (default mina-local/debian:bookworm)
#   MMA_NATS_IMAGE       NATS image            (default mina-local/nats:latest)
#   MMA_POSTGRES_IMAGE   Postgres image        (default mina-local/postgres:latest)
#   MMA_DEBIAN_MIRROR    Debian mirror for debootstrap (default: the one apt uses here)
#
# Containers get no network addresses (--bridge=none, no iptables): they use the host network
# and loopback ports only. Builds run with --network host for the same reason.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${MMA_DOCKER_STATE:-$ROOT/.mina/docker}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
SOCK="$STATE/docker.sock"
PIDFILE="$STATE/dockerd.pid"
DATA_ROOT="$STATE/data"
EXEC_ROOT="$STATE/exec"
LOG="$STATE/dockerd.log"
BASE_IMAGE="${MMA_BASE_IMAGE:-mina-local/debian:bookworm}"
NATS_IMAGE="${MMA_NATS_IMAGE:-mina-local/nats:latest}"
POSTGRES_IMAGE="${MMA_POSTGRES_IMAGE:-mina-local/postgres:latest}"
SUITE=bookworm
export DOCKER_HOST="unix://$SOCK"
export DOCKER_BUILDKIT=0  # the classic builder: no buildx plugin needed, same on every docker CLI

say() { echo "docker-engine: $*" >&2; }
die() { say "$*"; exit 1; }

# ----------------------------------------------------------------------------- install

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null; then
        die "missing ${missing[*]} and not root with apt-get: sudo apt-get install -y ${missing[*]}"
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# ----------------------------------------------------------------------------- engine

engine_pid() {
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
    return 0
}

answers() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }

overlay_works() {
    # A real overlay mount on the data root's file system (fails on overlayfs-on-overlayfs etc.).
    local probe
    probe="$(mktemp -d "$STATE/overlay-probe.XXXXXX")"
    mkdir -p "$probe"/{lower,upper,work,merged}
    local ok=1
    if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
        "$probe/merged" 2>/dev/null; then
        umount "$probe/merged"
        ok=0
    fi
    rm -rf "$probe"
    return $ok
}

storage_driver() {
    if [[ -n "${MMA_DOCKER_STORAGE:-}" ]]; then echo "$MMA_DOCKER_STORAGE"; return; fi
    # A data root keeps its driver: images written with one are invisible to another.
    if [[ -s "$STATE/storage-driver" ]]; then cat "$STATE/storage-driver"; return; fi
    local driver=vfs
    if overlay_works; then driver=overlay2
    elif command -v fuse-overlayfs >/dev/null && [[ -e /dev/fuse ]]; then driver=fuse-overlayfs
    fi
    echo "$driver" >"$STATE/storage-driver"
    echo "$driver"
}

start_engine() {
    if [[ -n "$(engine_pid)" ]] && answers; then
        echo "DOCKER_HOST=$DOCKER_HOST"
        return 0
    fi
    [[ "$(id -u)" -eq 0 ]] || die "the private engine needs root (dockerd); not root here"
    install_packages
    # Unix socket paths are limited to 107 bytes; containerd's lives deeper than ours.
    (( ${#EXEC_ROOT} < 60 )) || die "state dir path too long for unix sockets: $STATE (set MMA_DOCKER_STATE)"
    if [[ -n "$(engine_pid)" ]]; then
        say "dockerd pid $(engine_pid) does not answer; restarting it"
        stop_engine
    fi
    rm -f "$PIDFILE" "$SOCK"
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
    local driver
    driver="$(storage_driver)"
    echo '{}' >"$STATE/daemon.json"  # never /etc/docker/daemon.json: the engine is ours alone
    say "starting dockerd (storage $driver) under $STATE"
    # setsid: the engine outlives the shell (and the test session) that started it.
    setsid dockerd \
        --config-file "$STATE/daemon.json" \
        --host "$DOCKER_HOST" \
        --pidfile "$PIDFILE" \
        --data-root "$DATA_ROOT" \
        --exec-root "$EXEC_ROOT" \
        --storage-driver "$driver" \
        --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
        --userland-proxy=false \
        --log-level warn \
        </dev/null >>"$LOG" 2>&1 &
    local launcher=$!
    local deadline=$((SECONDS + 60))
    until answers; do
        if ! kill -0 "$launcher" 2>/dev/null; then
            tail -n 20 "$LOG" >&2
            die "dockerd exited (log: $LOG)"
        fi
        (( SECONDS < deadline )) || { tail -n 20 "$LOG" >&2; die "dockerd did not answer in 60 s (log: $LOG)"; }
        sleep 0.2
    done
    echo "DOCKER_HOST=$DOCKER_HOST"
}

wait_gone() {  # pid timeout_s
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        (( SECONDS < deadline )) || return 1
        sleep 0.2
    done
}

stop_engine() {
    local pid containerd_pid
    pid="$(engine_pid)"
    containerd_pid="$(cat "$EXEC_ROOT/containerd/containerd.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]]; then
        say "stopping dockerd pid $pid"
        kill -TERM "$pid"
        wait_gone "$pid" 40 || { say "dockerd pid $pid ignored SIGTERM; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
    fi
    # dockerd stops the containerd it started; after a crash or a SIGKILL it may remain.
    if [[ -n "$containerd_pid" ]] && kill -0 "$containerd_pid" 2>/dev/null \
        && grep -q "$EXEC_ROOT" "/proc/$containerd_pid/cmdline" 2>/dev/null; then
        kill -TERM "$containerd_pid"
        wait_gone "$containerd_pid" 15 || kill -KILL "$containerd_pid" 2>/dev/null || true
    fi
    # What dockerd leaves mounted (its network namespace file, a data-root bind), deepest first.
    local mnt
    while read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || say "could not unmount $mnt"
    done < <(awk -v s="$STATE/" 'index($5, s) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    rm -f "$PIDFILE" "$SOCK"
}

status_engine() {
    local pid
    pid="$(engine_pid)"
    if [[ -n "$pid" ]] && answers; then
        echo "running: pid $pid, DOCKER_HOST=$DOCKER_HOST, storage $(docker info --format '{{.Driver}}')"
    else
        echo "stopped (state dir $STATE)"
        return 3
    fi
}

print_env() {
    echo "export DOCKER_HOST=$DOCKER_HOST"
    echo "export TESTCONTAINERS_RYUK_DISABLED=true"
    echo "export MMA_BASE_IMAGE=$BASE_IMAGE"
    echo "export MMA_NATS_IMAGE=$NATS_IMAGE"
    echo "export MMA_POSTGRES_IMAGE=$POSTGRES_IMAGE"
}

# ----------------------------------------------------------------------------- images

# shellcheck source=scripts/docker-images.sh
source "$ROOT/scripts/docker-images.sh"

case "${1:-}" in
    install) install_packages ;;
    start) start_engine ;;
    stop) stop_engine ;;
    status) status_engine ;;
    images) answers || die "the engine is not running: scripts/docker-engine.sh start"; build_images ;;
    env) print_env ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
