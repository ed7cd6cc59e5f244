#!/usr/bin/env bash
# The whole stack in the background: the four Procfile processes under scripts/supervise.py (which restarts
# a process that exits, where honcho stopped them all), plus redis and an engine.
#
#   scripts/stack.sh up       ensure the Docker engine and the stack's redis, write .flow/stack.env, start
#                             the supervisor (pid .flow/supervise.pid, log .flow/logs/stack.log), wait for the
#                             gateway (:8081/healthz) and the pool (:8090/healthz)
#   scripts/stack.sh down     stop the supervisor (SIGTERM, then SIGKILL), remove every container labelled
#                             io.agentainer.flow=1 of this stack's pool service (io.agentainer.flow.service=
#                             $FLOW_SERVICE_ID, default pool-1), stop the stack's redis. dockerd keeps running:
#                             it is shared machine infrastructure (scripts/ensure_docker.sh stop ends it).
#                             Containers of test sessions and other stacks on the same engine carry other
#                             service ids and are left alone; FLOW_DOWN_ALL=1 removes every flow container.
#   scripts/stack.sh status   what runs and what answers
#
# Environment: FLOW_REDIS_PORT (6390), FLOW_STACK_TIMEOUT_S (60), FLOW_SERVICE_ID (pool-1), FLOW_PROCESSES (the
# core count: worker and gateway processes, the gateways sharing :8081 with SO_REUSEPORT). Any FLOW_* variable set when calling
# `up` is passed to the processes, on top of .flow/stack.env.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
cd "$REPO_ROOT"

REDIS_PORT="${FLOW_REDIS_PORT:-6390}"
GATEWAY_URL="http://127.0.0.1:8081"
POOL_URL="http://127.0.0.1:8090"
SUPERVISOR_PIDFILE="$FLOW_DIR/supervise.pid"
LEGACY_PIDFILE="$FLOW_DIR/honcho.pid" # stacks started before the supervisor replaced honcho
STACK_LOG="$FLOW_DIR/logs/stack.log"
STACK_ENV="$FLOW_DIR/stack.env"
TIMEOUT_S="${FLOW_STACK_TIMEOUT_S:-60}"
# Workers and gateways per machine: one setting, the core count by default.
PROCESSES="${FLOW_PROCESSES:-$(nproc 2>/dev/null || echo 1)}"
case "$PROCESSES" in '' | *[!0-9]* | 0) die "FLOW_PROCESSES must be a positive integer, not '$PROCESSES'" ;; esac
PY="$REPO_ROOT/.venv/bin/python"
SERVICE_ID="${FLOW_SERVICE_ID:-pool-1}"

stack_pid() {
    local pid file
    for file in "$SUPERVISOR_PIDFILE" "$LEGACY_PIDFILE"; do
        [ -s "$file" ] || continue
        pid="$(cat "$file")"
        if kill -0 "$pid" 2>/dev/null; then
            printf '%s\n' "$pid"
            return 0
        fi
    done
    return 1
}

# healthy URL...: every URL answers 2xx right now.
healthy() {
    "$PY" - "$@" <<'EOF'
import sys
import urllib.request

for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status >= 300:
                sys.exit(1)
    except Exception:
        sys.exit(1)
EOF
}

write_env() {
    mkdir -p "$FLOW_DIR/logs"
    (umask 077 && : >"$STACK_ENV") # it may carry a caller's secrets (FLOW_POOL_TOKEN...)
    {
        echo "# Written by scripts/stack.sh up; read by scripts/supervise.py for every Procfile process."
        echo "FLOW_REDIS__URL=redis://127.0.0.1:$REDIS_PORT/0"
        echo "DOCKER_HOST=$DOCKER_HOST"
        echo "FLOW_DOCKER_HOST=$DOCKER_HOST"
        echo "FLOW_POOL__URL=$POOL_URL"
        echo "FLOW_SERVICE_ID=$SERVICE_ID"
        echo "PYTHONUNBUFFERED=1"
        [ "$PROCESSES" -gt 1 ] && echo "FLOW_REUSE_PORT=true"
        # A development stack lets trusted example steps use the host's network (the URL examples
        # fetch pages served on loopback). A production configuration leaves both unset: docs/security.md.
        echo "FLOW_POLICY__ALLOW_HOST_NETWORK=true"
        echo 'FLOW_POLICY__ALLOWED_NETWORKS=["none","host"]'
        [ -n "${DOCKER_API_VERSION:-}" ] && echo "DOCKER_API_VERSION=$DOCKER_API_VERSION"
        # Caller overrides last, so they win.
        env | grep -E '^FLOW_[A-Z0-9_]+=' | grep -v -E '^FLOW_(REDIS_PORT|STACK_TIMEOUT_S|PROCESSES)=' || true
    } >"$STACK_ENV"
}

