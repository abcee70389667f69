#!/usr/bin/env python3
"""Export the current training checkpoint's EMA weights to the diffusers / optimum ONNX folder layout.

  OMP_NUM_THREADS=1 nice -n 10 .venv-train/bin/python training/export_unet.py [--ckpt PATH] [--out models/fashion-unet]

Writes:
  model_index.json                  DDIMPipeline(unet: UNet2DModel, scheduler: DDIMScheduler)
  scheduler/scheduler_config.json   DDIMScheduler with the training betas (linear 1e-4..0.02, 1000 steps)
  unet/config.json                  the UNet2DModel config (num_class_embeds = 11: classes 0..9, null class 10)
  unet/model.onnx                   sample f32 [B,1,28,28] (pixels in [-1,1]), timestep i64 [B],
                                    class_labels i64 [B] -> out_sample f32 [B,1,28,28] (predicted noise)
  export.json                       which checkpoint (step, CPU hours, sha256) was exported
Checks the ONNX file against PyTorch with onnxruntime (batch 1, 3, 8; max abs diff must be < 1e-4).
"""
import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import unet_common as uc  # noqa: E402


class OnnxUNet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, class_labels):
        return self.unet(sample, timestep, class_labels=class_labels, return_dict=False)[0]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=os.path.join(uc.train_dir(), "ckpt-last.pt"))
    ap.add_argument("--out", default=os.path.join(common.REPO, "models", "fashion-unet"))
    args = ap.parse_args()
    common.setup_threads(1)
    import diffusers

    st = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    unet = uc.make_unet()
    unet.load_state_dict(st["ema"])
    unet.eval()

    os.makedirs(os.path.join(args.out, "unet"), exist_ok=True)
    unet.save_config(os.path.join(args.out, "unet"))
    uc.make_ddim_scheduler().save_config(os.path.join(args.out, "scheduler"))
    with open(os.path.join(args.out, "discl.toml"), "w") as f:
        f.write("# discl's metadata for a class-conditional generator: class label i is classes[i];\n"
                "# label 10 (one past the last) is the null class used for classifier-free guidance.\n"
                'kind = "generator"\n'
                "classes = [" + ", ".join('"%s"' % c for c in common.CLASSES) + "]\n"
                "display_names = [" + ", ".join('"%s"' % c for c in common.DISPLAY) + "]\n")
    with open(os.path.join(args.out, "model_index.json"), "w") as f:
        json.dump({"_class_name": "DDIMPipeline", "_diffusers_version": diffusers.__version__,
                   "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"]}, f, indent=2)
        f.write("\n")

    onnx_path = os.path.join(args.out, "unet", "model.onnx")
    wrapper = OnnxUNet(unet).eval()
    dummy = (torch.zeros(2, 1, 28, 28), torch.tensor([999, 1], dtype=torch.int64),
             torch.tensor([0, uc.NULL_CLASS], dtype=torch.int64))
    with torch.no_grad():
        torch.onnx.export(wrapper, dummy, onnx_path, dynamo=False, opset_version=17,
                          input_names=["sample", "timestep", "class_labels"], output_names=["out_sample"],
                          dynamic_axes={"sample": {0: "batch"}, "timestep": {0: "batch"},
                                        "class_labels": {0: "batch"}, "out_sample": {0: "batch"}})

    sess = common.ort_session(onnx_path)
    for i in sess.get_inputs():
        print("input ", i.name, i.type, i.shape)
    for o in sess.get_outputs():
        print("output", o.name, o.type, o.shape)
    g = torch.Generator().manual_seed(0)
    max_diff = 0.0
    for b in (1, 3, 8, 70):
        x = torch.randn(b, 1, 28, 28, generator=g)
        t = torch.randint(0, uc.TRAIN_TIMESTEPS, (b,), generator=g)
        c = torch.randint(0, uc.NUM_CLASSES + 1, (b,), generator=g)
        (out,) = sess.run(["out_sample"], {"sample": x.numpy(), "timestep": t.numpy(), "class_labels": c.numpy()})
        with torch.no_grad():
            ref = wrapper(x, t, c).numpy()
        assert out.shape == (b, 1, 28, 28)
        max_diff = max(max_diff, float(np.abs(out - ref).max()))
    print(f"onnx vs torch max abs diff {max_diff:.2e}")
    if max_diff > 1e-4:
        sys.exit(f"ONNX mismatch {max_diff}")
    info = {"checkpoint": os.path.basename(args.ckpt), "checkpoint_sha256": sha256_file(args.ckpt),
            "step": st["step"], "train_cpu_hours": round(st["cpu_seconds"] / 3600, 3), "weights": "EMA",
            "max_steps": st["args"]["max_steps"], "finished": st["step"] >= st["args"]["max_steps"],
            "ema_decay": st["args"]["ema"], "batch": st["args"]["batch"], "lr": st["args"]["lr"],
            "onnx_bytes": os.path.getsize(onnx_path), "onnx_max_abs_diff_vs_torch": max_diff,
            "parameters": sum(p.numel() for p in unet.parameters())}
    with open(os.path.join(args.out, "export.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
