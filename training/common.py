"""Shared helpers for discl's training scripts: data loading, constants, ONNX checks."""
import json
import os
import random

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("DISCL_DATA_DIR", os.path.join(REPO, "data"))
CLASSES = ["tshirt-top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
DISPLAY = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Fashion-MNIST pixel statistics (x/255) over the official 60k training images; both the learner and the judge use
# input = (x/255 - MEAN) / STD.
MEAN, STD = 0.2860, 0.3530


def setup_threads(n=1):
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    import torch
    torch.set_num_threads(n)
    torch.set_num_interop_threads(n)


def seed_everything(seed):
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_folder(root):
    """Read <root>/<class>/*.png (class folders in label order). Returns uint8 [N,28,28], int64 [N], rel paths."""
    from PIL import Image
    images, labels, paths = [], [], []
    for c, name in enumerate(CLASSES):
        d = os.path.join(root, name)
        for f in sorted(os.listdir(d)):
            if not f.endswith(".png"):
                continue
            with Image.open(os.path.join(d, f)) as im:
                a = np.asarray(im.convert("L"), dtype=np.uint8)
            images.append(a)
            labels.append(c)
            paths.append(f"{name}/{f}")
    return np.stack(images), np.asarray(labels, dtype=np.int64), paths


def normalise(u8):
    """uint8 [N,28,28] -> float32 [N,1,28,28] normalised for the learner / judge."""
    x = u8.astype(np.float32)[:, None] / 255.0
    return (x - MEAN) / STD


def split_info():
    with open(os.path.join(DATA, "fashion-lt", "split.json")) as f:
        return json.load(f)


def group_accuracies(pred, labels, groups):
    """groups: {'many': [class ids], ...}. Returns dict with all / per group / per class accuracy."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    per_class = [float((pred[labels == c] == c).mean()) for c in range(10)]
    out = {"all": float((pred == labels).mean())}
    for g, cs in groups.items():
        m = np.isin(labels, cs)
        out[g] = float((pred[m] == labels[m]).mean())
    out["per_class"] = dict(zip(CLASSES, per_class))
    return out


def confusion(pred, labels):
    m = np.zeros((10, 10), dtype=np.int64)
    for p, y in zip(pred, labels):
        m[y, p] += 1
    return m.tolist()


def ort_session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def toml_list(xs):
    return "[" + ", ".join(json.dumps(x) for x in xs) + "]"