cmd_up() {
    [ -x "$PY" ] || die ".venv/bin/python missing: run 'make bootstrap' first"
    DOCKER_HOST="$("$REPO_ROOT/scripts/ensure_docker.sh")"
    export DOCKER_HOST
    docker_answers || true # sets DOCKER_API_VERSION when the client needs it pinned
    FLOW_REDIS_PORT="$REDIS_PORT" "$REPO_ROOT/scripts/redis.sh" start

    local pid
    if pid="$(stack_pid)"; then
        log "stack already running (supervisor pid $pid)"
    else
        if healthy "$GATEWAY_URL/healthz" || healthy "$POOL_URL/healthz"; then
            die "something else answers on :8081 or :8090 (another checkout's stack?); stop it first"
        fi
        write_env
        printf '\n==== %s: stack up ====\n' "$(date -Is)" >>"$STACK_LOG"
        log "starting scripts/supervise.py -f Procfile -e .flow/stack.env (log .flow/logs/stack.log)"
        # Own session: `down` can signal the whole process group, and the stack outlives this shell.
        log "$PROCESSES worker and $PROCESSES gateway process(es) (FLOW_PROCESSES)"
        setsid "$PY" "$REPO_ROOT/scripts/supervise.py" -f Procfile -e "$STACK_ENV" \
            -c "worker=$PROCESSES" -c "gateway=$PROCESSES" >>"$STACK_LOG" 2>&1 </dev/null &
        echo $! >"$SUPERVISOR_PIDFILE"
    fi

    local deadline=$(( $(date +%s) + TIMEOUT_S ))
    until healthy "$GATEWAY_URL/healthz" "$POOL_URL/healthz"; do
        if ! stack_pid >/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
            echo "---- last 40 lines of .flow/logs/stack.log ----" >&2
            tail -n 40 "$STACK_LOG" >&2 || true
            stack_pid >/dev/null || die "the stack exited during start-up (see above)"
            die "gateway $GATEWAY_URL/healthz and pool $POOL_URL/healthz did not both answer within ${TIMEOUT_S}s"
        fi
        sleep 0.5
    done
    log "stack up: gateway $GATEWAY_URL, pool $POOL_URL, redis 127.0.0.1:$REDIS_PORT, engine $DOCKER_HOST"
}

stop_stack() {
    local pid deadline
    if ! pid="$(stack_pid)"; then
        rm -f "$SUPERVISOR_PIDFILE" "$LEGACY_PIDFILE"
        log "supervisor not running"
        return 0
    fi
    log "stopping supervisor pid $pid (SIGTERM; it stops every process)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + 20 ))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "still running after 20s: SIGKILL to its process group"
            break
        fi
        sleep 0.2
    done
    # Children that ignored the SIGTERM share the supervisor's process group (setsid at start).
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$SUPERVISOR_PIDFILE" "$LEGACY_PIDFILE"
}

# The containers `down` removes: this stack's pool service's, or with FLOW_DOWN_ALL=1 every flow container.
stack_container_filters() {
    if [ "${FLOW_DOWN_ALL:-0}" = "1" ]; then
        echo "--filter label=$FLOW_CONTAINER_LABEL"
    else
        echo "--filter label=$FLOW_CONTAINER_LABEL --filter label=io.agentainer.flow.service=$SERVICE_ID"
    fi
}

remove_containers() {
    load_docker_host
    if ! docker_answers; then
        log "no engine answers: no containers to remove"
        return 0
    fi
    local ids
    # shellcheck disable=SC2046
    ids="$(docker ps -aq $(stack_container_filters))"
    if [ -n "$ids" ]; then
        log "removing $(echo "$ids" | wc -l) container(s): $(stack_container_filters)"
        # shellcheck disable=SC2086
        docker rm -f $ids >/dev/null
    fi
}

cmd_down() {
    stop_stack
    remove_containers
    FLOW_REDIS_PORT="$REDIS_PORT" "$REPO_ROOT/scripts/redis.sh" stop
    log "stack down (dockerd left running: scripts/ensure_docker.sh stop ends it)"
}

cmd_status() {
    local pid rc=0
    if pid="$(stack_pid)"; then
        echo "supervisor: running (pid $pid)"
    else
        echo "supervisor: not running"
        rc=1
    fi
    if [ -x "$PY" ] && healthy "$GATEWAY_URL/healthz"; then echo "gateway: up ($GATEWAY_URL)"; else echo "gateway: down"; rc=1; fi
    if [ -x "$PY" ] && healthy "$POOL_URL/healthz"; then echo "pool: up ($POOL_URL)"; else echo "pool: down"; rc=1; fi
    FLOW_REDIS_PORT="$REDIS_PORT" "$REPO_ROOT/scripts/redis.sh" status || rc=1
    load_docker_host
    "$REPO_ROOT/scripts/ensure_docker.sh" status || rc=1
    if docker_answers; then
        # shellcheck disable=SC2046
        echo "containers of this stack (service $SERVICE_ID): $(docker ps -aq $(stack_container_filters) | wc -l)"
    fi
    return "$rc"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up|down|status" ;;
esac
