# %% [markdown]
# # Train one curriculum stage from Python, and send feedback
#
# A notebook-like walk through the `discl` Python package (cells are `# %%`; run it whole, or
# cell by cell in an editor that knows them). From the repository root, after
# `pip install ./python numpy pillow`:
#
#     python examples/python/train_stage.py            # output under out/train-stage
#
# 1. start the adaptive curriculum of `examples/python/adaptive-tiny.toml` in this process and
#    compute its first version: the stage index and stage 0's manifest;
# 2. train a small classifier on stage 0 through `discl.torch.StageDataset` (real fixture
#    images and the generator's synthetic ones, each row `copies` times per epoch);
# 3. send feedback as files: `checkpoint-1.jsonl` (its scores on the training samples) and
#    `progress-0.jsonl` / `progress-1.jsonl` (its p_true on the validation images per level,
#    before and after the stage), with `discl.feedback`;
# 4. refresh: discl reads the feedback, and the adaptive curriculum picks stage 1's level from
#    the validation progress.
#
# The classifier is softmax regression on pixels in numpy, so the script runs without torch;
# with torch, the same dataset feeds a `DataLoader` (see the comment in the training cell).

# %%
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

import discl
from discl.feedback import REAL_LEVEL, write_progress, write_scores
from discl.torch import StageDataset

parser = argparse.ArgumentParser(description="Train one stage of a discl curriculum and send feedback.")
parser.add_argument("--output", type=Path, default=Path("out/train-stage"), help="the pipeline's output folder")
parser.add_argument("--seed", type=int, default=0)
args, _ = parser.parse_known_args()  # tolerate a notebook kernel's own arguments

MODEL = Path("models/fashion-cnn")  # its discl.toml: classes, input size, mean and std
rng = np.random.default_rng(args.seed)

# %% [markdown]
# ## 1. Start the pipeline; version 0 holds stage 0

# %%
graph = Path("examples/python/adaptive-tiny.toml").read_text()
graph = graph.replace('"out/adaptive-tiny', f'"{args.output}')  # output and feedback folder
pipeline = discl.Pipeline.from_toml(graph, "adaptive-tiny.toml")
feedback = next(n for n in pipeline.nodes() if n.op == "feedback")  # the node `trainer`
feedback_folder = args.output / "feedback"  # its `path` in the graph file
running = pipeline.start()
version = running.refresh()
print(f"version {version}: stage index", running.snapshot("manifests", "stages").to_pylist())

# %% [markdown]
# ## 2. Train stage 0

# %%
manifest = discl.stage_manifest(args.output, stage=0)  # resolved once: this version's file
data = StageDataset(manifest, model_dir=MODEL)
mean, std = data.mean[0], data.std[0]  # the model's normalisation (one channel)


def pixels(image) -> np.ndarray:
    """The model's input as a flat vector (StageDataset already converted and resized it)."""
    return ((np.asarray(image, dtype=np.float32) / 255.0 - mean) / std).ravel()


def load(path) -> np.ndarray:
    """An image file as `pixels` of the model's 1 × 28 × 28 input."""
    from PIL import Image

    with Image.open(path) as img:
        return pixels(img.convert("L").resize((28, 28), Image.Resampling.BILINEAR))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


classes = data.classes
w = np.zeros((28 * 28, len(classes)))
b = np.zeros(len(classes))
for epoch in StageDataset.epochs_of(manifest):
    # With torch: torch.utils.data.DataLoader(StageDataset(manifest, epoch=epoch,
    # model_dir=MODEL), batch_size=32, shuffle=True) gives normalised (N, 1, 28, 28) tensors.
    epoch_data = StageDataset(manifest, transform=pixels, epoch=epoch, model_dir=MODEL)
    x = np.stack([epoch_data[i][0] for i in range(len(epoch_data))])
    y = np.array([epoch_data[i][1] for i in range(len(epoch_data))])
    for _ in range(5):
        order = rng.permutation(len(y))
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            grad = softmax(x[batch] @ w + b)
            grad[np.arange(len(batch)), y[batch]] -= 1.0
            grad /= len(batch)
            w -= 0.05 * x[batch].T @ grad
            b -= 0.05 * grad.sum(axis=0)
    accuracy = float((softmax(x @ w + b).argmax(axis=1) == y).mean())
    print(f"stage 0, epoch {epoch}: {len(y)} examples, training accuracy {accuracy:.3f}")

# %% [markdown]
# ## 3. Feedback: scores of the training samples, progress on the validation images

# %%
real = {int(r["sample"]): r for r in discl.read_stage(manifest) if int(r["level"]) == REAL_LEVEL}
scores = []
for sample, row in sorted(real.items()):
    p = softmax((load(row["path"]) @ w + b)[None])[0]
    p_true = float(p[classes.index(row["label"])])
    scores.append({"sample": sample, "p_true": p_true, "loss": -math.log(max(p_true, 1e-12)),
                   "predicted": classes[int(p.argmax())]})
print("checkpoint:", write_scores(feedback_folder, 1, scores), f"({len(scores)} samples)")


def validation_progress(weights: np.ndarray, bias: np.ndarray) -> list:
    """p_true of every validation image per level: the real images (level 1000) and their
    synthetic variants (averaged over seeds and prompts), from the validation sink's snapshot."""
    real_val = running.snapshot("validation", "val").to_pylist()
    synthetic_val = running.snapshot("validation", "val_synthetic").to_pylist()
    images = [(r["id"], REAL_LEVEL, r["label"], Path(r["path"])) for r in real_val]
    # Synthetic paths in a sink are relative to the output folder.
    images += [(r["sample"], r["level"], r["label"], args.output / r["path"]) for r in synthetic_val]
    grouped = {}
    for sample, level, label, path in images:
        p = softmax((load(path) @ weights + bias)[None])[0][classes.index(label)]
        grouped.setdefault((sample, level), []).append(float(p))
    return [{"sample": s, "level": l, "p_true": float(np.mean(v))} for (s, l), v in sorted(grouped.items())]


before = validation_progress(np.zeros_like(w), np.zeros_like(b))  # the untrained model
write_progress(feedback_folder, 0, before)
after = validation_progress(w, b)
print("progress:", write_progress(feedback_folder, 1, after), f"({len(after)} image-levels)")

# %% [markdown]
# ## 4. Refresh: discl reads the feedback and plans stage 1

# %%
version = running.refresh()
index = {r["stage"]: r["levels"] for r in running.snapshot("manifests", "stages").to_pylist()}
scores_seen = running.snapshot("manifests", feedback.name).num_rows
summary = running.stop()
print(f"version {version}: stage 1 at level(s) {index.get(1)} (per mille), chosen from the progress;"
      f" {scores_seen} trainer scores in the snapshot")
print(summary)
