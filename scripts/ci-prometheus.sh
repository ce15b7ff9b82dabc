#!/usr/bin/env bash
# Metrics hygiene against the built binary: `promtool check metrics` on /metrics of a fresh
# server and again after some traffic, then a real Prometheus (Debian's `prometheus`
# package, on loopback, a temporary storage dir) scrapes it, and its HTTP API must show the
# target up and the series dashboards use, the zero-initialised ones included.
# Time-boxed: each wait is bounded; the whole script takes about 20 s here.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
cargo build -p unhidra --locked --quiet

# shellcheck source=scripts/ci-server.sh
source scripts/ci-server.sh
work=$(mktemp -d)
prometheus_pid=""
cleanup() {
    if [ -n "$prometheus_pid" ]; then
        kill -TERM "$prometheus_pid" 2>/dev/null || true
        wait "$prometheus_pid" 2>/dev/null || true
    fi
    stop_server || true
    rm -rf "$work"
}
trap cleanup EXIT

printf '[ml]\nenabled = false\n' >"$work/config.toml"
start_server "$work"

echo "== promtool check metrics: a fresh server"
curl -fsS "$METRICS_URL" | promtool check metrics

# Some traffic, so that the histograms and labelled counters have samples.
password="prometheus scrapes this server $RANDOM"
api POST /api/v1/auth/register "{\"username\":\"watcher\",\"password\":\"$password\"}" >/dev/null
token=$(api POST /api/v1/auth/login "{\"username\":\"watcher\",\"password\":\"$password\"}" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
api POST /api/v1/devices '{"name":"meter"}' "$token" >/dev/null
curl -s -o /dev/null "$API_URL/api/v1/me"
curl -s -o /dev/null "$API_URL/no/such/route"

echo "== promtool check metrics: after traffic"
curl -fsS "$METRICS_URL" | promtool check metrics

echo "== a real Prometheus scrapes the server"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
metrics_target=${METRICS_URL#http://}
metrics_target=${metrics_target%/metrics}
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: unhidra
    static_configs:
      - targets: ["$metrics_target"]
YAML
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$port" >"$work/prometheus.log" 2>&1 &
prometheus_pid=$!

# The value of an instant query's first result, or nothing.
query() {
    curl -fsS --get "http://127.0.0.1:$port/api/v1/query" --data-urlencode "query=$1" 2>/dev/null \
        | python3 -c '
import json, sys
result = json.load(sys.stdin)["data"]["result"]
print(result[0]["value"][1] if result else "")' 2>/dev/null || true
}

up=""
for _ in $(seq 1 60); do
    up=$(query 'up{job="unhidra"}')
    [ "$up" = "1" ] && break
    sleep 0.5
done
if [ "$up" != "1" ]; then
    echo "Prometheus did not see the target up within 30 s; its log:" >&2
    cat "$work/prometheus.log" >&2
    exit 1
fi

status=0
# A query is retried for 5 s at most: rate() needs two scrapes in its window.
expect() {
    local q="$1" want="$2" got=""
    for _ in $(seq 1 10); do
        got=$(query "$q")
        [ "$got" = "$want" ] && break
        sleep 0.5
    done
    if [ "$got" = "$want" ]; then
        echo "ok: $q = $got"
    else
        echo "FAILED: $q = '${got}', expected $want" >&2
        status=1
    fi
}
expect 'gateway_rate_limit_hits_total{kind="message"}' 0
expect 'http_rate_limit_hits_total{limit="login"}' 0
expect 'auth_login_attempts_total{result="ok"}' 1
expect 'sum(http_request_duration_seconds_count{route="/api/v1/devices",status="201"})' 1
expect 'count(gateway_connections_active)' 1
# rate() over a series that exists at 0 is 0, not "no data".
expect 'sum(rate(gateway_rate_limit_hits_total[5s]))' 0
[ "$status" -eq 0 ] || exit 1

echo "ci-prometheus.sh: passed in $((SECONDS - start)) s"
