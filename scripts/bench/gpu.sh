#!/usr/bin/env bash
# The GPU generation check, on a machine with an NVIDIA GPU, PyTorch's CUDA 13 libraries (cuBLAS, cuDNN 9, cuFFT,
# cuRAND, NVRTC) in its python3, and no network. See scripts/bench/README.md, "On a GPU".
#
# What travels: ONNX Runtime's GPU build (libonnxruntime.so.1.31.1, libonnxruntime_providers_shared.so and
# libonnxruntime_providers_cuda.so from the onnxruntime-gpu==1.31.1 wheel, xz-compressed, in one tar split into
# parts under .gpu/p1 … .gpu/pN so each call stays under a transfer limit), a diffusers wheel (.gpu/p1) for the
# model script, and the stripped bench binary (benches/generate_device.rs) as .gpu/bin/generate_device.
#
#   scripts/bench/gpu.sh pack        here (PyPI reachable): fetch the wheels, build the bench, fill .gpu/
#   scripts/bench/gpu.sh stage K     append part K of the tar (call once per part, in order)
#   scripts/bench/gpu.sh prepare     install diffusers; start exporting the SD-shaped model in the background
#   scripts/bench/gpu.sh run         check and unpack the library, wait for the model, run the bench
# Everything lands in /tmp/discl-gpu; `run` copies its report to $OUT when that is set. FP16=1 (for pack and prepare)
# exports the model in float16 (make_sd_shaped.py --fp16, which needs the onnx and onnxruntime wheels pack adds).
set -uo pipefail
W=/tmp/discl-gpu
TAR_SHA256=${TAR_SHA256:-}
PRESET=${PRESET:-sd15-half}
FP16=${FP16:-}
mkdir -p "$W"

nvidia_libs() {
    python3 - <<'EOF'
import glob, os, site
dirs = set()
for root in site.getsitepackages():
    for lib in glob.glob(os.path.join(root, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
EOF
}

case "${1:-}" in
pack)
    set -e
    rm -rf .gpu "$W/pack" && mkdir -p .gpu/bin "$W/pack"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 -d "$W/pack" onnxruntime-gpu==1.31.1 diffusers
    python3 -c '
import glob, sys, zipfile
z = zipfile.ZipFile(glob.glob(sys.argv[1] + "/onnxruntime_gpu-*.whl")[0])
for name in ("libonnxruntime.so.1.31.1", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"):
    open(f"{sys.argv[1]}/{name}", "wb").write(z.read(f"onnxruntime/capi/{name}"))
' "$W/pack"
    (cd "$W/pack" && xz -6 -T2 -f libonnxruntime.so.1.31.1 libonnxruntime_providers_cuda.so &&
        tar cf ortgpu.tar libonnxruntime.so.1.31.1.xz libonnxruntime_providers_cuda.so.xz \
            libonnxruntime_providers_shared.so && sha256sum ortgpu.tar)
    split -b 36000000 -d -a 1 "$W/pack/ortgpu.tar" "$W/pack/ortgpu.part."
    k=1
    for part in "$W"/pack/ortgpu.part.*; do mkdir -p .gpu/p$k && mv "$part" .gpu/p$k/ && k=$((k + 1)); done
    cp "$W"/pack/diffusers-*.whl .gpu/p1/
    if [ -n "$FP16" ]; then
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 -d .gpu/p1 onnx onnxruntime==1.31.1
    fi
    cargo build --release --bench generate_device
    cp "$(ls -t target/release/deps/generate_device-* | grep -v '[.]d$' | head -1)" .gpu/bin/generate_device
    strip .gpu/bin/generate_device
    du -sh .gpu/*
    ;;
stage)
    cat .gpu/p"$2"/ortgpu.part.* >>"$W/ortgpu.tar"
    ls -l "$W/ortgpu.tar"
    ;;
prepare)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$W/site" .gpu/p1/*.whl
    setsid nohup env PYTHONPATH="$W/site" HF_HUB_OFFLINE=1 python3 scripts/models/make_sd_shaped.py \
        --preset "$PRESET" ${FP16:+--fp16} --out "$W/sd" >"$W/export.log" 2>&1 </dev/null &
    echo "export started"
    ;;
run)
    if [ -n "$TAR_SHA256" ]; then echo "$TAR_SHA256  $W/ortgpu.tar" | sha256sum -c || exit 1; fi
    mkdir -p "$W/lib" && tar xf "$W/ortgpu.tar" -C "$W/lib" || exit 1
    (cd "$W/lib" && for f in *.xz; do python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$f" "${f%.xz}" && rm "$f"; done)
    ls -l "$W/lib"
    for _ in $(seq 1 150); do grep -q '^wrote' "$W/export.log" && break; sleep 2; done
    cat "$W/export.log" | grep -v -i warn | tail -8
    export ORT_DYLIB_PATH="$W/lib/libonnxruntime.so.1.31.1"
    export LD_LIBRARY_PATH="$W/lib:$(nvidia_libs):${LD_LIBRARY_PATH:-}"
    export DISCL_BENCH_MODEL="$W/sd" DISCL_REPO="$PWD"
    report="${OUT:-$W}/gpu-bench.txt"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$report"
    .gpu/bin/generate_device 2>&1 | tee -a "$report"
    ;;
*)
    echo "usage: scripts/bench/gpu.sh stage K | prepare | run" >&2
    exit 2
    ;;
esac
