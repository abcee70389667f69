#!/usr/bin/env python3
"""Evaluate the exported generator (ONNX files only, via onnxruntime) with the judge.

  OMP_NUM_THREADS=1 nice -n 10 .venv-train/bin/python training/eval_unet.py [--n 200] [--guidance 2.0]

(a) text-only generation (lambda = 0: pure noise, DDIM --steps steps, classifier-free guidance): the judge's
    recognition rate of the intended class (argmax cosine over the 10 prompts).
(b) image-guided generation (SDEdit, strength = 1 - lambda) from real half-B images for lambda in 0.3 0.5 0.7 0.9:
    judge agreement with the source class, mean absolute pixel distance to the source (pixels in [0, 1]) against
    random-pair baselines (another half-B image of the same class / of any class).
Writes models/fashion-unet/metrics.json and models/fashion-unet/sample-grid.png (per class two columns; rows
lambda = 0, 0.3, 0.5, 0.7, 0.9, then the real source image).
Noise is drawn per image from its own seed, so each image is reproducible whatever batch it is in.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import unet_common as uc  # noqa: E402

LAMBDAS = (0.3, 0.5, 0.7, 0.9)


class Generator:
    def __init__(self, folder, guidance, steps, max_batch=256):
        from diffusers import DDIMScheduler
        self.sess = common.ort_session(os.path.join(folder, "unet", "model.onnx"))
        self.sched = DDIMScheduler.from_pretrained(os.path.join(folder, "scheduler"))
        self.guidance, self.steps, self.max_batch = guidance, steps, max_batch
        self.calls, self.unet_seconds = 0, 0.0

    def eps(self, x, t, labels):
        b = len(labels)
        xx = np.concatenate([x, x]).astype(np.float32)
        cl = np.concatenate([labels, np.full(b, uc.NULL_CLASS)]).astype(np.int64)
        tt = np.full(2 * b, int(t), dtype=np.int64)
        outs = []
        t0 = time.time()
        for i in range(0, 2 * b, self.max_batch):
            outs.append(self.sess.run(["out_sample"], {"sample": xx[i:i + self.max_batch],
                                                        "timestep": tt[i:i + self.max_batch],
                                                        "class_labels": cl[i:i + self.max_batch]})[0])
        self.unet_seconds += time.time() - t0
        self.calls += 2 * b
        out = np.concatenate(outs)
        cond, uncond = out[:b], out[b:]
        return uncond + self.guidance * (cond - uncond)

    def generate(self, labels, seeds, lam=0.0, x0=None):
        """labels: int [B]; seeds: int [B]; x0: f32 [B,1,28,28] in [-1,1] (needed when lam > 0). Returns [-1,1]."""
        self.sched.set_timesteps(self.steps)
        timesteps = self.sched.timesteps
        noise = torch.stack([torch.randn(1, 28, 28, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        if lam == 0.0:
            x = noise * self.sched.init_noise_sigma
        else:
            init = min(int(self.steps * (1.0 - lam)), self.steps)
            if init == 0:
                return np.asarray(x0, dtype=np.float32)
            timesteps = timesteps[self.steps - init:]
            x = self.sched.add_noise(torch.from_numpy(np.asarray(x0, dtype=np.float32)), noise,
                                     timesteps[:1].repeat(len(labels)))
        for t in timesteps:
            e = torch.from_numpy(self.eps(x.numpy(), t, np.asarray(labels)))
            x = self.sched.step(e, t, x, eta=0.0).prev_sample
        return x.numpy()


class Judge:
    def __init__(self, folder):
        self.sess = common.ort_session(os.path.join(folder, "model.onnx"))
        with open(os.path.join(folder, "text_embeds.json")) as f:
            t = np.asarray(json.load(f)["embeds"], dtype=np.float64)
        self.text = t / np.linalg.norm(t, axis=1, keepdims=True)

    def cosines(self, u8):
        x = common.normalise(u8)
        (e,) = self.sess.run(["image_embeds"], {"pixel_values": x})
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return e @ self.text.T


def to_u8(x):
    """[-1,1] f32 [B,1,28,28] -> uint8 [B,28,28] (what a PNG of the sample would hold)."""
    return np.clip(np.round((x[:, 0] + 1.0) * 127.5), 0, 255).astype(np.uint8)


def to_pm1(u8):
    return u8.astype(np.float32)[:, None] / 127.5 - 1.0


def pct(a):
    return {str(p): round(float(np.percentile(a, p)), 4) for p in (5, 25, 50, 75, 95)}


def write_grid(path, columns, rows, row_names, class_names, scale=2, gap=2):
    """rows: list over row of uint8 [C,28,28]."""
    from PIL import Image, ImageDraw, ImageFont
    cell = 28 * scale
    left, top = 44, 14
    w = left + columns * (cell + gap)
    h = top + len(rows) * (cell + gap)
    img = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for r, (name, row) in enumerate(zip(row_names, rows)):
        y = top + r * (cell + gap)
        draw.text((2, y + cell // 2 - 5), name, fill=0, font=font)
        for c in range(columns):
            tile = Image.fromarray(row[c]).resize((cell, cell), Image.NEAREST)
            img.paste(tile, (left + c * (cell + gap), y))
    per = columns // len(class_names)
    for k, name in enumerate(class_names):
        draw.text((left + k * per * (cell + gap), 1), name, fill=0, font=font)
    img.save(path, optimize=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unet", default=os.path.join(common.REPO, "models", "fashion-unet"))
    ap.add_argument("--judge", default=os.path.join(common.REPO, "models", "fashion-judge"))
    ap.add_argument("--n", type=int, default=200, help="samples for (a) and sources for (b), spread over classes")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=None, help="metrics.json path (default <unet>/metrics.json)")
    args = ap.parse_args()
    common.setup_threads(1)
    t_wall = time.time()
    gen = Generator(args.unet, args.guidance, args.steps)
    judge = Judge(args.judge)
    per = args.n // 10
    labels = np.repeat(np.arange(10), per)

    # (a) lambda = 0
    seeds = args.seed * 100000 + np.arange(len(labels))
    s0 = to_u8(gen.generate(labels, seeds))
    cos0 = judge.cosines(s0)
    rec = cos0.argmax(1) == labels
    true0 = cos0[np.arange(len(labels)), labels]
    a = {"lambda": 0.0, "samples": int(len(labels)), "recognition_rate": round(float(rec.mean()), 4),
         "per_class": {common.CLASSES[c]: round(float(rec[labels == c].mean()), 4) for c in range(10)},
         "true_class_cosine_percentiles": pct(true0)}
    print(f"(a) lambda=0 guidance {args.guidance}: judge recognition {rec.mean():.4f} "
          f"per class {[round(float(rec[labels == c].mean()), 2) for c in range(10)]}", flush=True)

    # (b) SDEdit from real half-B images
    b_u8, b_y, b_paths = common.load_folder(os.path.join(common.DATA, "fashion-b", "train"))
    rng = np.random.default_rng(args.seed)
    src = np.concatenate([rng.choice(np.flatnonzero(b_y == c), per, replace=False) for c in range(10)])
    src_u8, src_y = b_u8[src], b_y[src]
    src01 = src_u8.astype(np.float32) / 255.0
    same = np.array([rng.choice(np.flatnonzero((b_y == y) & (np.arange(len(b_y)) != i))) for i, y in zip(src, src_y)])
    anyc = np.array([rng.choice(np.flatnonzero(np.arange(len(b_y)) != i)) for i in src])
    base_same = float(np.abs(b_u8[same] / 255.0 - src01).mean())
    base_any = float(np.abs(b_u8[anyc] / 255.0 - src01).mean())
    src_cos = judge.cosines(src_u8)
    b = {"sources": int(len(src)), "source_images": [b_paths[i] for i in src[:: max(1, per)]][:10],
         "judge_accuracy_on_sources": round(float((src_cos.argmax(1) == src_y).mean()), 4),
         "baseline_mae_random_same_class": round(base_same, 4), "baseline_mae_random_any_class": round(base_any, 4),
         "levels": {}}
    level_u8 = {}
    for lam in LAMBDAS:
        out = to_u8(gen.generate(src_y, seeds + 1000 * int(round(lam * 10)), lam=lam, x0=to_pm1(src_u8)))
        level_u8[lam] = out
        cos = judge.cosines(out)
        agree = cos.argmax(1) == src_y
        mae = np.abs(out / 255.0 - src01).reshape(len(src), -1).mean(1)
        b["levels"][str(lam)] = {
            "strength": round(1 - lam, 2), "unet_steps": min(int(args.steps * (1 - lam)), args.steps),
            "judge_agreement": round(float(agree.mean()), 4),
            "mae_to_source": round(float(mae.mean()), 4),
            "mae_ratio_to_same_class_baseline": round(float(mae.mean()) / base_same, 3),
            "true_class_cosine_median": round(float(np.median(cos[np.arange(len(src)), src_y])), 4)}
        print(f"(b) lambda={lam}: judge agreement {agree.mean():.4f} MAE {mae.mean():.4f} "
              f"(random same-class {base_same:.4f}, any {base_any:.4f})", flush=True)

    # sample grid: two sources per class; rows lambda 0, 0.3, 0.5, 0.7, 0.9, real
    pick = np.concatenate([np.flatnonzero(src_y == c)[:2] for c in range(10)])
    rows = [s0[pick]] + [level_u8[lam][pick] for lam in LAMBDAS] + [src_u8[pick]]
    grid_path = os.path.join(args.unet, "sample-grid.png")
    write_grid(grid_path, len(pick), rows, ["L=0", "L=0.3", "L=0.5", "L=0.7", "L=0.9", "real"],
               list(common.CLASSES))

    with open(os.path.join(args.unet, "export.json")) as f:
        exported = json.load(f)
    metrics = {"checkpoint": exported, "sampler": {"scheduler": "DDIM (scheduler/scheduler_config.json)",
                                                   "steps": args.steps, "eta": 0.0, "guidance_scale": args.guidance,
                                                   "null_class": uc.NULL_CLASS},
               "judge": "models/fashion-judge (argmax cosine over the 10 prompts)",
               "a_text_only": a, "b_sdedit_from_half_b": b,
               "onnxruntime_ms_per_image_per_unet_call": round(1000 * gen.unet_seconds / gen.calls, 3),
               "eval_wall_seconds": round(time.time() - t_wall, 1)}
    out = args.out or os.path.join(args.unet, "metrics.json")
    with open(out, "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(f"wrote {out} and {grid_path}; {metrics['onnxruntime_ms_per_image_per_unet_call']} ms/image/call")
    if args.out is None:
        update_readme(os.path.join(args.unet, "README.md"), metrics)


def update_readme(path, m):
    """Rewrite the figures block of the model README (between the two marker comments), if there is one."""
    begin, end = "<!-- figures:begin -->", "<!-- figures:end -->"
    if not os.path.exists(path):
        return
    with open(path) as f:
        text = f.read()
    if begin not in text or end not in text:
        return
    ck, a, b = m["checkpoint"], m["a_text_only"], m["b_sdedit_from_half_b"]
    done = ck.get("finished", False)
    status = ("**final**" if done else "**IN PROGRESS** — an intermediate checkpoint; training continues")
    lines = [begin,
             f"Checkpoint: step {ck['step']} of {ck.get('max_steps', '?')}, {ck['train_cpu_hours']:.2f} CPU hours "
             f"of training (EMA weights) — {status}. Sampler: DDIM {m['sampler']['steps']} steps, eta 0, guidance "
             f"{m['sampler']['guidance_scale']}, null class {m['sampler']['null_class']}; judge = models/fashion-judge.",
             "",
             f"(a) λ = 0 (pure noise, class-conditional), {a['samples']} samples: the judge recognises the intended "
             f"class on **{100 * a['recognition_rate']:.1f}%** (target ≥ 80%).",
             "Per class: " + ", ".join(f"{k} {100 * v:.0f}" for k, v in a["per_class"].items()) + ".",
             "",
             f"(b) SDEdit from {b['sources']} real half-B images (judge accuracy on the sources themselves "
             f"{100 * b['judge_accuracy_on_sources']:.1f}%). Mean absolute pixel distance to the source (pixels in "
             f"[0, 1]); random-pair baselines: another half-B image of the same class "
             f"{b['baseline_mae_random_same_class']:.4f}, of any class {b['baseline_mae_random_any_class']:.4f}.",
             "",
             "| λ | strength | UNet steps | judge agrees with source class | distance to source | ÷ same-class baseline |",
             "|---|---|---|---|---|---|"]
    for lam, r in b["levels"].items():
        lines.append(f"| {lam} | {r['strength']} | {r['unet_steps']} | {100 * r['judge_agreement']:.1f}% | "
                     f"{r['mae_to_source']:.4f} | {r['mae_ratio_to_same_class_baseline']:.2f} |")
    lines += ["", f"ONNX Runtime (one thread, batched): {m['onnxruntime_ms_per_image_per_unet_call']:.1f} ms per image "
                  f"per UNet call while training ran beside it. `sample-grid.png`: two half-B sources per class; rows "
                  f"λ = 0, 0.3, 0.5, 0.7, 0.9, then the real source.", end]
    text = text[:text.index(begin)] + "\n".join(lines) + text[text.index(end) + len(end):]
    with open(path, "w") as f:
        f.write(text)
    print(f"updated {path}")


if __name__ == "__main__":
    main()
