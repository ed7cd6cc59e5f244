# Shared helpers for the scripts in this directory. Source it; do not run it.
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FLOW_DIR="$REPO_ROOT/.flow"

# Machine-wide paths: shared by every clone on this machine so a second start finds and reuses the
# engine, and images survive fresh clones. Keep them in sync with docs/development.md.
FLOW_STATE_ROOT="${FLOW_STATE_ROOT:-/var/lib/agentainer-flow}"
FLOW_RUN_ROOT="${FLOW_RUN_ROOT:-/var/run/agentainer-flow}"
FLOW_LOG_ROOT="${FLOW_LOG_ROOT:-/var/log/agentainer-flow}"
FLOW_CACHE_ROOT="${FLOW_CACHE_ROOT:-/var/cache/agentainer-flow}"
FLOW_DOCKER_SOCK="$FLOW_RUN_ROOT/docker.sock"
FLOW_DOCKER_PIDFILE="$FLOW_RUN_ROOT/dockerd.pid"
FLOW_DOCKER_EXEC_ROOT="$FLOW_RUN_ROOT/exec"
FLOW_DOCKER_DATA_ROOT="$FLOW_STATE_ROOT/docker"
FLOW_DOCKER_LOG="$FLOW_LOG_ROOT/dockerd.log"
FLOW_BASE_IMAGE="${FLOW_BASE_IMAGE:-agentainer-flow/python:3.11}"
FLOW_CONTAINER_LABEL="io.agentainer.flow=1"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$(basename "$0" .sh)" "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as root: directly when we are root, through sudo -n otherwise.
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "'$*' needs root (run as root or with password-less sudo)"
    fi
}

_APT_UPDATED=0
# apt_install PKG...: install the Debian packages given, updating the index once per script run.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
    if [ "$_APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
        _APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 \
        || die "apt-get install $* failed"
}

# Point DOCKER_HOST at the engine recorded by ensure_docker.sh unless the caller chose one.
load_docker_host() {
    if [ -z "${DOCKER_HOST:-}" ] && [ -s "$FLOW_DIR/docker_host" ]; then
        DOCKER_HOST="$(head -n1 "$FLOW_DIR/docker_host")"
        export DOCKER_HOST
    fi
}

# docker_answers: the engine at $DOCKER_HOST (or the client default) answers within 10 s.
docker_answers() {
    command -v docker >/dev/null 2>&1 || return 1
    timeout 10 docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1 && return 0
    # A client newer than the engine may refuse before negotiating; pin the engine's API.
    if [ -z "${DOCKER_API_VERSION:-}" ] \
        && timeout 10 env DOCKER_API_VERSION=1.41 docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1; then
        export DOCKER_API_VERSION=1.41
        return 0
    fi
    return 1
}
