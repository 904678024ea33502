# Helpers for the serve e2e tests (sourced): start `calpaca serve` on a free 127.0.0.1 port and
# stop it. Needs CALPACA and W (scratch dir) set.
#   start_server NAME ARGS...  → sets ${NAME}_PORT and ${NAME}_PID; log in $W/NAME.log
#   stop_server NAME           → SIGTERM, waits up to 10 s (then SIGKILL); sets ${NAME}_RC
declare -a SERVE_PIDS=()

start_server() {
    local name=$1; shift
    "$CALPACA" serve --host 127.0.0.1 --port 0 "$@" >"$W/$name.log" 2>&1 </dev/null &
    local pid=$! port=""
    SERVE_PIDS+=("$pid")
    for _ in $(seq 1 200); do   # at most 20 s
        port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$W/$name.log" 2>/dev/null | grep -o '[0-9]*$' || true)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "FAIL: server $name did not start: $(tail -c 500 "$W/$name.log")"
        return 1
    fi
    printf -v "${name}_PORT" '%s' "$port"
    printf -v "${name}_PID" '%s' "$pid"
}

stop_server() {
    local name=$1 pidvar="${1}_PID" pid rc=0
    pid=${!pidvar:-}
    [ -z "$pid" ] && return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null; rc=137; fi
    wait "$pid" 2>/dev/null; [ $rc -eq 0 ] && rc=$?
    printf -v "${name}_RC" '%s' "$rc"
    printf -v "${name}_PID" '%s' ""
}

# kills every server this script started (for an EXIT trap)
stop_all_servers() {
    for pid in "${SERVE_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    return 0
}
