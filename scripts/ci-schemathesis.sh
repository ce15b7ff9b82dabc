#!/usr/bin/env bash
# schemathesis (tests/schemathesis: pinned requirements and the run's configuration) against
# the built binary: a fresh data dir, rate limits raised, an administrator with a device and a
# channel, every check over every operation of the served /api/v1/openapi.json, a fixed seed
# and bounded examples. Fails on any failure (a 5xx, an undocumented status, a response off
# its schema, a schema-valid request refused, a schema-violating one accepted, ...).
#
# Not fuzzed here: GET /ws (a WebSocket upgrade, which plain HTTP requests cannot complete;
# tests/api/ws.rs and the Autobahn suite cover it) and POST /api/v1/auth/logout-all, which
# would end the fuzzing user's session halfway: it runs alone, last, with its own user.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

bash scripts/setup-python.sh tests/schemathesis/requirements.txt .venv-schemathesis
cargo build -p unhidra --locked --quiet
bin="$PWD/target/debug/unhidra"
st="$PWD/.venv-schemathesis/bin/schemathesis"

# shellcheck source=scripts/ci-server.sh
source scripts/ci-server.sh
work=$(mktemp -d)
trap 'stop_server || true; rm -rf "$work"' EXIT

cat >"$work/config.toml" <<'TOML'
[rate_limits]
login_per_minute = 1000000
register_per_hour = 1000000
device_register_per_hour = 1000000

[ml]
enabled = false
TOML
password="schemathesis fuzzes the api $RANDOM$RANDOM"
printf '%s\n' "$password" | "$bin" admin create-user --admin --config "$work/config.toml" \
    --data-dir "$work/data" fuzzer >/dev/null
start_server "$work"

login() {
    api POST /api/v1/auth/login "{\"username\":\"$1\",\"password\":\"$password\"}" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }

# What the routes need to reach past their 404s (tests/schemathesis/schemathesis.toml names
# where each goes): a device and its key, a channel with messages, a file, another user.
UNHIDRA_ST_TOKEN=$(login fuzzer)
device=$(api POST /api/v1/devices '{"name":"fuzz meter","kind":"esp32"}' "$UNHIDRA_ST_TOKEN")
UNHIDRA_ST_DEVICE=$(field device_id <<<"$device")
UNHIDRA_ST_DEVICE_KEY=$(field api_key <<<"$device")
UNHIDRA_ST_CHANNEL=$(api POST /api/v1/channels '{"name":"fuzz-room"}' "$UNHIDRA_ST_TOKEN" | field id)
UNHIDRA_ST_FILE=$(curl -fsS -X POST "$API_URL/api/v1/channels/$UNHIDRA_ST_CHANNEL/files?name=notes.txt" \
    -H "Authorization: Bearer $UNHIDRA_ST_TOKEN" -H 'Content-Type: text/plain' --data 'notes' | field id)
UNHIDRA_ST_USER=$(api POST /api/v1/auth/register \
    "{\"username\":\"other\",\"password\":\"$password\"}" | field user_id)
bash scripts/setup-python.sh
mapfile -t messages < <(.venv/bin/python tests/schemathesis/seed_messages.py \
    "ws://${API_URL#http://}/ws" "$UNHIDRA_ST_TOKEN" "$UNHIDRA_ST_CHANNEL" \
    "the message the fuzzer edits and reacts to" "the message the fuzzer deletes")
UNHIDRA_ST_MESSAGE=${messages[0]}
UNHIDRA_ST_DOOMED_MESSAGE=${messages[1]}
export UNHIDRA_ST_TOKEN UNHIDRA_ST_DEVICE_KEY UNHIDRA_ST_DEVICE UNHIDRA_ST_CHANNEL UNHIDRA_ST_FILE \
    UNHIDRA_ST_USER UNHIDRA_ST_MESSAGE UNHIDRA_ST_DOOMED_MESSAGE

run() {
    timeout --kill-after=10 300 "$st" --config-file tests/schemathesis/schemathesis.toml \
        run "$API_URL/api/v1/openapi.json" --no-color "$@"
}

echo "== schemathesis: every operation but GET /ws and logout-all"
run --exclude-path /ws --exclude-path /api/v1/auth/logout-all

echo "== schemathesis: logout-all, with a user of its own"
api POST /api/v1/auth/register "{\"username\":\"leaver\",\"password\":\"$password\"}" >/dev/null
UNHIDRA_ST_TOKEN=$(login leaver)
export UNHIDRA_ST_TOKEN
run --include-path /api/v1/auth/logout-all

stop_server
if grep -E '"level":"ERROR"|panicked' "$SERVER_LOG"; then
    echo "the server logged errors while fuzzed (above)" >&2
    exit 1
fi
echo "ci-schemathesis.sh: passed in $((SECONDS - start)) s"
