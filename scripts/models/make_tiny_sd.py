#!/usr/bin/env python3
"""Builds models/tiny-sd: a tiny, RANDOMLY INITIALISED Stable-Diffusion-1.x-shaped pipeline, exported to ONNX with
optimum's own exporter, so the folder has exactly the layout `optimum-cli export onnx --task text-to-image` gives.
Its images are noise-like: it exists to test discl's SD code paths (tokenizer, text encoder, UNet, VAE, schedulers).

Run from the repository root (no network needed except `pip download` of the open_clip_torch wheel, for the real
CLIP BPE vocabulary, when --open-clip-wheel is not given):

    python3 -m venv .venv-export && .venv-export/bin/pip install -r scripts/models/requirements-export.txt
    HF_HUB_OFFLINE=1 nice -n 10 .venv-export/bin/python scripts/models/make_tiny_sd.py

Steps:
  1. vocab.json + merges.txt derived from open_clip's bpe_simple_vocab_16e6.txt.gz (exactly as OpenAI's CLIP
     SimpleTokenizer builds its vocabulary: 256 byte chars, their 256 `</w>` variants, the first 48,894 merges,
     <|startoftext|>, <|endoftext|> = 49,408 ids).
  2. CLIPTextModel (hidden 32, 2 layers, 2 heads, legacy eos_token_id 2 as SD 1.x), UNet2DConditionModel
     (channels (16, 32), cross-attention dim 32, latents 4x16x16), AutoencoderKL (channels (16, 32), latent factor 2,
     images 3x32x32, scaling_factor 0.18215), PNDMScheduler with SD 1.x's scheduler config; all seeded; saved as a
     diffusers StableDiffusionPipeline folder.
  3. optimum.exporters.onnx.main_export(task="text-to-image") of that folder into models/tiny-sd.
  4. Checks every ONNX file in onnxruntime against the PyTorch module (max abs diff printed, must be < 1e-4).
"""
import argparse
import gzip
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = pathlib.Path(__file__).resolve().parents[2]
OPEN_CLIP_VERSION = "3.3.0"
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"

