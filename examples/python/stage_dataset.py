"""A PyTorch `Dataset` over one stage manifest of a discl curriculum.

discl writes stage N of a curriculum to `<output>/<sink>/current/<mix input>/stage-N.jsonl` (and/or
`.parquet`), one row per (epoch, image) with `copies` (README: "Curricula and stage manifests"). This
dataset turns such a file into (image tensor, class index) items, each row repeated `copies` times,
for one epoch of the stage or all of them:

    from stage_dataset import StageDataset, resolve_stage

    path = resolve_stage("out/fashion-lt", stage=0)            # pins `current` to one version
    for epoch in StageDataset.epochs_of(path):
        data = StageDataset(path, epoch=epoch, model_dir="models/fashion-cnn")
        loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
        for images, labels in loader:
            ...

    everything = StageDataset(path)                             # all epochs of the stage at once

Images are read with Pillow, converted to the model's channels, resized to its input size if they
differ (bilinear), scaled to [0, 1] and normalised with the `mean` / `std` of the model folder's
`discl.toml` (as discl's own classify op does), or given to `transform` (a callable on the PIL image)
instead. Class indices follow the `classes` list of that `discl.toml`.

Relative paths in a manifest are relative to the folder discl ran in (`root`). torch is imported only
when a dataset is made, so the module imports without it. Not run in CI (the tests have no torch).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

REQUIRED = ("stage", "epoch", "sample", "level", "label", "path", "copies")


def resolve_stage(output, stage: int, sink: str = "manifests", mix: str = "mix", fmt: str = "jsonl") -> Path:
    """The file of stage `stage` in the version `<output>/<sink>/current` points to now, resolved
    once so later snapshots do not change what is read."""
    version = (Path(output) / sink / os.readlink(Path(output) / sink / "current")).resolve()
    path = version / mix / f"stage-{stage}.{fmt}"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such stage manifest (does the stage index list stage {stage}?)")
    return path


def read_rows(path) -> list[dict]:
    """The rows of a stage manifest (JSONL, or Parquet through pandas/pyarrow)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(path).to_dict("records")
    else:
        rows = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{number}: malformed JSON: {e}") from None
    for row in rows[:1]:
        missing = [c for c in REQUIRED if c not in row]
        if missing:
            raise ValueError(f"{path}: not a stage manifest: missing column(s) {', '.join(missing)}")
    return rows


class StageDataset:
    """(image tensor, class index) for every row of a stage manifest, `copies` times each.

    Args:
        path: a `stage-N.jsonl` or `stage-N.parquet` file (see `resolve_stage`).
        epoch: only this epoch's rows (None: every epoch of the stage, concatenated in order).
        model_dir: the classifier's folder; its `discl.toml` gives classes, input shape, mean, std.
        transform: optional callable on the PIL image returning a tensor (replaces the default
            to-tensor-and-normalise step; the image is still converted to the model's channels).
        root: the folder relative paths are relative to (where discl ran).
    """

    def __init__(self, path, epoch: int | None = None, model_dir="models/fashion-cnn", transform=None, root="."):
        import torch  # only here: importing this module needs no torch

        self.torch = torch
        meta = tomllib.loads((Path(model_dir) / "discl.toml").read_text())
        self.classes = list(meta["classes"])
        self.channels, self.height, self.width = meta["input_shape"]
        self.mean = torch.tensor(meta["mean"], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(meta["std"], dtype=torch.float32).view(-1, 1, 1)
        self.transform, self.root = transform, Path(root)
        rows = [r for r in read_rows(path) if epoch is None or int(r["epoch"]) == epoch]
        rows.sort(key=lambda r: int(r["epoch"]))  # stable: record order within an epoch
        self.items: list[tuple[Path, int]] = []
        for row in rows:
            if row["label"] not in self.classes:
                raise ValueError(f"{path}: unknown class {row['label']!r}")
            item = (self._resolve(row["path"]), self.classes.index(row["label"]))
            self.items.extend([item] * int(row["copies"]))

    @staticmethod
    def epochs_of(path) -> list[int]:
        """The epochs a stage manifest holds, ascending."""
        return sorted({int(r["epoch"]) for r in read_rows(path)})

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.items[index]
        with Image.open(path) as img:
            img = img.convert("L" if self.channels == 1 else "RGB")
            if img.size != (self.width, self.height):
                img = img.resize((self.width, self.height), Image.Resampling.BILINEAR)
            if self.transform is not None:
                return self.transform(img), label
            x = self.torch.frombuffer(bytearray(img.tobytes()), dtype=self.torch.uint8)
        x = x.view(self.height, self.width, self.channels).permute(2, 0, 1).float() / 255.0
        return (x - self.mean) / self.std, label
