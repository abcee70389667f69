#!/usr/bin/env python3
"""Peer side of discl's generation benchmark (benches/generate.rs): the same img2img workload run by
diffusers' PyTorch pipelines and by optimum's ONNX Runtime pipeline, on the same weights as models/tiny-sd and
models/tiny-pixel-unet. See scripts/bench/README.md.

Workload (fixed; the Rust side runs exactly the same): the first image (sorted by file name) of the first 8 classes
of tests/fixtures/fashion-tiny in label order; levels λ ∈ {0.3, 0.5, 0.7} (strength 1 − λ: 0.7, 0.5, 0.3, i.e. 14,
10 and 6 of 20 DDIM steps); 2 seeds per (image, level) → 48 images; 20 inference steps; guidance scale 3.0 on an
[uncond, cond] batch; DDIMScheduler.from_config(the model's scheduler_config.json), eta 0.
- tiny-sd: image → RGB, resized to 32×32 (PIL bilinear), [-1, 1]; prompt "a photo of a {display name}", negative "".
- tiny-pixel-unet: image 28×28 grey in [-1, 1]; class label = class index, null class 10.

Peers:
- diffusers-torch-per-image: one pipeline call per (image, λ, seed), batch 1, a torch.Generator per image.
  tiny-sd: diffusers' StableDiffusionImg2ImgPipeline built from the same weights (make_tiny_sd.py's builders).
  tiny-pixel-unet: diffusers has no img2img pipeline for UNet2DModel; the equivalent loop (set_timesteps,
  get_timesteps-style truncation, add_noise, UNet on [uncond, cond], guidance, step) on make_tiny_pixel_unet.py's
  UNet2DModel.
- plain-ort-loop: scripts/bench/plain_ort.py, the loop a user writes with onnxruntime and numpy alone (batch 1).
- optimum-ort (tiny-sd only): optimum's ORTStableDiffusionImg2ImgPipeline on models/tiny-sd (CPU, 1 intra-op
  thread), images of the same strength batched B at a time (lists of prompts and images, one generator per call),
  B ∈ {1, 2, 4, 8}.

Run from the repository root:
    nice -n 5 .venv-export/bin/python scripts/bench/peers.py [--rounds 3] [--quick] [--json OUT]
"""
import argparse

THREADS = 1  # torch and ONNX Runtime intra-op threads (--threads)
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "models"))
FIXTURE = REPO / "tests" / "fixtures" / "fashion-tiny"
SD_DIR = REPO / "models" / "tiny-sd"
PIX_DIR = REPO / "models" / "tiny-pixel-unet"

CLASSES = [("tshirt-top", "T-shirt/top"), ("trouser", "Trouser"), ("pullover", "Pullover"), ("dress", "Dress"),
           ("coat", "Coat"), ("sandal", "Sandal"), ("shirt", "Shirt"), ("sneaker", "Sneaker"), ("bag", "Bag"),
           ("ankle-boot", "Ankle boot")]  # label order
N_IMAGES = 8
LEVELS = [0.3, 0.5, 0.7]
SEEDS = 2
STEPS = 20
GUIDANCE = 3.0
NULL_CLASS = 10
ORT_BATCHES = [1, 2, 4, 8]
PROMPT = "a photo of a {}"


def strength_of(level):
    return round(1.0 - level, 6)


def denoise_steps(strength):
    """diffusers' get_timesteps: how many of the STEPS timesteps an img2img run at this strength makes."""
    return min(int(STEPS * strength), STEPS)


def workload_items():
    """The 48 items, ordered (level, image, seed), each with its source path, class and generator seed."""
    items = []
    for j, level in enumerate(LEVELS):
        for i, (folder, display) in enumerate(CLASSES[:N_IMAGES]):
            path = sorted((FIXTURE / folder).glob("*.png"))[0]
            for k in range(SEEDS):
                items.append({"level": level, "strength": strength_of(level), "label": i, "display": display,
                              "path": path, "prompt": PROMPT.format(display),
                              "seed": (i * len(LEVELS) + j) * SEEDS + k})
    return items


