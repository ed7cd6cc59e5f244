#!/usr/bin/env bash
# Build the examples' images (examples/*/Dockerfile) on top of the local base image, offline, and only
# when something changed.
#
#   scripts/build_example_images.sh          build what is missing or stale; print one reference per image
#   scripts/build_example_images.sh --list   print the references only (needs no engine)
#
# Each image is tagged agentainer-flow/<example>:<content tag> and :latest. The content tag is a hash of
# its build context (the Dockerfile, .dockerignore and steps/*.py), computed by examples/images.py, which
# the example definitions also use to name their image. The image is labelled with the id of the base
# image it was built on. When the content tag exists with the current base id, nothing is built: two
# `docker image inspect` calls and a `docker tag`.
#
# Nothing is fetched: the legacy builder (DOCKER_BUILDKIT=0, which resolves FROM in the local image
# store) with --network none and without --pull; FROM is the local base image that
# scripts/ensure_base_image.sh provides; the Dockerfiles only COPY and LABEL (no RUN).
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
cd "$REPO_ROOT"

BASE_LABEL="io.agentainer.flow.example.base"
CONTENT_LABEL="io.agentainer.flow.example.content"
if [ -x "$REPO_ROOT/.venv/bin/python" ]; then
    PYTHON="${FLOW_EXAMPLES_PYTHON:-$REPO_ROOT/.venv/bin/python}"
else
    PYTHON="${FLOW_EXAMPLES_PYTHON:-python3}"
fi

# One tab-separated line per image: repository, build context directory, reference, Dockerfile name
# (Dockerfile, or Dockerfile.<variant> for an example with several images: agentainer-flow/<example>-<variant>).
list_images() { "$PYTHON" "$REPO_ROOT/examples/images.py"; }

if [ "${1:-}" = "--list" ]; then
    list_images | cut -f3
    exit 0
elif [ -n "${1:-}" ]; then
    die "unknown argument '$1' (usage: $0 [--list])"
fi

load_docker_host
docker_answers || die "no Docker engine answers at ${DOCKER_HOST:-the default socket}: run scripts/ensure_docker.sh"
"$REPO_ROOT/scripts/ensure_base_image.sh"
base_id="$(docker image inspect -f '{{.Id}}' "$FLOW_BASE_IMAGE")"

# up_to_date REF: the image exists and was built on the current base image.
up_to_date() {
    local built_on
    built_on="$(docker image inspect -f "{{ index .Config.Labels \"$BASE_LABEL\" }}" "$1" 2>/dev/null </dev/null)" \
        || return 1
    [ "$built_on" = "$base_id" ]
}

locked=0
# Several processes (make demo, test sessions) may get here at once: one builds, the others wait.
take_lock() {
    [ "$locked" -eq 1 ] && return 0
    if is_root || [ -w "$FLOW_CACHE_ROOT" ] || [ -w "$(dirname "$FLOW_CACHE_ROOT")" ]; then
        mkdir -p "$FLOW_CACHE_ROOT"
        exec 9>"$FLOW_CACHE_ROOT/example-images.lock"
        flock -w 600 9 || die "timed out waiting for another build (lock $FLOW_CACHE_ROOT/example-images.lock)"
    fi
    locked=1
}

build() {
    local name="$1" dir="$2" ref="$3" dockerfile="$4" output started
    started=$(date +%s)
    log "building $ref from $FLOW_BASE_IMAGE (context ${dir#"$REPO_ROOT"/}, no network)"
    if ! output="$(DOCKER_BUILDKIT=0 docker build --quiet --network none \
        --build-arg "BASE_IMAGE=$FLOW_BASE_IMAGE" \
        --label "$BASE_LABEL=$base_id" --label "$CONTENT_LABEL=${ref##*:}" \
        --file "$dir/$dockerfile" --tag "$ref" --tag "$name:latest" "$dir" 2>&1 </dev/null)"; then
        printf '%s\n' "$output" >&2
        die "docker build of $ref failed"
    fi
    up_to_date "$ref" || die "docker build did not produce $ref on base $base_id"
    log "built $ref in $(( $(date +%s) - started ))s"
}

images="$(list_images)" || die "examples/images.py failed"
[ -n "$images" ] || { log "no examples/*/Dockerfile: nothing to build"; exit 0; }
while IFS=$'\t' read -r name dir ref dockerfile; do
    if up_to_date "$ref"; then
        log "$ref up to date"
    else
        take_lock
        if up_to_date "$ref"; then
            log "$ref built by another process"
        else
            build "$name" "$dir" "$ref" "$dockerfile"
        fi
    fi
    # :latest follows the checkout that ran last, for people typing image names by hand.
    docker tag "$ref" "$name:latest" </dev/null
    printf '%s\n' "$ref"
done <<<"$images"
