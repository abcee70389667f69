#!/usr/bin/env python3
"""Makes tests/fixtures/tiny-sd-fp16: the four ONNX files of models/tiny-sd converted to float16 with ONNX Runtime's
own converter (`onnxruntime.transformers.float16.convert_float_to_float16`, inputs and outputs Float16 too), as an
fp16 export (optimum's `--dtype fp16`) lays them out. Only the ONNX files are kept: tests/fp16_export.rs puts them in
a copy of models/tiny-sd (configs, tokenizer) and checks the engine makes the images the float model makes, within
half precision.

    .venv-export/bin/python scripts/models/make_tiny_sd_fp16.py
"""
import pathlib

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16

REPO = pathlib.Path(__file__).resolve().parents[2]
PARTS = ("text_encoder", "unet", "vae_encoder", "vae_decoder")


def to_fp16(source, out):
    """Converts the ONNX file `source` (external data read beside it) to float16 at `out`: weights, inputs and
    outputs. A result over 1.8 GB keeps its weights in `model.onnx_data` beside it."""
    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > 1_800_000_000
    onnx.save(model, str(out), save_as_external_data=large, all_tensors_to_one_file=True,
              location="model.onnx_data")
    return model


def main():
    for part in PARTS:
        source = REPO / "models" / "tiny-sd" / part / "model.onnx"
        out = REPO / "tests" / "fixtures" / "tiny-sd-fp16" / part / "model.onnx"
        model = to_fp16(source, out)
        ins = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input]
        print(f"{out.relative_to(REPO)}: {out.stat().st_size} bytes, inputs {ins}")


if __name__ == "__main__":
    main()