def workload_json():
    imgs = [str(sorted((FIXTURE / f).glob("*.png"))[0].relative_to(REPO)) for f, _ in CLASSES[:N_IMAGES]]
    return {
        "images": imgs, "labels": list(range(N_IMAGES)),
        "prompts": [PROMPT.format(d) for _, d in CLASSES[:N_IMAGES]], "negative_prompt": "",
        "levels": LEVELS, "strengths": [strength_of(v) for v in LEVELS],
        "denoise_steps_per_level": [denoise_steps(strength_of(v)) for v in LEVELS],
        "seeds_per_image_level": SEEDS, "total_images": N_IMAGES * len(LEVELS) * SEEDS,
        "num_inference_steps": STEPS, "guidance_scale": GUIDANCE, "scheduler": "DDIMScheduler (from_config), eta 0",
        "tiny-sd": {"image": "RGB 32x32 (PIL bilinear), [-1,1]", "latent": "4x16x16"},
        "tiny-pixel-unet": {"image": "grey 28x28, [-1,1]", "null_class": NULL_CLASS},
        "unet_calls_per_image_batch1": sum(denoise_steps(strength_of(v)) for v in LEVELS) / len(LEVELS),
    }


class CallLog:
    """Counts calls of a model (and the batch size and timestep of each) by wrapping the instance's forward/method."""

    def __init__(self):
        self.calls = Counter()   # name -> calls
        self.batches = {}        # name -> Counter(batch size)
        self.timesteps = []      # UNet timesteps, in call order

    def wrap(self, obj, attr, name, record_t=False):
        orig = getattr(obj, attr)
        self.batches[name] = Counter()

        def wrapped(*args, **kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            self.calls[name] += 1
            self.batches[name][int(x.shape[0])] += 1
            if record_t:
                t = args[1] if len(args) > 1 else kwargs.get("timestep")
                self.timesteps.append(float(t.reshape(-1)[0]) if hasattr(t, "reshape") else float(t))
            return orig(*args, **kwargs)

        setattr(obj, attr, wrapped)

    def reset(self):
        self.calls.clear()
        for c in self.batches.values():
            c.clear()
        self.timesteps.clear()

    def snapshot(self):
        return {"calls": dict(self.calls),
                "batch_sizes": {n: {str(b): c for b, c in sorted(v.items())} for n, v in self.batches.items()}}


def timesteps_by_run(ts):
    """Splits the UNet timestep log into runs (a run restarts when the timestep goes up)."""
    runs, cur = [], []
    for t in ts:
        if cur and t > cur[-1]:
            runs.append(cur)
            cur = []
        cur.append(int(t) if float(t).is_integer() else t)
    if cur:
        runs.append(cur)
    distinct = []
    for r in runs:
        if r not in distinct:
            distinct.append(r)
    return distinct


def measure(name, run_once, warmup, log, rounds, n_images):
    """warmup() once (excluded), then `rounds` timed run_once() calls. UNet calls are counted per round."""
    warmup()
    times, snap, ts = [], None, None
    for r in range(rounds):
        log.reset()
        t0 = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - t0)
        s = log.snapshot()
        if snap is not None and s != snap:
            raise RuntimeError(f"{name}: call counts differ between rounds: {snap} vs {s}")
        snap, ts = s, timesteps_by_run(log.timesteps)
    med = statistics.median(times)
    res = {"median_s": round(med, 4), "images_per_s": round(n_images / med, 3), "rounds_s": [round(t, 4) for t in times],
           "unet_calls": snap["calls"].get("unet", 0), "calls": snap["calls"], "batch_sizes": snap["batch_sizes"],
           "unet_timestep_runs": ts}
    print(f"  {name:34s} median {med:7.3f} s  {n_images / med:8.2f} images/s  {res['unet_calls']:4d} UNet calls  "
          f"(UNet batch sizes {snap['batch_sizes'].get('unet')}; rounds {', '.join(f'{t:.3f}' for t in times)})",
          flush=True)
    return res


