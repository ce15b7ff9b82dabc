#!/usr/bin/env bash
# Creates .venv-ml/ for the ML worker (ml-worker/, issue 6): exactly the pinned packages of
# ml-worker/requirements.txt and ml-worker/requirements-dev.txt, then the worker's own
# package (unhidra-ml-worker), installed as a regular (non-editable) package.
#
# Idempotent and fast when nothing changed: a stamp in .venv-ml records the hashes of the
# requirement files and the interpreter's version; when either differs (or the venv is
# broken), the venv is rebuilt from scratch, so it never keeps packages the files no longer
# list. A second stamp records a hash of the package's files (pyproject.toml, README.md,
# src/): when it differs, only the package is reinstalled.
# Quiet on success; pip's own errors, and a message naming the step, on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

worker=ml-worker
requirements=("$worker/requirements.txt" "$worker/requirements-dev.txt")
venv=.venv-ml
stamp="$venv/.requirements-stamp"
package_stamp="$venv/.package-stamp"
python="${PYTHON:-python3}"

fail() {
    echo "setup-ml.sh: $*" >&2
    exit 1
}

pip() {
    "$venv/bin/python" -m pip --disable-pip-version-check "$@"
}

check() {
    # --no-deps means a dependency missing from the files would only show up at import
    # time; pip check names it now.
    pip check >/dev/null || { pip check >&2 || true; fail "$1"; }
}

command -v "$python" >/dev/null || fail "no $python on PATH (Python 3.11 is expected)"
for file in "${requirements[@]}" "$worker/pyproject.toml" "$worker/README.md"; do
    [ -f "$file" ] || fail "$file is missing"
done

# What the venv must match: the requirement files and the interpreter that builds it.
want="$(sha256sum "${requirements[@]}" | cut -d' ' -f1 | tr '\n' ' ')"
want="$want$("$python" -c 'import sys; print(sys.version)' | head -n1)"

# What the installed package must match: its files, less what builds and runs leave.
package_files() {
    find "$worker/pyproject.toml" "$worker/README.md" "$worker/src" -type f \
        ! -path '*/__pycache__/*' ! -path '*.egg-info/*' ! -name '*.pyc' -print0 \
        | LC_ALL=C sort -z
}
want_package="$(package_files | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"

venv_ok=false
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c '' 2>/dev/null \
    && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    venv_ok=true
    if [ -f "$package_stamp" ] && [ "$(cat "$package_stamp")" = "$want_package" ]; then
        exit 0
    fi
fi

if [ "$venv_ok" = false ]; then
    rm -f "$stamp"
    "$python" -m venv --clear "$venv" || fail "creating the virtualenv $venv failed"
    for file in "${requirements[@]}"; do
        pip install --quiet --require-virtualenv --no-deps --requirement "$file" \
            || fail "installing $file failed (see pip's output above)"
    done
    check "${requirements[*]} do not pin every dependency"
    echo "$want" >"$stamp.tmp"
    mv "$stamp.tmp" "$stamp"
fi

# The package, built from a copy: a build in ml-worker/ would leave build/ and
# src/*.egg-info/ in the work tree.
rm -f "$package_stamp"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
cp -R "$worker/pyproject.toml" "$worker/README.md" "$worker/src" "$build/"
find "$build" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
pip install --quiet --require-virtualenv --no-deps --no-build-isolation --force-reinstall "$build" \
    || fail "installing the package in $worker failed (see pip's output above)"
check "the package in $worker needs a dependency that ${requirements[0]} does not pin"
echo "$want_package" >"$package_stamp.tmp"
mv "$package_stamp.tmp" "$package_stamp"
if [ "$venv_ok" = false ]; then
    echo "setup-ml.sh: installed ${requirements[*]} and the package in $worker into $venv"
else
    echo "setup-ml.sh: reinstalled the package in $worker into $venv"
fi
