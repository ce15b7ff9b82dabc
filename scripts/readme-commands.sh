#!/usr/bin/env bash
# Prints a command from the README's first section (before its first `---`), as written:
#   scripts/readme-commands.sh run    the first fenced block: the command that runs Unhidra
#   scripts/readme-commands.sh test   the second fenced block: the command that runs the tests
# .ci/run runs the test command from here, so the README cannot drift from what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    run) block=1 ;;
    test) block=2 ;;
    *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac
command=$(awk -v want="$block" '
    /^---$/ { exit }
    /^```/ { if (inside) { inside = 0; n++ } else { inside = 1 }; next }
    inside && n + 1 == want && NF { print }
' README.md)
if [ -z "$command" ] || [ "$(printf '%s\n' "$command" | wc -l)" -ne 1 ]; then
    echo "README's first section has no single-line command in fenced block $block" >&2
    exit 1
fi
printf '%s\n' "$command"
