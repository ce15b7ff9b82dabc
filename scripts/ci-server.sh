# Sourced (not run) by the CI scripts that test a running server from outside
# (ci-schemathesis.sh, ci-prometheus.sh). Bash only.
#
#   start_server WORKDIR   starts target/debug/unhidra (or $UNHIDRA_BIN) with WORKDIR/config.toml
#                          and a fresh data dir WORKDIR/data, the API and the metrics listener on
#                          loopback port 0, at most 20,000 open files; sets SERVER_PID, API_URL
#                          and METRICS_URL once the store answers /readyz.
#   stop_server            SIGTERM, then waits (20 s at most) for a clean exit; fails otherwise.
#   api METHOD PATH [JSON] [TOKEN]   curl against API_URL; prints the body, fails on >= 400.
#
# The server's log is WORKDIR/server.log (JSON lines); it is printed when start or stop fails.

SERVER_PID=""
API_URL=""
METRICS_URL=""
SERVER_LOG=""

# The address a JSON log line with this message names, if it was logged yet.
_logged_addr() {
    python3 - "$SERVER_LOG" "$1" <<'PY'
import json, sys
path, message = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8", errors="replace") as log:
    for line in log:
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if fields.get("message") == message and "addr" in fields:
            print(fields["addr"])
            break
PY
}

start_server() {
    local dir="$1"
    local bin="${UNHIDRA_BIN:-$PWD/target/debug/unhidra}"
    SERVER_LOG="$dir/server.log"
    (
        ulimit -n 20000
        exec "$bin" serve --config "$dir/config.toml" --data-dir "$dir/data" \
            --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --log-format json
    ) >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local api="" metrics=""
    for _ in $(seq 1 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        [ -n "$api" ] || api=$(_logged_addr "API listening")
        [ -n "$metrics" ] || metrics=$(_logged_addr "metrics listening on /metrics")
        if [ -n "$api" ] && [ -n "$metrics" ] \
            && curl -fsS -o /dev/null "http://$api/readyz" 2>/dev/null; then
            API_URL="http://$api"
            METRICS_URL="http://$metrics/metrics"
            return 0
        fi
        sleep 0.1
    done
    echo "the server did not become ready; its log:" >&2
    cat "$SERVER_LOG" >&2
    return 1
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    local pid="$SERVER_PID"
    SERVER_PID=""
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "the server did not stop within 20 s of SIGTERM" >&2
        kill -KILL "$pid" 2>/dev/null || true
        return 1
    fi
    local status=0
    wait "$pid" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "the server exited with status $status; its log:" >&2
        cat "$SERVER_LOG" >&2
        return 1
    fi
}

api() {
    local method="$1" path="$2" json="${3:-}" token="${4:-}"
    local args=(-fsS -X "$method" "$API_URL$path")
    [ -z "$json" ] || args+=(-H 'Content-Type: application/json' --data "$json")
    [ -z "$token" ] || args+=(-H "Authorization: Bearer $token")
    curl "${args[@]}"
}
