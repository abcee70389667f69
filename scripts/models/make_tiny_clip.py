#!/usr/bin/env python3
"""Builds models/tiny-clip: a tiny, RANDOMLY INITIALISED CLIPModel exported to ONNX with optimum's own exporter
(`--task zero-shot-image-classification`), so the folder has exactly the layout a user's
`optimum-cli export onnx --model openai/clip-vit-base-patch32 --task zero-shot-image-classification` folder has:
one model.onnx (input_ids, pixel_values, attention_mask -> logits_per_image, logits_per_text, text_embeds,
image_embeds), config.json, preprocessor_config.json and the tokenizer files. Then writes the transformers
(PyTorch) reference tests/fixtures/clip_reference.json that discl's scorer must reproduce.

Run from the repository root (offline; needs models/tiny-sd/tokenizer, which holds the real CLIP BPE vocabulary):

    python3 -m venv .venv-export && .venv-export/bin/pip install -r scripts/models/requirements-export.txt
    HF_HUB_OFFLINE=1 nice -n 10 .venv-export/bin/python scripts/models/make_tiny_clip.py

Steps:
  1. A reduced CLIP vocabulary: the real CLIP BPE (models/tiny-sd/tokenizer) cut to its first MERGES merges: 256 byte
     chars, their 256 `</w>` variants, MERGES merged tokens, <|startoftext|>, <|endoftext|> = 4,096 ids. Tokenizing
     works exactly like CLIP's (same normaliser, split pattern, byte-level BPE); words simply split into more pieces.
     The full 49,408-id table would make the folder ~10 MB (embedding table 6.3 MB + tokenizer.json 2.2 MB + ...).
  2. CLIPModel (text: hidden 32, 2 layers, 2 heads, 77 positions, eos_token_id = <|endoftext|> so it pools at the
     first end-of-text token like modern CLIP configs; vision: hidden 32, 2 layers, 2 heads, 32x32 images, patch 8;
     projection 16), seeded, saved with a CLIPProcessor (slow CLIPImageProcessor: shortest edge 32, bicubic,
     centre crop 32, 1/255, OpenAI CLIP mean/std, convert to RGB; fast CLIPTokenizer -> tokenizer.json).
  3. optimum.exporters.onnx.main_export(task="zero-shot-image-classification") of that folder into models/tiny-clip.
  4. onnxruntime vs PyTorch on the fixture inputs (max abs diff printed, must be < 1e-4).
  5. tests/fixtures/clip_reference.json (see its "description"), including the fashion-judge reference and PIL's
     resampling of a generated RGB image with every convolution filter.
"""
import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = pathlib.Path(__file__).resolve().parents[2]
SD_TOKENIZER = REPO / "models" / "tiny-sd" / "tokenizer"
FIXTURE = REPO / "tests" / "fixtures" / "clip_reference.json"
RGB_IMAGE = REPO / "tests" / "fixtures" / "clip_rgb_50x41.png"
JUDGE = REPO / "models" / "fashion-judge"
MERGES = 4096 - 512 - 2
SEED = 0
SIDE = 32
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

PROMPTS = ["a photo of a coat", "a photo of a sneaker", "a photo of an ankle boot, on a white background"]
GREY_IMAGES = ["tests/fixtures/fashion-tiny/coat/test-0247.png", "tests/fixtures/fashion-tiny/sneaker/"]
RESAMPLE_SIZE = (17, 29)  # (width, height): shrinks the 50x41 image horizontally, stretches it vertically

