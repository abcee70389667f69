#!/usr/bin/env python3
"""Train the learner baseline: a small CNN on the long-tailed half A only (plain cross-entropy), export to ONNX.

  OMP_NUM_THREADS=1 nice -n 10 .venv-train/bin/python training/train_cnn.py

Writes models/fashion-cnn/{model.onnx, discl.toml, metrics.json}. Deterministic on CPU with one thread.
"""
import argparse
import json
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


def conv_bn(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FashionCNN(nn.Module):
    """~140k parameters. features = global-average-pooled last conv block (D = 128)."""

    def __init__(self, width=(32, 64, 128), classes=10):
        super().__init__()
        a, b, c = width
        self.body = nn.Sequential(
            conv_bn(1, a), conv_bn(a, a), nn.MaxPool2d(2),      # 14x14
            conv_bn(a, b), conv_bn(b, b), nn.MaxPool2d(2),      # 7x7
            conv_bn(b, c),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        features = self.body(x).mean(dim=(2, 3))
        logits = self.head(self.dropout(features))
        return logits, features


def augment(x, gen):
    """Random horizontal flip and a random shift of up to 2 pixels (zero padding) per image."""
    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = F.pad(x, (2, 2, 2, 2), value=float(-common.MEAN / common.STD))
    dx = torch.randint(0, 5, (n,), generator=gen)
    dy = torch.randint(0, 5, (n,), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = pad[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28]
    return out


@torch.no_grad()
def predict(model, x, batch=500):
    model.eval()
    logits = []
    for i in range(0, len(x), batch):
        logits.append(model(x[i:i + batch])[0])
    return torch.cat(logits)


def export_onnx(model, path):
    model.eval()
    dummy = torch.zeros(2, 1, 28, 28)
    torch.onnx.export(model, (dummy,), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits", "features"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}})


def write_toml(path):
    with open(path, "w") as f:
        f.write(f"""kind = "classifier"
onnx = "model.onnx"
input = "input"
input_shape = [1, 28, 28]   # channels, height, width
mean = [{common.MEAN:.4f}]
std = [{common.STD:.4f}]
classes = {common.toml_list(common.CLASSES)}
display_names = {common.toml_list(common.DISPLAY)}
[outputs]
logits = "logits"
features = "features"
""")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(common.REPO, "models", "fashion-cnn"))
    args = ap.parse_args()
    common.setup_threads(1)
    common.seed_everything(args.seed)
    torch.use_deterministic_algorithms(True)
    t_cpu, t_wall = time.process_time(), time.time()

    info = common.split_info()
    groups = info["groups"]
    tr_u8, tr_y, _ = common.load_folder(os.path.join(common.DATA, "fashion-lt", "train"))
    te_u8, te_y, _ = common.load_folder(os.path.join(common.DATA, "fashion-lt", "test"))
    xtr, ytr = torch.from_numpy(common.normalise(tr_u8)), torch.from_numpy(tr_y)
    xte = torch.from_numpy(common.normalise(te_u8))
    print(f"train {len(ytr)} (per class {np.bincount(tr_y).tolist()}), test {len(te_y)}", flush=True)

    model = FashionCNN()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = (len(ytr) + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(args.seed)
    history = []
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(perm), args.batch):
            idx = perm[i:i + args.batch]
            x, y = augment(xtr[idx], gen), ytr[idx]
            logits, _ = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
        pred = predict(model, xte).argmax(1).numpy()
        acc = common.group_accuracies(pred, te_y, groups)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / total, "train_acc": correct / total,
                        "test_all": acc["all"], "test_many": acc["many"], "test_medium": acc["medium"],
                        "test_few": acc["few"]})
        print(f"epoch {epoch + 1:2d} loss {loss_sum / total:.4f} train {correct / total:.4f} test {acc['all']:.4f} "
              f"many {acc['many']:.4f} medium {acc['medium']:.4f} few {acc['few']:.4f} "
              f"cpu {time.process_time() - t_cpu:.0f}s", flush=True)
    train_cpu, train_wall = time.process_time() - t_cpu, time.time() - t_wall

    os.makedirs(args.out, exist_ok=True)
    model.eval()
    torch_logits = predict(model, xte)
    pred = torch_logits.argmax(1).numpy()
    acc = common.group_accuracies(pred, te_y, groups)

    onnx_path = os.path.join(args.out, "model.onnx")
    export_onnx(model, onnx_path)
    sess = common.ort_session(onnx_path)
    max_diff = 0.0
    ort_logits = []
    for i in range(0, len(xte), 500):
        lo, fe = sess.run(["logits", "features"], {"input": xte[i:i + 500].numpy()})
        with torch.no_grad():
            tl, tf = model(xte[i:i + 500])
        max_diff = max(max_diff, float(np.abs(lo - tl.numpy()).max()), float(np.abs(fe - tf.numpy()).max()))
        ort_logits.append(lo)
    for b in (1, 3, 7):  # dynamic batch
        lo, fe = sess.run(None, {"input": xte[:b].numpy()})
        assert lo.shape == (b, 10) and fe.shape == (b, 128)
    ort_pred = np.concatenate(ort_logits).argmax(1)
    print(f"onnx vs torch max abs diff {max_diff:.2e}; onnx/torch argmax agreement {(ort_pred == pred).mean():.4f}")
    if max_diff > 1e-4:
        sys.exit(f"ONNX mismatch {max_diff}")
    write_toml(os.path.join(args.out, "discl.toml"))

    metrics = {
        "model": "FashionCNN (5 conv-BN-ReLU, GAP, dropout 0.2, linear)",
        "parameters": n_params,
        "feature_dim": 128,
        "train_set": "data/fashion-lt/train (long-tailed half A, 7,443 images)",
        "test_set": "data/fashion-lt/test (official 10k test set)",
        "settings": {"epochs": args.epochs, "batch": args.batch, "optimizer": "AdamW", "lr": args.lr,
                     "schedule": "one-cycle (15% warm-up, cosine)", "weight_decay": args.weight_decay,
                     "loss": "cross-entropy (plain, no re-balancing)",
                     "augment": "random h-flip, random shift <= 2 px", "seed": args.seed, "threads": 1},
        "train_cpu_seconds": round(train_cpu, 1),
        "train_wall_seconds": round(train_wall, 1),
        "test_accuracy": {k: round(v, 4) for k, v in acc.items() if k != "per_class"},
        "per_class_accuracy": {k: round(v, 4) for k, v in acc["per_class"].items()},
        "groups": info["group_names"],
        "confusion_matrix_rows_true_cols_pred": common.confusion(pred, te_y),
        "onnx": {"file": "model.onnx", "bytes": os.path.getsize(onnx_path), "opset": 17,
                 "max_abs_diff_vs_torch": max_diff},
        "history": history,
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(json.dumps(metrics["test_accuracy"]), json.dumps(metrics["per_class_accuracy"]))
    print(f"cpu {train_cpu:.0f}s wall {train_wall:.0f}s onnx {os.path.getsize(onnx_path)} bytes")


if __name__ == "__main__":
    main()
