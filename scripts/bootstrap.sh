#!/usr/bin/env bash
# Everything a checkout needs to run and test the stack, installed only when missing:
#   Debian packages  redis-server; docker.io when there is neither a dockerd nor an engine that answers;
#                    python3-venv when python3 cannot create a venv; chromium when no Chromium is found
#                    (the dashboard's browser tests drive it headless over the DevTools protocol)
#                    (debootstrap: ensure_base_image.sh, only when the base image must be built offline)
#   .venv            python3 -m venv, then pip install -c requirements.lock -e ./sdk -e '.[dev]' (skipped
#                    while the stamp .venv/.flow-installed is newer than pyproject.toml, sdk/pyproject.toml
#                    and requirements.lock and lists the same top-level packages)
#   Docker engine    scripts/ensure_docker.sh (reuses a running engine, else starts the project's dockerd)
#   base image       scripts/ensure_base_image.sh (agentainer-flow/python:3.11)
# Idempotent; a few seconds when everything is present.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
cd "$REPO_ROOT"

started=$(date +%s)
VENV="$REPO_ROOT/.venv"
STAMP="$VENV/.flow-installed"
PYTHON="${FLOW_PYTHON:-python3}"

# ------------------------------------------------------------------------------------- Debian packages
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install Python 3.11 or newer"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1); Agentainer Flow needs Python >= 3.11 (set FLOW_PYTHON)"

packages=()
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
if ! command -v dockerd >/dev/null 2>&1 && ! command -v docker >/dev/null 2>&1; then
    packages+=(docker.io)
elif ! command -v dockerd >/dev/null 2>&1 && ! { load_docker_host; docker_answers; }; then
    packages+=(docker.io)
fi
if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    packages+=(python3-venv)
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
    && ! command -v google-chrome >/dev/null 2>&1; then
    packages+=(chromium)
fi
if [ "${#packages[@]}" -gt 0 ]; then
    apt_install "${packages[@]}"
else
    log "Debian packages present (redis-server, docker, chromium)"
fi

# ----------------------------------------------------------------------------------------------- venv
if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv .venv ($("$PYTHON" -V 2>&1))"
    "$PYTHON" -m venv "$VENV"
fi

# Editable installs map the packages that exist at install time: a package that gains its __init__.py
# later (a new service, the SDK) needs a reinstall, so the stamp records which packages there were.
packages_fingerprint() {
    (cd "$REPO_ROOT" && ls -1 ./*/__init__.py sdk/*/__init__.py 2>/dev/null | sort | tr '\n' ' ')
}

needs_pip=0
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$(packages_fingerprint)" ]; then
    needs_pip=1
else
    for f in "$REPO_ROOT/pyproject.toml" "$REPO_ROOT/sdk/pyproject.toml" "$REPO_ROOT/requirements.lock"; do
        if [ -f "$f" ] && [ "$f" -nt "$STAMP" ]; then
            needs_pip=1
        fi
    done
fi
if [ "$needs_pip" -eq 1 ]; then
    [ -f "$REPO_ROOT/sdk/pyproject.toml" ] || die "sdk/pyproject.toml is missing: the SDK cannot be installed"
    log "pip install -e ./sdk -e '.[dev]'"
    "$VENV/bin/python" -m pip install -q --progress-bar off --upgrade pip setuptools wheel
    # One resolver pass, so the local SDK satisfies the server's 'agentainer-flow' dependency.
    # requirements.lock (scripts/lock.sh) pins every third-party package to the tested version.
    constraints=()
    [ -f "$REPO_ROOT/requirements.lock" ] && constraints=(-c "$REPO_ROOT/requirements.lock")
    "$VENV/bin/python" -m pip install -q --progress-bar off "${constraints[@]}" \
        -e "$REPO_ROOT/sdk" -e "$REPO_ROOT[dev]"
    packages_fingerprint >"$STAMP"
else
    log "python packages up to date (stamp .venv/.flow-installed: same packages, newer than pyproject.toml files)"
fi

# ------------------------------------------------------------------------------ Docker engine and image
DOCKER_HOST="$("$REPO_ROOT/scripts/ensure_docker.sh")"
export DOCKER_HOST
"$REPO_ROOT/scripts/ensure_base_image.sh"

log "bootstrap done in $(( $(date +%s) - started ))s (DOCKER_HOST=$DOCKER_HOST)"