SD15_SCHEDULER = {  # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (CompVis v1-4 is the same)
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
UNET_SAMPLE = 16   # latent side; images are 2x this (VAE with two blocks = one downsample)
# UNet and VAE channels. (32, 64) would be more SD-like but costs ~5.5 MB more; the text encoder's 49,408 x 32
# embedding table (6.3 MB) and the tokenizer files (1.6 MB) are already most of the folder.
CHANNELS = (16, 32)
NORM_GROUPS = 8
SEED = 0

README = """# tiny-sd: a tiny, randomly initialised Stable Diffusion 1.x-shaped ONNX pipeline (for tests only)

RANDOM WEIGHTS (fixed seeds): it generates noise-like images. It exists so discl's tests can run the real
Stable Diffusion code paths on an export with exactly the layout `optimum-cli export onnx --task text-to-image`
writes: CLIP tokenizer (the real 49,408-id CLIP BPE vocabulary, taken from open_clip_torch 3.3.0's
bpe_simple_vocab_16e6.txt.gz), CLIPTextModel (hidden 32, 2 layers, 2 heads, legacy eos_token_id 2),
UNet2DConditionModel (channels (16, 32), cross-attention dim 32, latents 4x16x16), AutoencoderKL (latent factor 2,
images 3x32x32, scaling_factor 0.18215) and SD 1.x's PNDM scheduler config. Exported by optimum 2.1.0 /
optimum-onnx 0.1.0 (TorchScript exporter, opset 18, IR 8, float32).

ONNX interfaces:
- text_encoder/model.onnx: input_ids int64 [batch_size, sequence_length] -> last_hidden_state float32
  [batch_size, sequence_length, 32], pooler_output float32 [batch_size, 32]
- unet/model.onnx: sample float32 [batch_size, 4, height, width], timestep float32 rank-0 scalar,
  encoder_hidden_states float32 [batch_size, sequence_length, 32] -> out_sample float32 [batch_size, 4, height, width]
- vae_encoder/model.onnx: sample float32 [batch_size, 3, H, W] -> latent_parameters float32 [batch_size, 8, H/2, W/2]
  (channels 0-3 mean, 4-7 log-variance)
- vae_decoder/model.onnx: latent_sample float32 [batch_size, 4, h, w] -> sample float32 [batch_size, 3, 2h, 2w]

Made by (from the repository root; deterministic, byte-identical ONNX files on rerun):

    python3 -m venv .venv-export && .venv-export/bin/pip install -r scripts/models/requirements-export.txt
    HF_HUB_OFFLINE=1 nice -n 10 .venv-export/bin/python scripts/models/make_tiny_sd.py
"""


def bytes_to_unicode():
    """OpenAI CLIP / GPT-2 reversible byte -> unicode-char table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def bpe_gz_bytes(wheel):
    if wheel is None:
        dl = tempfile.mkdtemp(prefix="open_clip_wheel_")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", dl,
                        f"open_clip_torch=={OPEN_CLIP_VERSION}"], check=True)
        wheel = next(pathlib.Path(dl).glob("open_clip_torch-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        data = z.read(BPE_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != BPE_SHA256:
        sys.exit(f"{BPE_MEMBER} in {wheel} has sha256 {digest}, expected {BPE_SHA256}")
    return data


def write_clip_vocab(gz, folder):
    """Writes vocab.json + merges.txt in Hugging Face CLIPTokenizer format."""
    lines = gzip.decompress(gz).decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]  # same slice as open_clip / OpenAI SimpleTokenizer
    assert len(merges) == 48894
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == 49408
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({tok: i for i, tok in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


def make_text_encoder():
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(SEED)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         projection_dim=32, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    return CLIPTextModel(cfg).eval()


def make_unet():
    import torch
    from diffusers import UNet2DConditionModel
    torch.manual_seed(SEED + 1)
    return UNet2DConditionModel(
        sample_size=UNET_SAMPLE, in_channels=4, out_channels=4, block_out_channels=CHANNELS, layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=NORM_GROUPS).eval()


def make_vae():
    import torch
    from diffusers import AutoencoderKL
    torch.manual_seed(SEED + 2)
    return AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=CHANNELS, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4, norm_num_groups=NORM_GROUPS,
        sample_size=2 * UNET_SAMPLE, scaling_factor=0.18215).eval()


def check_onnx(out, pipe):
    """Compares each exported ONNX file with the PyTorch module; prints names/dtypes/shapes."""
    import numpy as np
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = {n: ort.InferenceSession(str(out / n / "model.onnx"), so, providers=["CPUExecutionProvider"])
            for n in ("text_encoder", "unet", "vae_encoder", "vae_decoder")}
    for n, s in sess.items():
        for i in s.get_inputs():
            print(f"{n:13s} input  {i.name:22s} {i.type:14s} {i.shape}")
        for o in s.get_outputs():
            print(f"{n:13s} output {o.name:22s} {o.type:14s} {o.shape}")
    g = torch.Generator().manual_seed(123)
    diffs = {}
    with torch.no_grad():
        ids = pipe.tokenizer(["a photo of a coat", ""], padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt").input_ids
        te = sess["text_encoder"].run(None, {"input_ids": ids.numpy().astype(np.int64)})
        ref = pipe.text_encoder(ids)
        diffs["text_encoder"] = max(float(np.abs(te[0] - ref.last_hidden_state.numpy()).max()),
                                    float(np.abs(te[1] - ref.pooler_output.numpy()).max()))
        hs = torch.from_numpy(te[0])
        for b in (1, 2, 3):
            x = torch.randn(b, 4, UNET_SAMPLE, UNET_SAMPLE, generator=g)
            e = hs[torch.arange(b) % 2]
            t = torch.tensor(481.0)
            (o,) = sess["unet"].run(None, {"sample": x.numpy(), "timestep": t.numpy(),
                                           "encoder_hidden_states": e.numpy()})
            r = pipe.unet(x, t, encoder_hidden_states=e).sample.numpy()
            diffs["unet"] = max(diffs.get("unet", 0.0), float(np.abs(o - r).max()))
            img = torch.rand(b, 3, 2 * UNET_SAMPLE, 2 * UNET_SAMPLE, generator=g) * 2 - 1
            (o,) = sess["vae_encoder"].run(None, {"sample": img.numpy()})
            r = pipe.vae.encode(img).latent_dist
            diffs["vae_encoder"] = max(diffs.get("vae_encoder", 0.0),
                                       float(np.abs(o - torch.cat([r.mean, r.logvar], 1).numpy()).max()))
            (o,) = sess["vae_decoder"].run(None, {"latent_sample": x.numpy()})
            r = pipe.vae.decode(x).sample.numpy()
            diffs["vae_decoder"] = max(diffs.get("vae_decoder", 0.0), float(np.abs(o - r).max()))
    print("onnx vs torch max abs diff:", json.dumps(diffs))
    bad = {k: v for k, v in diffs.items() if v > 1e-4}
    if bad:
        sys.exit(f"ONNX mismatch {bad}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "models" / "tiny-sd"))
    ap.add_argument("--open-clip-wheel", help="local open_clip_torch wheel (default: pip download it)")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from optimum.exporters.onnx import main_export
    from transformers import CLIPTokenizer

    out = pathlib.Path(args.out)
    work = pathlib.Path(tempfile.mkdtemp(prefix="tiny_sd_"))
    try:
        tok_dir = work / "clip_vocab"
        tok_dir.mkdir()
        write_clip_vocab(bpe_gz_bytes(args.open_clip_wheel), tok_dir)
        tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
        ids = tokenizer("a photo of a cat").input_ids
        assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids

        pipe = StableDiffusionPipeline(
            vae=make_vae(), text_encoder=make_text_encoder(), tokenizer=tokenizer, unet=make_unet(),
            scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        # A relative source path keeps "_name_or_path" in the exported configs free of random temp-dir names.
        src = "tiny-sd-diffusers"
        pipe.save_pretrained(str(work / src), safe_serialization=True)

        if out.exists():
            shutil.rmtree(out)
        out = out.resolve()
        cwd = os.getcwd()
        os.chdir(work)
        try:
            main_export(model_name_or_path=src, output=str(out), task="text-to-image", local_files_only=True,
                        do_validation=True, device="cpu")
        finally:
            os.chdir(cwd)
        check_onnx(out, pipe)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    (out / "README.md").write_text(README)
    total = 0
    for p in sorted(out.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"{p.stat().st_size:>10d}  {p.relative_to(out)}")
    print(f"{total:>10d}  total")


if __name__ == "__main__":
    main()
