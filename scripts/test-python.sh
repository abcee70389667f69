#!/usr/bin/env bash
# The Python package (python/): builds it with `pip install ./python` into a scratch virtual
# environment (.venv-python, made afresh) and runs its pytest suite (python/tests).
#
# The wheel is built with the dev profile the Rust tests use, in the same target folder, so after
# `cargo test --workspace` (scripts/test.sh) only the bindings are compiled and linked; run alone,
# it compiles the engine first. Needs Rust, python3 with venv, the registries (PyPI for the wheels
# and maturin, crates.io), and what `scripts/setup.sh --data --test-env` installs (vendor/ ONNX
# Runtime, the pinned wheels of scripts/requirements-test.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
venv=.venv-python
python="${PYTHON:-python3}"
"$python" -m venv --clear "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --only-binary=:all: -r scripts/requirements-test.txt -r scripts/requirements-python.txt
# maturin's PEP 517 backend takes cargo options from MATURIN_PEP517_ARGS.
MATURIN_PEP517_ARGS="--profile dev --locked" "${pip[@]}" install --quiet ./python
built=$(date +%s)
"${pip[@]}" check
# From the repository root (pipelines' relative paths); pytest, not `python -m pytest`, so the
# installed package is tested rather than the sources under python/.
"$venv/bin/pytest" -q -p no:cacheprovider python/tests "$@"
echo "test-python: built in $((built - started)) s, tested in $(($(date +%s) - built)) s" >&2
