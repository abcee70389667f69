#!/usr/bin/env bash
# Installs what discl needs on a fresh machine, from the package registries only; idempotent and
# quick when already done.
#   1. ONNX Runtime's shared library, taken from the PyPI wheel (checked by sha256) into vendor/.
#   2. With --data: Fashion-MNIST from Debian's dataset-fashion-mnist, and the long-tailed split
#      regenerated from it under data/ (checked bit for bit against scripts/data/fashion-split.digest).
#   3. With --test-env: .venv-test (git-ignored), the Python the tests run (tests/suite/trainer_loop.rs), from
#      PyPI wheels pinned in scripts/requirements-test.txt; remade only when missing or when that file
#      changed (its sha256 is kept in .venv-test/requirements.sha256). PYTHON=... picks the interpreter
#      (default python3.11, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=0
TEST_ENV=0
for arg in "$@"; do
  case "$arg" in
    --data) DATA=1 ;;
    --test-env) TEST_ENV=1 ;;
    *) echo "usage: $0 [--data] [--test-env]" >&2; exit 2 ;;
  esac
done

ORT_VERSION=1.31.1
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
ORT_LIB=vendor/onnxruntime/libonnxruntime.so.$ORT_VERSION

if [ ! -f "$ORT_LIB" ]; then
  echo "setup: fetching ONNX Runtime $ORT_VERSION from PyPI" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 --platform manylinux_2_28_x86_64 -d "$tmp" "onnxruntime==$ORT_VERSION"
  wheel=$(ls "$tmp"/onnxruntime-*.whl)
  echo "$ORT_WHEEL_SHA256  $wheel" | sha256sum --check --quiet
  mkdir -p vendor/onnxruntime
  python3 - "$wheel" "$ORT_LIB" <<'PY'
import sys, zipfile, os
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("capi/libonnxruntime.so." + target.rsplit(".so.", 1)[1]))
    tmp = target + ".part"
    with z.open(name) as src, open(tmp, "wb") as dst:
        dst.write(src.read())
    os.replace(tmp, target)
PY
fi

if [ "$DATA" = 1 ]; then
  if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    echo "setup: installing dataset-fashion-mnist from Debian" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  fi
  python3 scripts/data/split_fashion.py
fi

if [ "$TEST_ENV" = 1 ]; then
  venv=.venv-test
  req=scripts/requirements-test.txt
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "pass" >/dev/null 2>&1 \
      || [ "$(cat "$venv/requirements.sha256" 2>/dev/null)" != "$want" ]; then
    python="${PYTHON:-}"
    if [ -z "$python" ]; then
      for c in python3.11 python3; do
        if command -v "$c" >/dev/null 2>&1; then python="$c"; break; fi
      done
    fi
    [ -n "$python" ] || { echo "setup: no python3.11 / python3 found (set PYTHON=...)" >&2; exit 1; }
    echo "setup: making $venv with $("$python" --version 2>&1) from $req" >&2
    rm -f "$venv/requirements.sha256"
    "$python" -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: -r "$req"
    "$venv/bin/python" -c "import numpy, pandas, pyarrow, onnxruntime, PIL"
    echo "$want" > "$venv/requirements.sha256"
  fi
fi