# ---------------------------------------------------------------------------------------------------------- tiny-sd

def sd_image(path, size):
    from PIL import Image
    return Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)


def ddim_from(folder):
    from diffusers import DDIMScheduler
    return DDIMScheduler.from_config(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))


def build_torch_sd():
    import make_tiny_sd as mts
    from diffusers import StableDiffusionImg2ImgPipeline
    from transformers import CLIPTokenizer
    pipe = StableDiffusionImg2ImgPipeline(
        vae=mts.make_vae(), text_encoder=mts.make_text_encoder(),
        tokenizer=CLIPTokenizer.from_pretrained(str(SD_DIR / "tokenizer")), unet=mts.make_unet(),
        scheduler=ddim_from(SD_DIR), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    log = CallLog()
    log.wrap(pipe.unet, "forward", "unet", record_t=True)
    log.wrap(pipe.text_encoder, "forward", "text_encoder")
    log.wrap(pipe.vae, "encode", "vae_encoder")
    log.wrap(pipe.vae, "decode", "vae_decoder")
    return pipe, log


def build_ort_sd():
    import onnxruntime as ort
    from optimum.onnxruntime import ORTStableDiffusionImg2ImgPipeline
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    pipe = ORTStableDiffusionImg2ImgPipeline.from_pretrained(
        str(SD_DIR), export=False, provider="CPUExecutionProvider", session_options=so, scheduler=ddim_from(SD_DIR),
        local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    log = CallLog()
    log.wrap(pipe.unet, "forward", "unet", record_t=True)
    log.wrap(pipe.text_encoder, "forward", "text_encoder")
    log.wrap(pipe.vae_encoder, "forward", "vae_encoder")
    log.wrap(pipe.vae_decoder, "forward", "vae_decoder")
    return pipe, log


def sd_batches(items, batch, size):
    """Groups items of the same strength into calls of `batch` items: (strength, prompts, images, seed)."""
    out = []
    for level in LEVELS:
        same = [it for it in items if it["level"] == level]
        for s in range(0, len(same), batch):
            chunk = same[s:s + batch]
            out.append((chunk[0]["strength"], [it["prompt"] for it in chunk],
                        [sd_image(it["path"], size) for it in chunk], chunk[0]["seed"]))
    return out


def sd_call(pipe, strength, prompts, images, seed, output_type="pil"):
    import torch
    one = len(prompts) == 1
    return pipe(prompt=prompts[0] if one else prompts, image=images[0] if one else images, strength=strength,
                num_inference_steps=STEPS, guidance_scale=GUIDANCE, num_images_per_prompt=1, eta=0.0,
                generator=torch.Generator().manual_seed(seed), output_type=output_type).images


def sd_size():
    return json.loads((SD_DIR / "vae_encoder" / "config.json").read_text())["sample_size"]


# -------------------------------------------------------------------------------------------------- tiny-pixel-unet

def build_torch_pixel():
    import make_tiny_pixel_unet as mtp
    unet = mtp.make_unet()
    log = CallLog()
    log.wrap(unet, "forward", "unet", record_t=True)
    return unet, ddim_from(PIX_DIR), log


def pixel_image(path):
    import numpy as np
    import torch
    from PIL import Image
    a = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a)[None, None]


def pixel_img2img(unet, sched, image, label, strength, seed):
    """One image, the way StableDiffusionImg2ImgPipeline runs (get_timesteps, add_noise, CFG on [uncond, cond],
    scheduler.step with eta 0), in pixel space: returns a uint8 28x28 array."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sched.set_timesteps(STEPS)
        t_start = max(STEPS - denoise_steps(strength), 0)
        timesteps = sched.timesteps[t_start * sched.order:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(t_start * sched.order)
        noise = randn_tensor(image.shape, generator=g, dtype=image.dtype)
        x = sched.add_noise(image, noise, timesteps[:1])
        labels = torch.tensor([NULL_CLASS, label], dtype=torch.int64)
        for t in timesteps:
            inp = sched.scale_model_input(torch.cat([x, x]), t)
            eps_u, eps_c = unet(inp, t, class_labels=labels).sample.chunk(2)
            eps = eps_u + GUIDANCE * (eps_c - eps_u)
            x = sched.step(eps, t, x, eta=0.0, generator=g).prev_sample
        return ((x[0, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


# ------------------------------------------------------------------------------------------- the plain ORT loop

def measure_plain_sd(items, size, rounds, n):
    """scripts/bench/plain_ort.py on models/tiny-sd, batch 1; each round starts with no prompt or source encoded."""
    import plain_ort
    t0 = time.perf_counter()
    plain = plain_ort.PlainSd(SD_DIR, STEPS, GUIDANCE, THREADS)
    log = CallLog()
    for name in ("unet", "text_encoder", "vae_encoder", "vae_decoder"):
        log.wrap(plain, name, name, record_t=name == "unet")
    load = time.perf_counter() - t0
    images = {it["path"]: sd_image(it["path"], size) for it in items}

    def run(chosen):
        plain.prompts.clear()
        plain.sources.clear()
        return [plain.generate(images[it["path"]], it["path"], it["prompt"], it["strength"], it["seed"])
                for it in chosen]

    res = measure("plain-ort-loop (batch 1)", lambda: run(items), lambda: run(items[:1]), log, rounds, n)
    res["load_s"] = round(load, 3)
    return res


def measure_plain_pixel(items, rounds, n):
    """scripts/bench/plain_ort.py on models/tiny-pixel-unet, batch 1."""
    import plain_ort
    t0 = time.perf_counter()
    plain = plain_ort.PlainPixel(PIX_DIR, STEPS, GUIDANCE, NULL_CLASS, THREADS)
    log = CallLog()
    log.wrap(plain, "unet", "unet", record_t=True)
    load = time.perf_counter() - t0
    images = {it["path"]: pixel_image(it["path"]).numpy() for it in items}

    def run(chosen):
        return [plain.generate(images[it["path"]], it["label"], it["strength"], it["seed"]) for it in chosen]

    res = measure("plain-ort-loop (batch 1)", lambda: run(items), lambda: run(items[:1]), log, rounds, n)
    res["load_s"] = round(load, 3)
    return res


# ------------------------------------------------------------------------------------------------------------- main

def versions():
    v = {"python": platform.python_version(), "platform": platform.platform()}
    for p in ("torch", "diffusers", "transformers", "optimum", "optimum-onnx", "onnxruntime", "numpy", "pillow"):
        try:
            v[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            v[p] = None
    try:
        v["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        v["cpu"] = platform.processor()
    v["cores"] = os.cpu_count()
    import torch
    v["torch_threads"] = {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
    v["onnxruntime_threads"] = {"intra_op": THREADS, "inter_op": 1}
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per measurement (median reported)")
    ap.add_argument("--quick", action="store_true", help="1 round (smoke test)")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    ap.add_argument("--batches", default=",".join(map(str, ORT_BATCHES)), help="optimum-ort batch sizes")
    ap.add_argument("--models", default="tiny-sd,tiny-pixel-unet", help="comma-separated subset")
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    rounds = 1 if args.quick else args.rounds
    batches = [int(b) for b in args.batches.split(",")]
    models = args.models.split(",")
    start = time.perf_counter()

    import torch
    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    import warnings
    import numpy as np
    from diffusers.utils import logging as dlogging
    dlogging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)

    items = workload_items()
    n = len(items)
    print(f"workload: {n} images = {N_IMAGES} sources x levels {LEVELS} x {SEEDS} seeds; {STEPS} DDIM steps "
          f"(denoising {[denoise_steps(strength_of(v)) for v in LEVELS]}), guidance {GUIDANCE}; {rounds} rounds, "
          f"warm-up and model load excluded; {THREADS} torch / ONNX Runtime thread(s)", flush=True)
    peers = {}

    if "tiny-sd" in models:
        print("tiny-sd:", flush=True)
        size = sd_size()
        res = {}
        t0 = time.perf_counter()
        tpipe, tlog = build_torch_sd()
        load_torch = time.perf_counter() - t0
        calls = sd_batches(items, 1, size)
        res["diffusers-torch-per-image"] = measure(
            "diffusers-torch-per-image (batch 1)", lambda: [sd_call(tpipe, *c) for c in calls],
            lambda: sd_call(tpipe, *calls[0]), tlog, rounds, n)
        res["diffusers-torch-per-image"]["load_s"] = round(load_torch, 3)

        t0 = time.perf_counter()
        opipe, olog = build_ort_sd()
        load_ort = time.perf_counter() - t0
        by_batch = {}
        for b in batches:
            calls_b = sd_batches(items, b, size)
            by_batch[str(b)] = measure(f"optimum-ort batch {b}", lambda c=calls_b: [sd_call(opipe, *x) for x in c],
                                       lambda c=calls_b: sd_call(opipe, *c[0]), olog, rounds, n)
        best = max(by_batch, key=lambda b: by_batch[b]["images_per_s"])
        res["optimum-ort"] = {"by_batch": by_batch, "best_batch": int(best),
                              "images_per_s": by_batch[best]["images_per_s"], "median_s": by_batch[best]["median_s"],
                              "unet_calls": by_batch[best]["unet_calls"], "load_s": round(load_ort, 3)}
        print(f"  optimum-ort best: batch {best}, {by_batch[best]['images_per_s']:.2f} images/s", flush=True)

        res["plain-ort-loop"] = measure_plain_sd(items, size, rounds, n)

        # Check (untimed): same weights, same seed, batch 1 -> torch and ONNX Runtime images should agree.
        c = calls[0]
        a = sd_call(tpipe, *c, output_type="np")
        b = sd_call(opipe, *c, output_type="np")
        diff = float(np.abs(np.asarray(a) - np.asarray(b)).max())
        res["check_torch_vs_ort_batch1_max_abs_diff"] = diff
        print(f"  check: diffusers-torch vs optimum-ort, batch 1, same seed: max abs pixel diff {diff:.2e} "
              f"(images in [0,1])", flush=True)
        peers["tiny-sd"] = res
        del tpipe, opipe

    if "tiny-pixel-unet" in models:
        print("tiny-pixel-unet:", flush=True)
        t0 = time.perf_counter()
        unet, sched, plog = build_torch_pixel()
        load = time.perf_counter() - t0
        srcs = {it["path"]: pixel_image(it["path"]) for it in items}

        def run_pixel():
            return [pixel_img2img(unet, sched, srcs[it["path"]], it["label"], it["strength"], it["seed"])
                    for it in items]

        res = {"diffusers-torch-per-image": measure(
            "diffusers-torch-per-image (batch 1)", run_pixel,
            lambda: pixel_img2img(unet, sched, srcs[items[0]["path"]], items[0]["label"], items[0]["strength"], 0),
            plog, rounds, n)}
        res["diffusers-torch-per-image"]["load_s"] = round(load, 3)
        res["plain-ort-loop"] = measure_plain_pixel(items, rounds, n)
        note = ("not measured: optimum has no ONNX Runtime pipeline for a class-conditional pixel-space UNet2DModel "
                "(no img2img/DDPM/DDIM ORT pipeline)")
        res["optimum-ort"] = {"available": False, "note": note}
        print(f"  optimum-ort: {note}", flush=True)
        peers["tiny-pixel-unet"] = res

    total = time.perf_counter() - start
    out = {"workload": workload_json(), "rounds": rounds, "peers": peers, "versions": versions(),
           "total_s": round(total, 2)}
    print(f"total {total:.1f} s", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
