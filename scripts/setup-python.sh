#!/usr/bin/env bash
# Creates .venv/ with exactly the pinned packages of tests/python/requirements.txt, or
# another venv from another pinned file: `setup-python.sh REQUIREMENTS VENV`.
#
# Idempotent and fast when nothing changed: a stamp in .venv records the hash of the
# requirements and the interpreter's version; when either differs (or the venv is broken),
# the venv is rebuilt from scratch, so it never keeps packages the file no longer lists.
# Quiet on success; pip's own errors, and a message naming the step, on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements="${1:-tests/python/requirements.txt}"
venv="${2:-.venv}"
stamp="$venv/.requirements-stamp"
python="${PYTHON:-python3}"

fail() {
    echo "setup-python.sh: $*" >&2
    exit 1
}

command -v "$python" >/dev/null || fail "no $python on PATH (Python 3.11 is expected)"
[ -f "$requirements" ] || fail "$requirements is missing"

# What the venv must match: the requirements file and the interpreter that builds it.
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
want="$want $("$python" -c 'import sys; print(sys.version)' | head -n1)"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c '' 2>/dev/null \
    && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

rm -f "$stamp"
"$python" -m venv --clear "$venv" || fail "creating the virtualenv $venv failed"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-virtualenv \
    --no-deps --requirement "$requirements" \
    || fail "installing $requirements failed (see pip's output above)"
# --no-deps means a dependency missing from the file would only show up at import time;
# pip check names it now.
"$venv/bin/python" -m pip check --disable-pip-version-check >/dev/null \
    || { "$venv/bin/python" -m pip check --disable-pip-version-check >&2 || true;
         fail "$requirements does not pin every dependency"; }
echo "$want" >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
echo "setup-python.sh: installed $requirements into $venv"
