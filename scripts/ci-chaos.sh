#!/usr/bin/env bash
# The chaos tests at CI's scale, time-boxed: the `chaos_*` tests of the binary's integration
# tests (crates/unhidra/tests/cli), which `cargo test` runs at a smaller scale.
#   chaos_sigkill  the server SIGKILLed 10 times under pipelined publishing
#   chaos_ml       the Python ML workers SIGKILLed in 6 rounds under load
#   chaos_disk     the data dir's file system full (tmpfs) and read-only (ext4, as root)
#   chaos_replay   a 200,000-message timeline replayed to a slow reader in bounded memory
# Installs what it needs (e2fsprogs, mount, the ML venv) when missing. The disk tests need
# root; under CI (CI=true or UNHIDRA_CI=1) a test that did not run is a failure.
# More: UNHIDRA_CHAOS_KILLS, UNHIDRA_CHAOS_ML_KILLS, UNHIDRA_CHAOS_REPLAY (e.g. 1000000).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
in_ci=false
if [ "${CI:-}" = true ] || [ "${UNHIDRA_CI:-}" = 1 ]; then in_ci=true; fi

if [ "$(id -u)" -ne 0 ]; then
    echo "ci-chaos.sh: not root: the full and read-only disk tests cannot mount a file system" >&2
    if $in_ci; then exit 1; fi
fi
missing=()
for tool in mkfs.ext4:e2fsprogs e2fsck:e2fsprogs mount:mount findmnt:util-linux; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash scripts/setup-ml.sh
export UNHIDRA_TEST_ML_PYTHON="$PWD/.venv-ml/bin/python"
export UNHIDRA_CHAOS_KILLS="${UNHIDRA_CHAOS_KILLS:-10}"
export UNHIDRA_CHAOS_ML_KILLS="${UNHIDRA_CHAOS_ML_KILLS:-6}"
export UNHIDRA_CHAOS_REPLAY="${UNHIDRA_CHAOS_REPLAY:-200000}"

mkdir -p target
log=target/ci-chaos.log
# One test at a time: each measures the server it runs (RSS, timings) on a 2-core machine.
status=0
timeout --kill-after=30 900 \
    cargo test -p unhidra --locked --test cli chaos_ -- --nocapture --test-threads 1 \
    2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
    [ "$status" -eq 124 ] && echo "ci-chaos.sh: the chaos tests ran over 900 s" >&2
    exit "$status"
fi
if grep -E '^test .* \.\.\. ignored' "$log"; then
    echo "ci-chaos.sh: chaos tests were ignored (see the reasons above)" >&2
    if $in_ci; then exit 1; fi
fi
# The figures each test printed.
grep -oE '(chaos (sigkill|ml|replay)|disk full|read-only): .*' "$log" || true
echo "ci-chaos.sh: done in $(($(date +%s) - started)) s"
