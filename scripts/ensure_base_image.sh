#!/usr/bin/env bash
# Make sure the base image agentainer-flow/python:3.11 exists in the engine.
#
#   1. present already                   -> done
#   2. a registry answers                -> docker pull python:3.11-slim (10 s timeout) and tag it
#   3. offline                           -> debootstrap a bookworm minbase rootfs with python3 into
#                                           $FLOW_CACHE_ROOT/rootfs (reused when complete), trim, docker import
#
# A rootfs counts as complete only when the marker $FLOW_CACHE_ROOT/rootfs.complete exists; the marker is
# written after debootstrap exits 0, so an interrupted run is redone from scratch.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

ROOTFS="$FLOW_CACHE_ROOT/rootfs"
ROOTFS_MARKER="$FLOW_CACHE_ROOT/rootfs.complete"
DEBIAN_MIRROR="${FLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PULL_IMAGE="${FLOW_PULL_IMAGE:-python:3.11-slim}"
PULL_TIMEOUT_S="${FLOW_PULL_TIMEOUT_S:-10}"

load_docker_host
docker_answers || die "no Docker engine answers at ${DOCKER_HOST:-the default socket}: run scripts/ensure_docker.sh"

image_exists() { docker image inspect "$FLOW_BASE_IMAGE" >/dev/null 2>&1; }

if image_exists; then
    log "base image $FLOW_BASE_IMAGE present"
    exit 0
fi

# Several processes (bootstrap, a test session) may get here at once: one builds, the others wait.
if is_root || [ -w "$FLOW_CACHE_ROOT" ]; then
    mkdir -p "$FLOW_CACHE_ROOT"
    exec 9>"$FLOW_CACHE_ROOT/base-image.lock"
    flock -w 900 9 || die "timed out waiting for another base image build (lock $FLOW_CACHE_ROOT/base-image.lock)"
    if image_exists; then
        log "base image $FLOW_BASE_IMAGE built by another process"
        exit 0
    fi
fi

log "trying docker pull $PULL_IMAGE (timeout ${PULL_TIMEOUT_S}s)"
if timeout "$PULL_TIMEOUT_S" docker pull -q "$PULL_IMAGE" >/dev/null 2>&1; then
    docker tag "$PULL_IMAGE" "$FLOW_BASE_IMAGE"
    log "base image $FLOW_BASE_IMAGE tagged from $PULL_IMAGE"
    exit 0
fi
log "no registry answered: building $FLOW_BASE_IMAGE offline from Debian's archive"

trim_rootfs() {
    # Nothing here is needed to run python3; it halves the image.
    log "trimming $ROOTFS (apt lists and cache, docs, man pages, locales)"
    as_root find "$ROOTFS/var/lib/apt/lists" -mindepth 1 -delete 2>/dev/null || true
    as_root find "$ROOTFS/var/cache/apt" -mindepth 1 -delete 2>/dev/null || true
    as_root find "$ROOTFS/var/cache/debconf" -name '*-old' -delete 2>/dev/null || true
    as_root find "$ROOTFS/var/log" -type f -delete 2>/dev/null || true
    as_root rm -rf "$ROOTFS/usr/share/doc" "$ROOTFS/usr/share/man" "$ROOTFS/usr/share/info" \
        "$ROOTFS/usr/share/locale" "$ROOTFS/usr/share/i18n" "$ROOTFS/usr/share/lintian" \
        "$ROOTFS/usr/share/linda" "$ROOTFS/usr/lib/locale"
    as_root mkdir -p "$ROOTFS/usr/share/doc" "$ROOTFS/usr/share/man" "$ROOTFS/usr/share/locale"
}

if [ -f "$ROOTFS_MARKER" ] && [ -x "$ROOTFS/usr/bin/python3" ]; then
    log "reusing complete rootfs $ROOTFS"
else
    is_root || command -v sudo >/dev/null 2>&1 || die "building the base image offline needs root (debootstrap)"
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    as_root rm -f "$ROOTFS_MARKER"
    if [ -e "$ROOTFS" ]; then
        log "removing incomplete rootfs $ROOTFS"
        as_root rm -rf --one-file-system "$ROOTFS"
    fi
    as_root mkdir -p "$FLOW_CACHE_ROOT" "$FLOW_LOG_ROOT"
    log "debootstrap --variant=minbase --include=python3 bookworm $ROOTFS (~1 min, log $FLOW_LOG_ROOT/debootstrap.log)"
    started=$(date +%s)
    if ! as_root debootstrap --variant=minbase --include=python3 bookworm "$ROOTFS" "$DEBIAN_MIRROR" \
        >"$FLOW_LOG_ROOT/debootstrap.log" 2>&1; then
        tail -n 20 "$FLOW_LOG_ROOT/debootstrap.log" >&2 || true
        die "debootstrap failed (log $FLOW_LOG_ROOT/debootstrap.log)"
    fi
    as_root touch "$ROOTFS_MARKER"
    log "debootstrap done in $(( $(date +%s) - started ))s"
fi

[ -x "$ROOTFS/usr/bin/python3" ] || die "$ROOTFS has no usr/bin/python3"
trim_rootfs

log "docker import $ROOTFS -> $FLOW_BASE_IMAGE"
# Device nodes, /proc and /sys are provided by the runtime; only the empty directories go in.
as_root tar --numeric-owner -C "$ROOTFS" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' --exclude='./tmp/*' \
    -c . | docker import -c 'CMD ["python3"]' -m "agentainer-flow base: debian bookworm minbase + python3" \
    - "$FLOW_BASE_IMAGE" >/dev/null
image_exists || die "docker import did not produce $FLOW_BASE_IMAGE"
log "base image $FLOW_BASE_IMAGE built ($(docker image inspect -f '{{.Size}}' "$FLOW_BASE_IMAGE" | awk '{printf "%d MB", $1/1000000}'))"