README = """# tiny-clip: a tiny, randomly initialised CLIP exported for zero-shot image classification (for tests only)

RANDOM WEIGHTS (fixed seed): its scores mean nothing. It exists so discl's quality scorer can run on an export with
exactly the layout `optimum-cli export onnx --task zero-shot-image-classification` writes for a real CLIP:

- `model.onnx`: input_ids int64 [text_batch_size, sequence_length], pixel_values float32
  [batch_size, 3, 32, 32], attention_mask int64 [text_batch_size, sequence_length] -> logits_per_image
  [image_batch_size, text_batch_size], logits_per_text, text_embeds float32 [text_batch_size, 16], image_embeds
  float32 [image_batch_size, 16] (transformers' CLIPModel returns both embeddings already L2-normalised).
- `config.json` (CLIPModel: text hidden 32, 2 layers, 2 heads, 77 positions, eos_token_id 4095; vision hidden 32,
  2 layers, 2 heads, image 32, patch 8; projection 16), `preprocessor_config.json` (CLIPImageProcessor: shortest
  edge 32, bicubic, centre crop 32x32, rescale 1/255, OpenAI CLIP mean/std, convert to RGB) and the tokenizer
  files (tokenizer.json, vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json).
- The vocabulary is the real CLIP BPE cut to its first 3,582 merges (4,096 ids; <|startoftext|> 4094,
  <|endoftext|> 4095 = padding), to keep the folder small; tokenization rules are CLIP's.

Exported by optimum 2.1.0 / optimum-onnx 0.1.0 (TorchScript exporter, opset 18) from transformers 4.57.6.
tests/fixtures/clip_reference.json holds transformers' outputs for fixed images and prompts.

Made by (from the repository root; deterministic):

    python3 -m venv .venv-export && .venv-export/bin/pip install -r scripts/models/requirements-export.txt
    HF_HUB_OFFLINE=1 nice -n 10 .venv-export/bin/python scripts/models/make_tiny_clip.py
"""


