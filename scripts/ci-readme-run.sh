#!/usr/bin/env bash
# The README's run command, from a fresh clone: clone this checkout's HEAD, run the command as
# the README writes it (in the debug profile, `--release` dropped, so that it reuses CI's
# build instead of compiling everything again), wait for /healthz on the address the README
# names, and stop it with SIGTERM. `cargo run` once failed on a fresh clone because the
# workspace has three binaries while every test passed; this is the check that notices.
# Then the README's example session (the block after `<!-- readme-session -->`) runs as
# written against that binary with the MQTT listener it asks for.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
command=$(scripts/readme-commands.sh run)
debug_command=${command/ --release/}
health=http://127.0.0.1:8080/healthz

for port in 8080 9091; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is taken on this machine: the README's run command cannot be checked" >&2
        exit 1
    fi
done

tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
git clone --quiet "$repo" "$tmp/clone"
cd "$tmp/clone"
echo "running \`$debug_command\` in a fresh clone of HEAD ($(git rev-parse --short HEAD))"
# Shares the checkout's target dir: dependencies are built already.
CARGO_TARGET_DIR="$repo/target" bash -c "exec $debug_command" >"$tmp/out.log" 2>&1 &
pid=$!
deadline=$((SECONDS + 600))
until curl -fsS --max-time 2 "$health" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "the README's run command exited before answering $health:" >&2
        cat "$tmp/out.log" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "no answer on $health within 600 s:" >&2
        tail -50 "$tmp/out.log" >&2
        exit 1
    fi
    sleep 1
done
echo "the server answers $health: $(curl -fsS "$health")"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
if [ "$status" -ne 0 ]; then
    echo "the server exited with status $status after SIGTERM:" >&2
    tail -20 "$tmp/out.log" >&2
    exit 1
fi
[ -d data ] || { echo "the server made no ./data in the clone" >&2; exit 1; }
echo "it stopped cleanly on SIGTERM and kept its data in ./data"

echo "running the README's example session"
if ! command -v jq >/dev/null; then
    apt-get install -y -qq jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq >/dev/null; }
fi
command -v mosquitto_pub >/dev/null || bash "$repo/scripts/setup-mqtt-clients.sh"
session=$(awk '/^<!-- readme-session -->$/ { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' "$repo/README.md")
[ -n "$session" ] || { echo "README has no block after <!-- readme-session -->" >&2; exit 1; }
"$repo/target/debug/unhidra" serve --data-dir "$tmp/session-data" \
    --mqtt-listen 127.0.0.1:1884 >"$tmp/session-server.log" 2>&1 &
pid=$!
deadline=$((SECONDS + 60))
until curl -fsS --max-time 2 "$health" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        echo "the server for the session did not start:" >&2
        cat "$tmp/session-server.log" >&2
        exit 1
    fi
    sleep 0.2
done
status=0
out=$(bash -euo pipefail -c "$session" 2>&1) || status=$?
echo "$out"
kill -TERM "$pid"; wait "$pid" || true; pid=
if [ "$status" -ne 0 ]; then
    echo "the README's session failed (status $status); server log:" >&2
    tail -30 "$tmp/session-server.log" >&2
    exit 1
fi
# The reading sent over MQTT is read back: one point, 21.5.
if ! echo "$out" | jq -se '[.[] | arrays | .[] | select(.count == 1 and .last == 21.5)] | length == 1' >/dev/null; then
    echo "the session did not read back the reading it sent" >&2
    exit 1
fi
echo "the README's session ran as written"
