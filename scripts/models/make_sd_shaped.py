#!/usr/bin/env python3
"""Builds a RANDOMLY INITIALISED Stable-Diffusion-1.x-shaped pipeline at 512x512 and exports it in the folder layout
`optimum-cli export onnx --task text-to-image` writes (same file names, input/output names and dynamic axes), for
speed measurements on real SD shapes: CLIP text encoder (ViT-L/14 text tower: 768 wide, 12 layers, 77 tokens),
UNet2DConditionModel (64x64x4 latents, cross-attention 768), AutoencoderKL (512x512 images, factor 8) and SD 1.x's
PNDM scheduler config. Its images are noise: only speed and agreement between runtimes mean anything.

It exports with torch.onnx.export itself (TorchScript exporter, opset 17) rather than optimum, so it runs where
optimum cannot be installed (the GPU machine's image): it needs torch, transformers and diffusers only. The
tokenizer files are copied from models/tiny-sd (the real 49,408-id CLIP vocabulary).

Presets (--preset):
  sd15       the SD 1.5 UNet: channels (320, 640, 1280, 1280), 860M parameters, ~3.4 GB (external data)
  sd15-half  the same blocks at half width: channels (160, 320, 640, 640), ~215M parameters, ~0.9 GB
  small      channels (64, 128, 256, 256), text encoder 2 layers, VAE (64, 128, 256, 256): ~0.4 GB in all, for
             memory checks near issue 12's ~0.5 GB workload
  tiny       channels (32, 64, 64, 64), text encoder 2 layers, VAE (32, 64, 64, 64): a quick local smoke test

    python3 scripts/models/make_sd_shaped.py --preset sd15-half --out /tmp/sd-half
    python3 scripts/models/make_sd_shaped.py --preset sd15-half --image 64 --out /tmp/sd-half-64   # the CPU workload
    python3 scripts/models/make_sd_shaped.py --preset sd15-half --fp16 --out /tmp/sd-half-fp16      # an fp16 export
"""
import argparse
import json
import pathlib
import shutil
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}
PRESETS = {
    "sd15": dict(unet=(320, 640, 1280, 1280), vae=(128, 256, 512, 512), text_layers=12),
    "sd15-half": dict(unet=(160, 320, 640, 640), vae=(128, 256, 512, 512), text_layers=12),
    "small": dict(unet=(64, 128, 256, 256), vae=(64, 128, 256, 256), text_layers=2),
    "tiny": dict(unet=(32, 64, 64, 64), vae=(32, 64, 64, 64), text_layers=2),
}
IMAGE = 512
LATENT = IMAGE // 8
OPSET = 17


def set_image(side):
    global IMAGE, LATENT
    IMAGE, LATENT = side, side // 8


def build(preset, seed):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=preset["text_layers"],
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=0, eos_token_id=2, pad_token_id=1, attn_implementation="eager")).eval()
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, block_out_channels=preset["unet"], layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32).eval()
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=preset["vae"], layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
        norm_num_groups=32, sample_size=IMAGE, scaling_factor=0.18215).eval()
    return text, unet, vae


