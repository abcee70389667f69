#!/usr/bin/env bash
# The whole test suite on a fresh machine: install what the tests need, then run every test —
# the Rust workspace (the engine and the Python bindings' crate, built once with one set of
# dependency features), then the Python package's pytest suite (scripts/test-python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --data --test-env
cargo test --locked --workspace "$@"
scripts/test-python.sh
