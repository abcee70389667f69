#!/usr/bin/env bash
# `discl validate` on generated graphs of 1,000 and 10,000 nodes (or the sizes given): prints
# the seconds for each, and the ratio per tenfold, which a linear compiler keeps near 10.
#   scripts/bench/validate-scale.sh [--bin PATH] [SIZES...]     (default: 1000 10000)
# The graph: one image-folder source, a chain of `sample` and `filter` nodes (each reading the
# one before, so the cycle check walks the deepest chain), a fan of nodes reading the source,
# and one sink reading the last node of the chain. No model is opened; only the compiler runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/release/discl
if [[ "${1:-}" == "--bin" ]]; then bin=$2; shift 2; fi
[[ -x "$bin" ]] || bin="${CARGO_TARGET_DIR:-target}/release/discl"
[[ -x "$bin" ]] || { echo "no discl binary (cargo build --release, or --bin PATH)" >&2; exit 2; }
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(1000 10000)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/images/a"

graph() { # graph NODES > file
  local n=$1 chain=$(( $1 / 2 )) i
  printf '[pipeline]\nname = "scale"\noutput = "%s/out"\n\n' "$work"
  printf '[nodes.n0]\nop = "source"\nformat = "image_folder"\npath = "%s/images"\n\n' "$work"
  for ((i = 1; i < n - 1; i++)); do
    local from="n$((i - 1))"
    ((i >= chain)) && from=n0
    if ((i % 2)); then
      printf '[nodes.n%d]\nop = "sample"\ninputs = ["%s"]\nfraction = 0.5\n\n' "$i" "$from"
    else
      printf '[nodes.n%d]\nop = "filter"\ninputs = ["%s"]\nfield = "label"\nnot_equals = "x"\n\n' "$i" "$from"
    fi
  done
  printf '[nodes.out]\nop = "sink"\ninputs = ["n%d"]\n' "$((chain - 1))"
}

previous=
for n in "${sizes[@]}"; do
  graph "$n" > "$work/g$n.toml"
  start=$(date +%s.%N)
  "$bin" validate "$work/g$n.toml" > /dev/null
  end=$(date +%s.%N)
  seconds=$(echo "$end - $start" | bc -l)
  line=$(printf '%6d nodes (%7d lines): %8.3f s' "$n" "$(wc -l < "$work/g$n.toml")" "$seconds")
  if [[ -n "$previous" ]]; then
    line+=$(printf '   (×%.1f for ×%.0f nodes)' "$(echo "$seconds / ${previous#*:}" | bc -l)" "$(echo "$n / ${previous%%:*}" | bc -l)")
  fi
  echo "$line"
  previous="$n:$seconds"
done
