#!/usr/bin/env python3
"""Train the judge: a miniature CLIP restricted to a closed vocabulary of 10 class prompts, on the balanced half B.

An image encoder (small CNN -> linear projection to D = 64) and one learned embedding per prompt
("a photo of a T-shirt/top", ...); logits = exp(s) * cos(image_embed, text_embed_c) with a learned temperature s,
trained with cross-entropy. This is NOT CLIP: there is no text encoder, the vocabulary is these 10 prompts, and it is
trained on the same domain as the generator (half B), so it shares that data's biases.

  OMP_NUM_THREADS=1 nice -n 10 .venv-train/bin/python training/train_judge.py

Writes models/fashion-judge/{model.onnx, text_embeds.json, discl.toml, metrics.json}.
"""
import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from train_cnn import augment, conv_bn  # noqa: E402

EMBED_DIM = 64
# The prompts only name the learned embeddings (there is no text encoder); label order.
PROMPTS = ["a photo of a T-shirt/top", "a photo of a trouser", "a photo of a pullover", "a photo of a dress",
           "a photo of a coat", "a photo of a sandal", "a photo of a shirt", "a photo of a sneaker",
           "a photo of a bag", "a photo of an ankle boot"]


class ImageEncoder(nn.Module):
    def __init__(self, width=(32, 64, 96), dim=EMBED_DIM):
        super().__init__()
        a, b, c = width
        self.body = nn.Sequential(
            conv_bn(1, a), conv_bn(a, a), nn.MaxPool2d(2),
            conv_bn(a, b), conv_bn(b, b), nn.MaxPool2d(2),
            conv_bn(b, c),
        )
        self.proj = nn.Linear(c, dim)

    def forward(self, pixel_values):
        return self.proj(self.body(pixel_values).mean(dim=(2, 3)))


