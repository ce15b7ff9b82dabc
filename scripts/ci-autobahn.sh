#!/usr/bin/env bash
# WebSocket conformance: Autobahn|Testsuite's fuzzing client against the gateway's stack.
#
# 1. Installs wstest, idempotently: Autobahn|Testsuite runs on Python 2.7 only, which
#    Debian 12 no longer has, so python2.7 comes from Debian 11 (bullseye), pinned below
#    bookworm so it brings nothing else; pip 20.3.4 is bootstrapped from its wheel; the
#    packages of tests/autobahn/requirements.txt go into their own prefix ($AUTOBAHN_PREFIX,
#    /opt/unhidra-autobahn by default), reused while its stamp matches.
# 2. Builds and starts crates/server/examples/ws_echo.rs (the gateway's WebSocket settings
#    and read/close logic, echoing) on a free loopback port, with a 16 MiB message limit so
#    that case 9 runs whole.
# 3. Runs tests/autobahn/fuzzingclient.json (cases 1-7, 9, 10) and compares the report with
#    tests/autobahn/expected.json (tests/autobahn/compare.py): any FAILED case, or one rated
#    worse than committed, fails. The HTML report is in target/autobahn/report/.
#
# `scripts/ci-autobahn.sh --update` rewrites expected.json from the run instead.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="${AUTOBAHN_PREFIX:-/opt/unhidra-autobahn}"
requirements=tests/autobahn/requirements.txt
out=target/autobahn
max_message_bytes=$((16 * 1024 * 1024))
update=
[ "${1:-}" = "--update" ] && update=--update

fail() {
    echo "ci-autobahn.sh: $*" >&2
    exit 1
}

# Runs quietly; on failure prints what it said and stops.
quietly() {
    local log
    log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        fail "failed: $*"
    fi
    rm -f "$log"
}

install_python27() {
    [ -x /usr/bin/python2.7 ] && [ -f /usr/include/python2.7/Python.h ] && return
    [ "$(id -u)" -eq 0 ] || fail "installing python2.7 needs root (apt-get)"
    # The mirror this machine already uses for bookworm (not its security archive).
    local mirror
    mirror=$(awk 'BEGIN { RS = "" }
        /Suites:[^\n]*bookworm/ && !/security/ && match($0, /URIs: *[^ \n]+/) {
            uri = substr($0, RSTART, RLENGTH); sub(/URIs: */, "", uri); print uri; exit
        }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
        /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || fail "no Debian bookworm mirror found in /etc/apt to take bullseye from"
    echo "installing python2.7 from Debian 11 (bullseye, $mirror)"
    cat >/etc/apt/sources.list.d/unhidra-bullseye.sources <<EOF
Types: deb
URIs: $mirror
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Below bookworm's 500: only what bookworm lacks (python2.7 and its libraries) comes
    # from bullseye.
    cat >/etc/apt/preferences.d/unhidra-bullseye <<'EOF'
Package: *
Pin: release n=bullseye
Pin-Priority: 100
EOF
    quietly apt-get update
    # -dev and gcc: wsaccel (Autobahn's UTF-8 validator and masking) builds a C extension.
    quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python2.7 python2.7-dev gcc
}

install_wstest() {
    local want stamp wheels
    want="$(sha256sum "$requirements" | cut -d' ' -f1) $(/usr/bin/python2.7 -V 2>&1)"
    stamp="$prefix/.requirements-stamp"
    if [ -x "$prefix/bin/wstest" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    echo "installing Autobahn|Testsuite into $prefix"
    # Start afresh, but never wipe a directory this script did not make.
    if [ -e "$prefix" ] && [ ! -f "$prefix/.unhidra-autobahn" ]; then
        fail "$prefix exists and was not made by this script; set AUTOBAHN_PREFIX"
    fi
    rm -rf "$prefix"
    mkdir -p "$prefix"
    touch "$prefix/.unhidra-autobahn"
    wheels=$(mktemp -d)
    # pip for Python 2.7, fetched by Python 3's pip and run from its wheel to install itself.
    quietly python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version 2.7 --dest "$wheels" pip==20.3.4
    export PYTHONUSERBASE="$prefix"
    quietly /usr/bin/python2.7 "$wheels/pip-20.3.4-py2.py3-none-any.whl/pip" install \
        --user --no-warn-script-location "$wheels/pip-20.3.4-py2.py3-none-any.whl"
    rm -rf "$wheels"
    quietly /usr/bin/python2.7 -m pip install --user --no-warn-script-location \
        setuptools==44.1.1 wheel==0.37.1
    quietly /usr/bin/python2.7 -m pip install --user --no-warn-script-location \
        --requirement "$requirements"
    quietly /usr/bin/python2.7 -m pip check
    echo "$want" >"$stamp"
}

started=$SECONDS
install_python27
install_wstest
export PYTHONUSERBASE="$prefix"
echo "Autobahn|Testsuite ready in $((SECONDS - started)) s ($prefix)"

cargo build --quiet --locked -p unhidra-server --example ws_echo
rm -rf "$out"
mkdir -p "$out"

echo_pid=
cleanup() {
    if [ -n "$echo_pid" ] && kill -0 "$echo_pid" 2>/dev/null; then
        kill -TERM "$echo_pid" 2>/dev/null || true
        wait "$echo_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
target/debug/examples/ws_echo --listen 127.0.0.1:0 --max-message-bytes "$max_message_bytes" \
    >"$out/echo.log" 2>&1 &
echo_pid=$!
url=
for _ in $(seq 100); do
    url=$(sed -n 's/^listening on \(ws:[^ ]*\).*/\1/p' "$out/echo.log")
    [ -n "$url" ] && break
    kill -0 "$echo_pid" 2>/dev/null || { cat "$out/echo.log" >&2; fail "the echo exited"; }
    sleep 0.1
done
[ -n "$url" ] || fail "the echo did not say where it listens within 10 s"
echo "echo on $url (max message $max_message_bytes bytes)"

# The committed spec with the echo's address (and the report under target/).
python3 -c '
import json, sys
spec = json.load(sys.stdin)
spec["outdir"] = sys.argv[2]
spec["servers"][0]["url"] = sys.argv[1]
json.dump(spec, sys.stdout, indent=1)
' "$url" "$out/report" <tests/autobahn/fuzzingclient.json >"$out/spec.json"

run_started=$SECONDS
# 301 cases take about 30 s here; the bound stops a hung case from holding CI.
status=0
timeout --kill-after=10 600 "$prefix/bin/wstest" --mode fuzzingclient --spec "$out/spec.json" \
    >"$out/wstest.log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
    tail -n 30 "$out/wstest.log" >&2
    fail "wstest exited with $status (log: $out/wstest.log)"
fi
kill -0 "$echo_pid" 2>/dev/null || { cat "$out/echo.log" >&2; fail "the echo died during the run"; }
echo "wstest ran in $((SECONDS - run_started)) s"
python3 tests/autobahn/compare.py "$out/report/index.json" tests/autobahn/expected.json $update
