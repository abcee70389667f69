#!/usr/bin/env bash
# The whole test suite on a fresh machine: install what the tests need, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --data --test-env
cargo test --locked "$@"
