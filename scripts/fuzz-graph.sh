#!/usr/bin/env bash
# Fuzzes the graph compiler for SECONDS (default 600) with a release build of tests/fuzz_graph.rs,
# from seed SEED (default: the time): prints the execs, and writes any crashing or slow input to
# target/fuzz-graph/ (keep it under tests/fuzz/regressions/ once fixed).
#   scripts/fuzz-graph.sh [SECONDS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
DISCL_FUZZ_SECONDS="${1:-600}" DISCL_FUZZ_SEED="${2:-$(date +%s)}" \
  cargo test --release --locked --test fuzz_graph
