#!/usr/bin/env bash
# The stack's own redis-server: 127.0.0.1:${FLOW_REDIS_PORT:-6390}, AOF on, data in .flow/redis.
#
#   scripts/redis.sh start    start it (daemonized) unless it already answers; installs redis-server if missing
#   scripts/redis.sh stop     shut it down (SHUTDOWN, which also flushes the AOF)
#   scripts/redis.sh status   say whether it answers
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

PORT="${FLOW_REDIS_PORT:-6390}"
DATA_DIR="$FLOW_DIR/redis"
PIDFILE="$FLOW_DIR/redis.pid"
LOGFILE="$FLOW_DIR/logs/redis.log"

cli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
answers() { command -v redis-cli >/dev/null 2>&1 && [ "$(cli ping 2>/dev/null)" = "PONG" ]; }

cmd_start() {
    if answers; then
        log "redis answers on 127.0.0.1:$PORT"
        return 0
    fi
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    mkdir -p "$DATA_DIR" "$(dirname "$LOGFILE")"
    log "starting redis-server on 127.0.0.1:$PORT (AOF, dir .flow/redis, log .flow/logs/redis.log)"
    redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DATA_DIR" \
        --appendonly yes --daemonize yes --pidfile "$PIDFILE" --logfile "$LOGFILE" >/dev/null
    for _ in $(seq 1 100); do
        answers && return 0
        sleep 0.1
    done
    tail -n 20 "$LOGFILE" >&2 || true
    die "redis-server did not answer on 127.0.0.1:$PORT within 10s (log $LOGFILE)"
}

cmd_stop() {
    local pid
    # Only the server this checkout started: another clone's stack may use the same port.
    if [ ! -s "$PIDFILE" ] || ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        rm -f "$PIDFILE"
        if answers; then
            log "redis on 127.0.0.1:$PORT was not started by this checkout (no live .flow/redis.pid): left running"
        fi
        return 0
    fi
    pid="$(cat "$PIDFILE")"
    log "stopping redis pid $pid on 127.0.0.1:$PORT"
    cli shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "redis pid $pid still running after SHUTDOWN: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
}

cmd_status() {
    if answers; then
        echo "redis: up on 127.0.0.1:$PORT"
    else
        echo "redis: down (127.0.0.1:$PORT)"
        return 1
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
