#!/usr/bin/env bash
# Prepares the browser end-to-end tests of tests/e2e: Debian's Chromium and the pinned
# playwright-core (no browser download: the tests drive /usr/bin/chromium).
#
# Idempotent and fast when nothing changed: apt runs only when /usr/bin/chromium is missing,
# and `npm ci` only when node_modules is missing or package-lock.json changed since the
# last install (a stamp in node_modules records the lock's hash and node's version).
set -euo pipefail
cd "$(dirname "$0")/.."

e2e=tests/e2e
stamp="$e2e/node_modules/.lock-stamp"

fail() {
    echo "setup-e2e.sh: $*" >&2
    exit 1
}

if [ ! -x /usr/bin/chromium ]; then
    command -v apt-get >/dev/null || fail "/usr/bin/chromium is missing and there is no apt-get"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq || fail "apt-get update failed"
    $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
        || fail "installing Debian's chromium failed"
    echo "setup-e2e.sh: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
fi

command -v node >/dev/null || fail "no node on PATH (Node 20 is expected)"
command -v npm >/dev/null || fail "no npm on PATH"
[ -f "$e2e/package-lock.json" ] || fail "$e2e/package-lock.json is missing"

want="$(sha256sum "$e2e/package-lock.json" | cut -d' ' -f1) $(node --version)"
if [ -d "$e2e/node_modules" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

# playwright-core never downloads a browser by itself; the variable makes sure of it.
(cd "$e2e" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) \
    || fail "npm ci in $e2e failed"
echo "$want" >"$stamp"
echo "setup-e2e.sh: installed $e2e/package-lock.json into $e2e/node_modules"
