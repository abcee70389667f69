#!/usr/bin/env bash
# The main job on the shipped demo pipeline: long-tailed Fashion-MNIST → CNN scores → hard samples
# → guidance spectrum → quality filter → diverse-to-specific curriculum → stage manifests under
# out/fashion-lt/ (summary in out/fashion-lt/summary.json).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --data
cargo run --locked --release -- run pipelines/fashion-lt.toml --summary-json out/fashion-lt/summary.json "$@"
