#!/usr/bin/env bash
# The main job on the shipped demo pipeline: long-tailed Fashion-MNIST → CNN scores → hard samples
# → guidance spectrum → quality filter → diverse-to-specific curriculum → stage manifests under
# out/fashion-lt/ → the built-in learner trained stage by stage (summary in
# out/fashion-lt/summary.json). Ends with the per-stage table and where the pictures are.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --data
cargo run --locked --release -- run pipelines/fashion-lt.toml --summary-json out/fashion-lt/summary.json "$@"
echo "contact sheets (one per stage): out/fashion-lt/report/stages/"
echo "quality histograms (one per level): out/fashion-lt/report/quality/"
echo "guidance spectra of the hardest images: out/fashion-lt/report/spectrum/"
echo "learner report and ONNX export: out/fashion-lt/learner/"
