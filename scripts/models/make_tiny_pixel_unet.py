#!/usr/bin/env python3
"""Builds models/tiny-pixel-unet: a tiny, RANDOMLY INITIALISED class-conditional pixel-space diffusers UNet2DModel
(28x28x1, 10 classes + null class 10 for classifier-free guidance), for tests. Same folder layout as the trained
Fashion-MNIST generator that training/export_unet.py writes to models/fashion-unet/:

  model_index.json                  DDIMPipeline(unet: UNet2DModel, scheduler: DDIMScheduler)
  discl.toml                        class names in class-label order (10 = null class)
  scheduler/scheduler_config.json   DDIMScheduler, linear betas 1e-4..0.02, 1000 steps, epsilon, steps_offset 0,
                                    timestep_spacing leading, clip_sample false, set_alpha_to_one false
  unet/config.json                  the UNet2DModel config (num_class_embeds 11)
  unet/model.onnx                   sample f32 [B,1,28,28], timestep i64 [B], class_labels i64 [B]
                                    -> out_sample f32 [B,1,28,28] (predicted noise); opset 17, dynamic batch

Run from the repository root:
    HF_HUB_OFFLINE=1 nice -n 10 .venv-export/bin/python scripts/models/make_tiny_pixel_unet.py
Checks the ONNX file against PyTorch in onnxruntime (batch 1, 2, 5; max abs diff must be < 1e-4).
"""
import argparse
import json
import os
import pathlib
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = pathlib.Path(__file__).resolve().parents[2]
NUM_CLASSES = 10
NULL_CLASS = 10
SEED = 0

README = """# tiny-pixel-unet: a tiny, randomly initialised class-conditional pixel-space UNet (for tests only)

RANDOM WEIGHTS (fixed seed): it generates noise-like images. Same layout as the trained Fashion-MNIST generator in
models/fashion-unet (training/export_unet.py): a diffusers UNet2DModel (28x28x1, channels (16, 32), one layer per
block, attention at the lower level, num_class_embeds 11 = classes 0-9 + null class 10 for classifier-free
guidance) exported with torch.onnx.export (TorchScript exporter, opset 17), plus a DDIMScheduler config (linear
betas 1e-4..0.02, 1000 steps, epsilon, steps_offset 0, timestep_spacing leading, clip_sample false,
set_alpha_to_one false).

unet/model.onnx: sample float32 [batch, 1, 28, 28] (pixels in [-1, 1]), timestep int64 [batch],
class_labels int64 [batch] -> out_sample float32 [batch, 1, 28, 28] (predicted noise).

Made by (from the repository root; deterministic, byte-identical ONNX file on rerun):

    python3 -m venv .venv-export && .venv-export/bin/pip install -r scripts/models/requirements-export.txt
    HF_HUB_OFFLINE=1 nice -n 10 .venv-export/bin/python scripts/models/make_tiny_pixel_unet.py
"""


def make_unet():
    import torch
    from diffusers import UNet2DModel
    torch.manual_seed(SEED)
    return UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8, num_class_embeds=NUM_CLASSES + 1).eval()


def make_scheduler():
    from diffusers import DDIMScheduler
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=0,
                         timestep_spacing="leading")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "models" / "tiny-pixel-unet"))
    args = ap.parse_args()

    import diffusers
    import numpy as np
    import onnxruntime as ort
    import torch
    torch.set_num_threads(1)

    class Wrapper(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, class_labels):
            return self.unet(sample, timestep, class_labels=class_labels, return_dict=False)[0]

    out = pathlib.Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    unet = make_unet()
    (out / "unet").mkdir(parents=True)
    unet.save_config(str(out / "unet"))
    make_scheduler().save_config(str(out / "scheduler"))
    classes = ["tshirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
    display = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    with open(out / "discl.toml", "w") as f:
        f.write("# discl's metadata for a class-conditional generator: class label i is classes[i];\n"
                "# label 10 (one past the last) is the null class used for classifier-free guidance.\n"
                'kind = "generator"\n'
                "classes = [" + ", ".join('"%s"' % c for c in classes) + "]\n"
                "display_names = [" + ", ".join('"%s"' % c for c in display) + "]\n")
    with open(out / "model_index.json", "w") as f:
        json.dump({"_class_name": "DDIMPipeline", "_diffusers_version": diffusers.__version__,
                   "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"]}, f, indent=2)
        f.write("\n")

    onnx_path = out / "unet" / "model.onnx"
    wrapper = Wrapper(unet).eval()
    dummy = (torch.zeros(2, 1, 28, 28), torch.tensor([999, 1], dtype=torch.int64),
             torch.tensor([0, NULL_CLASS], dtype=torch.int64))
    with torch.no_grad():
        torch.onnx.export(wrapper, dummy, str(onnx_path), dynamo=False, opset_version=17,
                          input_names=["sample", "timestep", "class_labels"], output_names=["out_sample"],
                          dynamic_axes={"sample": {0: "batch"}, "timestep": {0: "batch"},
                                        "class_labels": {0: "batch"}, "out_sample": {0: "batch"}})

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    for i in sess.get_inputs():
        print("input ", i.name, i.type, i.shape)
    for o in sess.get_outputs():
        print("output", o.name, o.type, o.shape)
    g = torch.Generator().manual_seed(0)
    max_diff = 0.0
    for b in (1, 2, 5):
        x = torch.randn(b, 1, 28, 28, generator=g)
        t = torch.randint(0, 1000, (b,), generator=g)
        c = torch.randint(0, NUM_CLASSES + 1, (b,), generator=g)
        (o,) = sess.run(["out_sample"], {"sample": x.numpy(), "timestep": t.numpy(), "class_labels": c.numpy()})
        with torch.no_grad():
            r = wrapper(x, t, c).numpy()
        assert o.shape == (b, 1, 28, 28)
        max_diff = max(max_diff, float(np.abs(o - r).max()))
    print(f"onnx vs torch max abs diff {max_diff:.2e}; parameters {sum(p.numel() for p in unet.parameters())}")
    if max_diff > 1e-4:
        sys.exit(f"ONNX mismatch {max_diff}")
    (out / "README.md").write_text(README)
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>10d}  {p.relative_to(out)}")


if __name__ == "__main__":
    main()
