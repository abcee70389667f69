#!/usr/bin/env bash
# Creates or refreshes .venv-export (git-ignored), the Python environment of scripts/bench/peers.py and
# scripts/models/*.py, from scripts/models/requirements-export.txt. Idempotent: when every pinned package is already
# installed at its pinned version it changes nothing (and needs no network).
#
#   scripts/bench/setup-peers.sh            # create / bring up to date
#   scripts/bench/setup-peers.sh --force    # run pip install -r even when the pins look satisfied
#
# PYTHON=/path/to/python3.11 picks the interpreter for a new venv (default: python3.11, else python3).
# pip's own environment variables apply, e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu for the
# CPU-only torch wheel (torch 2.15.0+cpu satisfies the torch==2.15.0 pin; the PyPI wheel pulls ~5 GB of CUDA).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.venv-export"
req="$repo/scripts/models/requirements-export.txt"
force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

python="${PYTHON:-}"
if [ -z "$python" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1; then python="$c"; break; fi
  done
fi

# Prints what differs from the pins; exit status 0 when nothing does.
check() {
  "$venv/bin/python" - "$req" <<'EOF'
import importlib.metadata as md
import re
import sys

bad = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
    if not m:
        bad.append(f"{line} (not an exact pin)")
        continue
    name, want = m.groups()
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have is None or have.split("+")[0] != want:  # a local label (2.15.0+cpu) satisfies ==2.15.0
        bad.append(f"{name}=={want} (installed: {have})")
if sys.version_info[:2] != (3, 11):
    print(f"note: .venv-export runs Python {sys.version.split()[0]}; the pins were made for 3.11", file=sys.stderr)
if bad:
    print("not as pinned: " + ", ".join(bad))
    sys.exit(1)
EOF
}

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "pass" >/dev/null 2>&1; then
  [ -n "$python" ] || { echo "no python3.11 / python3 found (set PYTHON=...)" >&2; exit 1; }
  echo "creating $venv with $("$python" --version 2>&1)"
  "$python" -m venv --clear "$venv"
fi

if [ "$force" = 0 ] && check; then
  echo ".venv-export is up to date with scripts/models/requirements-export.txt"
  exit 0
fi

"$venv/bin/python" -m pip install -r "$req"
check
"$venv/bin/python" -c "import torch, diffusers, onnxruntime, optimum.onnxruntime" 2>/dev/null \
  || { echo "imports failed in $venv" >&2; exit 1; }
echo ".venv-export is ready"