class Judge(nn.Module):
    def __init__(self, classes=10, dim=EMBED_DIM):
        super().__init__()
        self.image = ImageEncoder(dim=dim)
        self.text = nn.Parameter(torch.randn(classes, dim) / math.sqrt(dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # CLIP's initialisation (1/0.07 ~ 14)

    def cosines(self, pixel_values):
        img = F.normalize(self.image(pixel_values), dim=1)
        return img @ F.normalize(self.text, dim=1).t()

    def forward(self, pixel_values):
        return self.logit_scale.exp().clamp(max=100) * self.cosines(pixel_values)


class ExportWrapper(nn.Module):
    def __init__(self, judge):
        super().__init__()
        self.image = judge.image

    def forward(self, pixel_values):
        return self.image(pixel_values)


@torch.no_grad()
def cosines(model, x, batch=500):
    model.eval()
    return torch.cat([model.cosines(x[i:i + batch]) for i in range(0, len(x), batch)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(common.REPO, "models", "fashion-judge"))
    args = ap.parse_args()
    common.setup_threads(1)
    common.seed_everything(args.seed)
    torch.use_deterministic_algorithms(True)
    t_cpu, t_wall = time.process_time(), time.time()

    info = common.split_info()
    tr_u8, tr_y, _ = common.load_folder(os.path.join(common.DATA, "fashion-b", "train"))
    te_u8, te_y, _ = common.load_folder(os.path.join(common.DATA, "fashion-lt", "test"))
    xtr, ytr = torch.from_numpy(common.normalise(tr_u8)), torch.from_numpy(tr_y)
    xte = torch.from_numpy(common.normalise(te_u8))
    print(f"train (half B) {len(ytr)}, test {len(te_y)}", flush=True)

    model = Judge()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(ytr) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(perm), args.batch):
            idx = perm[i:i + args.batch]
            x, y = augment(xtr[idx], gen), ytr[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
        acc = (cosines(model, xte).argmax(1).numpy() == te_y).mean()
        print(f"epoch {epoch + 1} loss {loss_sum / total:.4f} train {correct / total:.4f} test {acc:.4f} "
              f"scale {model.logit_scale.exp().item():.2f} cpu {time.process_time() - t_cpu:.0f}s", flush=True)
    train_cpu, train_wall = time.process_time() - t_cpu, time.time() - t_wall

    model.eval()
    cos = cosines(model, xte).numpy()
    pred = cos.argmax(1)
    acc = common.group_accuracies(pred, te_y, info["groups"])
    true_cos = cos[np.arange(len(te_y)), te_y]
    other = cos.copy()
    other[np.arange(len(te_y)), te_y] = -np.inf
    best_other = other.max(1)

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "model.onnx")
    wrapper = ExportWrapper(model).eval()
    torch.onnx.export(wrapper, (torch.zeros(2, 1, 28, 28),), onnx_path, dynamo=False, opset_version=17,
                      input_names=["pixel_values"], output_names=["image_embeds"],
                      dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}})
    sess = common.ort_session(onnx_path)
    max_diff = 0.0
    text = model.text.detach().numpy().astype(np.float64)
    ort_pred = []
    for i in range(0, len(xte), 500):
        (emb,) = sess.run(["image_embeds"], {"pixel_values": xte[i:i + 500].numpy()})
        with torch.no_grad():
            ref = wrapper(xte[i:i + 500]).numpy()
        max_diff = max(max_diff, float(np.abs(emb - ref).max()))
        e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        t = text / np.linalg.norm(text, axis=1, keepdims=True)
        ort_pred.append((e @ t.T).argmax(1))
    for b in (1, 3):
        (emb,) = sess.run(None, {"pixel_values": xte[:b].numpy()})
        assert emb.shape == (b, EMBED_DIM)
    ort_acc = float((np.concatenate(ort_pred) == te_y).mean())
    print(f"onnx vs torch max abs diff {max_diff:.2e}; onnx accuracy {ort_acc:.4f}")
    if max_diff > 1e-4:
        sys.exit(f"ONNX mismatch {max_diff}")

    with open(os.path.join(args.out, "text_embeds.json"), "w") as f:
        json.dump({"prompts": PROMPTS, "embeds": [[round(float(v), 7) for v in row] for row in text]}, f)
        f.write("\n")
    with open(os.path.join(args.out, "discl.toml"), "w") as f:
        f.write(f"""kind = "judge"
onnx = "model.onnx"
input = "pixel_values"
input_shape = [1, 28, 28]   # channels, height, width
# pixel_values = (x / 255 - mean) / std, x = 8-bit grey pixel
mean = [{common.MEAN:.4f}]
std = [{common.STD:.4f}]
classes = {common.toml_list(common.CLASSES)}
display_names = {common.toml_list(common.DISPLAY)}
[outputs]
image_embeds = "image_embeds"   # [B, 64], not normalised
text_embeds = "text_embeds.json"   # one embedding per class prompt, label order, not normalised
""")
    pct = lambda a: {str(p): round(float(np.percentile(a, p)), 4) for p in (1, 5, 10, 25, 50, 75, 90)}
    metrics = {
        "what": "closed-vocabulary judge (image encoder + 10 learned prompt embeddings, cosine softmax); not CLIP",
        "parameters": n_params,
        "embed_dim": EMBED_DIM,
        "prompts": PROMPTS,
        "train_set": "data/fashion-b/train (balanced half B, 30,000 images)",
        "settings": {"epochs": args.epochs, "batch": args.batch, "optimizer": "AdamW", "lr": args.lr,
                     "schedule": "one-cycle", "augment": "random h-flip, random shift <= 2 px", "seed": args.seed,
                     "threads": 1},
        "learned_logit_scale": round(float(model.logit_scale.exp().item()), 4),
        "train_cpu_seconds": round(train_cpu, 1),
        "train_wall_seconds": round(train_wall, 1),
        "test_accuracy_argmax_cosine": {k: round(v, 4) for k, v in acc.items() if k != "per_class"},
        "per_class_accuracy": {k: round(v, 4) for k, v in acc["per_class"].items()},
        "test_true_class_cosine_percentiles": pct(true_cos),
        "test_best_other_class_cosine_percentiles": pct(best_other),
        "test_keep_rate_at_threshold": {str(t): round(float((true_cos >= t).mean()), 4)
                                        for t in (0.25, 0.3, 0.5, 0.7, 0.8, 0.9)},
        "onnx": {"file": "model.onnx", "bytes": os.path.getsize(onnx_path), "opset": 17,
                 "max_abs_diff_vs_torch": max_diff, "accuracy_via_onnx": ort_acc},
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(json.dumps(metrics["test_accuracy_argmax_cosine"]), json.dumps(metrics["test_true_class_cosine_percentiles"]))
    print(f"cpu {train_cpu:.0f}s wall {train_wall:.0f}s")


if __name__ == "__main__":
    main()
