#!/usr/bin/env bash
# Fuzzing: every target in fuzz/ (cargo-fuzz, libFuzzer) for a bounded time each.
#
# 1. Installs what it needs, idempotently: the nightly toolchain (rustup) and cargo-fuzz.
# 2. Builds every target once (address sanitizer, debug assertions, release optimisation).
# 3. Runs each for $FUZZ_SECONDS (60 by default) from its committed seeds (fuzz/corpus/<target>,
#    only read) into a scratch corpus (target/fuzz-corpus/<target>), with its dictionary
#    (fuzz/dict/<target>.dict) when there is one. A crash, a failed check or an input that runs
#    longer than 30 s fails the script; the input is in fuzz/artifacts/<target>/ and
#    `cargo +nightly fuzz fmt <target> <file>` shows it. Each finding becomes a regression test
#    beside the code it concerns, and its input a seed (fuzz/README.md).
#
# `scripts/ci-fuzz.sh <target>…` runs only those; FUZZ_SECONDS=600 runs longer.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
cargo_fuzz_version=0.13.2

fail() {
    echo "ci-fuzz.sh: $*" >&2
    exit 1
}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "ci-fuzz.sh: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
    echo "ci-fuzz.sh: installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || fail "no fuzz targets"

start=$(date +%s)
cargo +nightly fuzz build
echo "ci-fuzz.sh: built ${#targets[@]} targets in $(($(date +%s) - start)) s"

scratch=../target/fuzz-corpus
for target in "${targets[@]}"; do
    [ -d "corpus/$target" ] || fail "$target has no committed seeds (corpus/$target)"
    mkdir -p "$scratch/$target"
    options=(-max_total_time="$seconds" -timeout=30 -rss_limit_mb=3072 -print_final_stats=1)
    # The server-based targets keep a running server between inputs: what it holds at exit is
    # not a leak.
    options+=(-detect_leaks=0)
    [ -f "dict/$target.dict" ] && options+=(-dict="dict/$target.dict")
    echo "== fuzz $target for ${seconds} s"
    log="$scratch/$target.log"
    if ! cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- "${options[@]}" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        fail "$target failed; the input is in fuzz/artifacts/$target/ (log: target/fuzz-corpus/$target.log)"
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)|^Done ' "$log" | tr '\n' ' '
    echo
done
echo "ci-fuzz.sh: ${#targets[@]} targets, ${seconds} s each, no crash ($(($(date +%s) - start)) s in all)"