def export(module, args, path, inputs, outputs, axes):
    import torch
    path.parent.mkdir(parents=True, exist_ok=True)
    params = sum(p.numel() for p in module.parameters())
    started = time.time()
    kwargs = dict(input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=OPSET,
                  do_constant_folding=True)
    try:
        torch.onnx.export(module, args, str(path), dynamo=False, **kwargs)
    except Exception as e:  # a torch without the TorchScript exporter: its dynamo exporter takes the same names
        print(f"TorchScript export failed ({e}); trying dynamo=True", flush=True)
        torch.onnx.export(module, args, str(path), dynamo=True, external_data=params * 4 > 1_800_000_000, **kwargs)
    if params * 4 > 1_800_000_000:  # keep the protobuf under 2 GB: weights beside it, as optimum does
        import onnx
        model = onnx.load(str(path))
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx_data")
    print(f"{path.parent.name:13s} {params / 1e6:8.1f}M parameters, exported in {time.time() - started:5.1f} s",
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), default="sd15-half")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image", type=int, default=IMAGE,
                    help="the image side the configs declare and the export traces (a multiple of 64; the "
                         "files take any size, their spatial axes are dynamic)")
    ap.add_argument("--torch", action="store_true",
                    help="also save the PyTorch modules (diffusers/transformers layout) under OUT/torch, for the "
                         "diffusers peer of scripts/bench/compare.py")
    ap.add_argument("--fp16", action="store_true",
                    help="convert the four ONNX files to float16 (weights, inputs, outputs) with ONNX Runtime's "
                         "converter, as an fp16 export (optimum's --dtype fp16); needs the onnx package")
    a = ap.parse_args()
    if a.image % 64:
        sys.exit(f"--image {a.image}: not a multiple of 64")
    set_image(a.image)

    import torch

    out = pathlib.Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    text, unet, vae = build(PRESETS[a.preset], a.seed)

    class Text(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = text

        def forward(self, input_ids):
            o = self.m(input_ids=input_ids)
            return o.last_hidden_state, o.pooler_output

    class Unet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.m(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = vae

        def forward(self, sample):
            return self.m.encode(sample).latent_dist.parameters

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = vae

        def forward(self, latent_sample):
            return self.m.decode(latent_sample, return_dict=False)[0]

    with torch.no_grad():
        ids = torch.ones(2, 77, dtype=torch.int64)
        export(Text(), (ids,), out / "text_encoder" / "model.onnx", ["input_ids"],
               ["last_hidden_state", "pooler_output"],
               {"input_ids": {0: "batch_size", 1: "sequence_length"},
                "last_hidden_state": {0: "batch_size", 1: "sequence_length"}, "pooler_output": {0: "batch_size"}})
        export(Unet(), (torch.randn(2, 4, LATENT, LATENT), torch.tensor(481.0), torch.randn(2, 77, 768)),
               out / "unet" / "model.onnx", ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
               {"sample": {0: "batch_size", 2: "height", 3: "width"},
                "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
                "out_sample": {0: "batch_size", 2: "height", 3: "width"}})
        export(Encoder(), (torch.randn(1, 3, IMAGE, IMAGE),), out / "vae_encoder" / "model.onnx", ["sample"],
               ["latent_parameters"],
               {"sample": {0: "batch_size", 2: "sample_height", 3: "sample_width"},
                "latent_parameters": {0: "batch_size", 2: "sample_height / 8", 3: "sample_width / 8"}})
        export(Decoder(), (torch.randn(1, 4, LATENT, LATENT),), out / "vae_decoder" / "model.onnx",
               ["latent_sample"], ["sample"],
               {"latent_sample": {0: "batch_size", 2: "latent_height", 3: "latent_width"},
                "sample": {0: "batch_size", 2: "latent_height * 8", 3: "latent_width * 8"}})

    if a.fp16:
        sys.path.insert(0, str(pathlib.Path(__file__).parent))
        from make_tiny_sd_fp16 import to_fp16
        for part in ("text_encoder", "unet", "vae_encoder", "vae_decoder"):
            folder = out / part
            half = out / "fp16" / part
            to_fp16(folder / "model.onnx", half / "model.onnx")
            for old in ("model.onnx", "model.onnx_data"):
                (folder / old).unlink(missing_ok=True)
            for made in half.iterdir():
                made.rename(folder / made.name)
        shutil.rmtree(out / "fp16")
    unet.save_config(str(out / "unet"))
    for part in ("vae_encoder", "vae_decoder"):
        vae.save_config(str(out / part))
    text.config.to_json_file(str(out / "text_encoder" / "config.json"))
    shutil.copytree(REPO / "models" / "tiny-sd" / "tokenizer", out / "tokenizer")
    (out / "scheduler").mkdir()
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2))
    index = json.loads((REPO / "models" / "tiny-sd" / "model_index.json").read_text())
    index["_name_or_path"] = f"sd-shaped-{a.preset}"
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    (out / "README.md").write_text(f"Random-weight SD-1.x-shaped export, preset {a.preset}, seed {a.seed}, made by "
                                   "scripts/models/make_sd_shaped.py. For speed measurements only.\n")
    if a.torch:
        torch_dir = out / "torch"
        unet.save_pretrained(str(torch_dir / "unet"))
        vae.save_pretrained(str(torch_dir / "vae"))
        text.save_pretrained(str(torch_dir / "text_encoder"))
        shutil.copytree(out / "tokenizer", torch_dir / "tokenizer")
        shutil.copytree(out / "scheduler", torch_dir / "scheduler")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.0f} MB)")


if __name__ == "__main__":
    sys.exit(main())
