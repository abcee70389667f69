"""A PyTorch-style ``Dataset`` over one stage manifest of a discl curriculum.

discl writes stage N of a curriculum to ``<output>/<sink>/current/<mix input>/stage-N.jsonl``
(and/or ``.parquet``), one row per (epoch, image) with ``copies``; real images (``level``
1000) and synthetic ones (the generator's PNGs) alike::

    import torch.utils.data
    from discl import stage_manifest
    from discl.torch import StageDataset

    path = stage_manifest("out/fashion-lt", stage=0)            # pins `current` to one version
    for epoch in StageDataset.epochs_of(path):
        data = StageDataset(path, epoch=epoch, model_dir="models/fashion-cnn")
        loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
        for images, labels in loader:
            ...

Images are opened with Pillow. Without ``transform``, an item is a float tensor (C, H, W):
converted to the model's channels, resized to its input size if they differ (bilinear), scaled
to [0, 1] and normalised with the ``mean`` / ``std`` of the model folder's ``discl.toml`` (as
discl's classify op does). With ``transform``, an item is ``transform(image)`` for the PIL
image (converted to the model's channels, or to RGB without a model folder), and torch is not
needed at all. torch is imported only when a default item is made.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from ._manifest import PathLike, read_stage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - depends on the interpreter
    import tomli as tomllib


class StageDataset:
    """(image, class index) for every row of a stage manifest, ``copies`` times each, in the
    manifest's order (epochs ascending).

    Args:
        manifest: a ``stage-N.jsonl`` or ``stage-N.parquet`` file (see ``discl.stage_manifest``).
        transform: optional callable on the PIL image; its result is the item's image.
        epoch: only this epoch's rows (None: every epoch of the stage, in order).
        model_dir: a classifier folder whose ``discl.toml`` gives ``classes``, ``input_shape``,
            ``mean`` and ``std``.
        classes: the class names, in index order, when there is no ``model_dir`` (default: the
            manifest's labels, sorted).
        root: the folder relative image paths are relative to (where discl ran).
    """

    def __init__(
        self,
        manifest: PathLike,
        transform: Optional[Callable[[Any], Any]] = None,
        *,
        epoch: Optional[int] = None,
        model_dir: Optional[PathLike] = None,
        classes: Optional[Sequence[str]] = None,
        root: PathLike = ".",
    ):
        self.manifest = Path(manifest)
        self.transform = transform
        self.root = Path(root)
        rows = [r for r in read_stage(self.manifest) if epoch is None or int(r["epoch"]) == epoch]
        rows.sort(key=lambda r: int(r["epoch"]))  # stable: record order within an epoch
        self.shape: Optional[Tuple[int, int, int]] = None
        self.mean: Optional[List[float]] = None
        self.std: Optional[List[float]] = None
        if model_dir is not None:
            meta = tomllib.loads((Path(model_dir) / "discl.toml").read_text(encoding="utf-8"))
            self.classes = [str(c) for c in meta["classes"]]
            channels, height, width = (int(v) for v in meta["input_shape"])
            self.shape = (channels, height, width)
            self.mean = [float(v) for v in meta["mean"]]
            self.std = [float(v) for v in meta["std"]]
        elif classes is not None:
            self.classes = list(classes)
        else:
            self.classes = sorted({str(r["label"]) for r in rows})
        self.items: List[Tuple[Path, int]] = []
        for row in rows:
            if row["label"] not in self.classes:
                raise ValueError(f"{self.manifest}: unknown class {row['label']!r} (classes: {', '.join(self.classes)})")
            item = (self._resolve(row["path"]), self.classes.index(row["label"]))
            self.items.extend([item] * int(row["copies"]))

    @staticmethod
    def epochs_of(manifest: PathLike) -> List[int]:
        """The epochs a stage manifest holds, ascending."""
        return sorted({int(r["epoch"]) for r in read_stage(manifest)})

    def _resolve(self, path: Union[str, Path]) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int):
        """The PIL image of item ``index``, converted (and resized) as an item's is."""
        from PIL import Image

        path, _ = self.items[index]
        with Image.open(path) as opened:
            mode = "RGB" if self.shape is None or self.shape[0] != 1 else "L"
            img = opened.convert(mode)
        if self.shape is not None:
            _, height, width = self.shape
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.BILINEAR)
        return img

    def __getitem__(self, index: int):
        if not -len(self.items) <= index < len(self.items):
            raise IndexError(f"index {index} out of range for {len(self.items)} items")
        label = self.items[index][1]
        img = self.image(index)
        if self.transform is not None:
            return self.transform(img), label
        import torch

        channels = 1 if img.mode == "L" else 3
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        x = x.view(img.size[1], img.size[0], channels).permute(2, 0, 1).float() / 255.0
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
            x = (x - mean) / std
        return x, label
