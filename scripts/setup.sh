#!/usr/bin/env bash
# Installs what discl needs on a fresh machine, from the package registries only; idempotent and
# quick when already done.
#   1. ONNX Runtime's shared library, taken from the PyPI wheel (checked by sha256) into vendor/.
#   2. With --data: Fashion-MNIST from Debian's dataset-fashion-mnist, and the long-tailed split
#      regenerated from it under data/ (checked bit for bit against scripts/data/fashion-split.digest).
set -euo pipefail
cd "$(dirname "$0")/.."

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

if [ "${1:-}" = "--data" ]; then
  if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    echo "setup: installing dataset-fashion-mnist from Debian" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  fi
  python3 scripts/data/split_fashion.py
fi