def write_reduced_vocab(folder):
    """vocab.json + merges.txt: the real CLIP BPE (from models/tiny-sd/tokenizer) cut to its first MERGES merges."""
    full = json.loads((SD_TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    by_id = sorted(full, key=full.get)
    assert len(by_id) == 49408 and by_id[49406] == "<|startoftext|>" and by_id[49407] == "<|endoftext|>"
    lines = (SD_TOKENIZER / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("#version")
    merges = lines[1:1 + MERGES]
    vocab = by_id[:512 + MERGES] + ["<|startoftext|>", "<|endoftext|>"]
    known = set(vocab)
    for i, m in enumerate(merges):
        a, b = m.split()
        assert a in known and b in known and "".join((a, b)) == vocab[512 + i], (i, m)
    with open(folder / "vocab.json", "w", encoding="utf-8") as f:
        json.dump({tok: i for i, tok in enumerate(vocab)}, f, ensure_ascii=False)
    with open(folder / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def make_processor(vocab_dir):
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer, CLIPTokenizerFast

    slow = CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"), model_max_length=77)
    slow.save_pretrained(str(vocab_dir / "slow"))
    tokenizer = CLIPTokenizerFast.from_pretrained(str(vocab_dir / "slow"), from_slow=True)
    for p in PROMPTS:
        assert slow(p).input_ids == tokenizer(p).input_ids, p
    images = CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": SIDE}, resample=3, do_center_crop=True,
        crop_size={"height": SIDE, "width": SIDE}, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD, do_convert_rgb=True)
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def make_model(vocab_size, bos, eos):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(SEED)
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=16,
                bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_channels=3, image_size=SIDE, patch_size=8, hidden_act="quick_gelu", projection_dim=16)
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    return CLIPModel(cfg).eval()


def write_rgb_image():
    """A deterministic, non-square 50x41 RGB PNG (smooth gradients plus seeded noise)."""
    import numpy as np
    from PIL import Image

    h, w = 41, 50
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    noise = np.random.RandomState(SEED).randint(-40, 41, size=(h, w, 3))
    base = np.stack([255 * x / (w - 1), 255 * y / (h - 1), 127.5 + 127.5 * np.sin((x + 2 * y) / 5.0)], axis=-1)
    pixels = np.clip(np.rint(base + noise), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(RGB_IMAGE, optimize=False, compress_level=9)


def image_paths():
    paths = [GREY_IMAGES[0]]
    sneaker = sorted((REPO / GREY_IMAGES[1]).iterdir())[0]
    paths.append(str(sneaker.relative_to(REPO)))
    paths.append(str(RGB_IMAGE.relative_to(REPO)))
    return paths


def r7(values):
    return [round(float(v), 7) for v in values]


def cosines(a, b):
    import numpy as np

    a = a.astype(np.float64)
    b = b.astype(np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def onnx_session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def clip_reference(out, model, processor):
    """Runs transformers and onnxruntime on the fixture prompts and images; returns the fixture's CLIP part."""
    import numpy as np
    import torch
    from PIL import Image

    paths = image_paths()
    pil = [Image.open(REPO / p) for p in paths]
    ip = processor.image_processor
    # What the processor does before rescaling: RGB, shortest-edge bicubic resize, centre crop (uint8, exact).
    crops = []
    for im in pil:
        arr = np.array(im.convert("RGB"))
        arr = ip.resize(arr, size=ip.size, resample=ip.resample)
        resized = arr.shape[:2]
        arr = ip.center_crop(arr, size=ip.crop_size)
        crops.append({"resized_height_width": list(resized), "crop_rgb_hwc": arr.reshape(-1).tolist()})
    batch = processor(text=PROMPTS, images=pil, padding=True, return_tensors="pt")
    long = processor(text=PROMPTS, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        ref = model(input_ids=batch.input_ids, pixel_values=batch.pixel_values, attention_mask=batch.attention_mask)
        text_long = model.get_text_features(input_ids=long.input_ids, attention_mask=long.attention_mask)
        text_alone = torch.cat([model.get_text_features(**processor(text=[p], return_tensors="pt"))
                                for p in PROMPTS])
    text = ref.text_embeds.numpy()
    image = ref.image_embeds.numpy()
    norm = lambda t: (t / t.norm(dim=-1, keepdim=True)).numpy()
    sess = onnx_session(out / "model.onnx")
    for i in sess.get_inputs():
        print(f"input  {i.name:16s} {i.type:14s} {i.shape}")
    for o in sess.get_outputs():
        print(f"output {o.name:16s} {o.type:14s} {o.shape}")
    feeds = {"input_ids": batch.input_ids.numpy().astype(np.int64), "pixel_values": batch.pixel_values.numpy(),
             "attention_mask": batch.attention_mask.numpy().astype(np.int64)}
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, feeds)))
    diffs = {
        "text_embeds": float(np.abs(got["text_embeds"] - text).max()),
        "image_embeds": float(np.abs(got["image_embeds"] - image).max()),
        "logits_per_image": float(np.abs(got["logits_per_image"] - ref.logits_per_image.numpy()).max()),
    }
    print("onnx vs torch max abs diff:", json.dumps(diffs))
    if max(diffs.values()) > 1e-4:
        sys.exit(f"ONNX mismatch {diffs}")
    padding_diff = float(np.abs(norm(text_long) - text).max())
    alone_diff = float(np.abs(norm(text_alone) - text).max())
    print(f"text_embeds: padding max_length vs longest {padding_diff:.2e}; one prompt per call {alone_diff:.2e}")
    pv = batch.pixel_values.numpy()
    return {
        "model": "models/tiny-clip",
        "prompts": PROMPTS,
        "input_ids": batch.input_ids.tolist(),
        "attention_mask": batch.attention_mask.tolist(),
        "images": [{"path": p, "width_height": list(im.size), "mode": im.mode, **c,
                    "pixel_values": r7(pv[k].reshape(-1))} for k, (p, im, c) in enumerate(zip(paths, pil, crops))],
        "text_embeds": [r7(row) for row in text],
        "image_embeds": [r7(row) for row in image],
        "text_scores": [r7(row) for row in cosines(image, text)],
        "image_scores": [r7(row) for row in cosines(image, image)],
        "logit_scale": float(model.logit_scale.detach().exp()),
        "checks": {
            "onnx_vs_torch_max_abs_diff": diffs,
            "text_embeds_padding_max_length_vs_longest_max_abs_diff": padding_diff,
            "text_embeds_one_prompt_per_call_vs_batch_max_abs_diff": alone_diff,
        },
    }


def resample_reference():
    """PIL's resize of the generated RGB image to RESAMPLE_SIZE with each convolution filter, as uint8 HWC."""
    import numpy as np
    from PIL import Image

    im = Image.open(RGB_IMAGE)
    names = {1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
    return {
        "path": str(RGB_IMAGE.relative_to(REPO)),
        "width_height": list(RESAMPLE_SIZE),
        "filters": {str(code): {"name": name, "rgb_hwc": np.array(im.resize(RESAMPLE_SIZE, resample=code,
                                                                              reducing_gap=None)).reshape(-1).tolist()}
                    for code, name in names.items()},
    }


def judge_reference():
    """The shipped fashion-judge: onnxruntime image embeddings and numpy cosines against its text_embeds.json."""
    import numpy as np
    from PIL import Image

    table = json.loads((JUDGE / "text_embeds.json").read_text())
    text = np.array(table["embeds"], dtype=np.float32)
    paths = image_paths()[:2]
    x = np.stack([(np.array(Image.open(REPO / p).convert("L"), dtype=np.float32) / np.float32(255.0)
                   - np.float32(0.2860)) / np.float32(0.3530) for p in paths])[:, None]
    (image,) = onnx_session(JUDGE / "model.onnx").run(["image_embeds"], {"pixel_values": x})
    return {
        "model": "models/fashion-judge",
        "images": paths,
        "image_embeds": [r7(row) for row in image],
        "text_scores": [r7(row) for row in cosines(image, text)],
        "image_scores": [r7(row) for row in cosines(image, image)],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "models" / "tiny-clip"))
    args = ap.parse_args()

    import importlib.metadata

    import torch
    from optimum.exporters.onnx import main_export

    torch.set_num_threads(1)
    out = pathlib.Path(args.out)
    work = pathlib.Path(tempfile.mkdtemp(prefix="tiny_clip_"))
    try:
        vocab_dir = work / "vocab"
        vocab_dir.mkdir()
        vocab_size = write_reduced_vocab(vocab_dir)
        processor = make_processor(vocab_dir)
        tok = processor.tokenizer
        model = make_model(vocab_size, tok.bos_token_id, tok.eos_token_id)
        assert tok.pad_token_id == tok.eos_token_id == vocab_size - 1
        # A relative source path keeps "_name_or_path" in the exported config free of temp-dir names.
        src = "tiny-clip-transformers"
        model.save_pretrained(str(work / src), safe_serialization=True)
        processor.save_pretrained(str(work / src))
        if out.exists():
            shutil.rmtree(out)
        out = out.resolve()
        cwd = os.getcwd()
        os.chdir(work)
        try:
            main_export(model_name_or_path=src, output=str(out), task="zero-shot-image-classification",
                        local_files_only=True, do_validation=True, device="cpu")
        finally:
            os.chdir(cwd)
        write_rgb_image()
        doc = {
            "description": (
                "Reference for discl's quality scorer, written by scripts/models/make_tiny_clip.py. clip: "
                "transformers' CLIPProcessor (slow CLIPImageProcessor, PIL) and CLIPModel (PyTorch) on models/tiny-clip's "
                "weights; the prompts tokenized together with padding=True (pad to the longest, as the "
                "zero-shot-image-classification pipeline does for CLIP); crop_rgb_hwc = the uint8 RGB image after the "
                "shortest-edge resize and centre crop, before rescaling; pixel_values = the processor's CHW float "
                "output (rounded to 7 decimals); text_scores[i][j] = raw cosine(image i, prompt j), image_scores[i][k] "
                "= cosine(image i, image k), computed in float64 from the embeddings. resample: PIL Image.resize of "
                "the RGB image with each convolution filter (codes as preprocessor_config's resample). judge: "
                "onnxruntime's image_embeds of models/fashion-judge for the grey images ((x/255 - 0.2860)/0.3530) and "
                "numpy cosines against text_embeds.json, in label order."),
            "versions": {name: importlib.metadata.version(name)
                         for name in ("transformers", "torch", "optimum", "optimum-onnx", "onnxruntime", "pillow")},
            "clip": clip_reference(out, model, processor),
            "resample": resample_reference(),
            "judge": judge_reference(),
        }
        with open(FIXTURE, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=None, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
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
