"""discl.stage_manifest, discl.read_stage and discl.torch.StageDataset over a stage manifest
with real and synthetic images (torch is not needed with a transform)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import discl
from discl.torch import StageDataset


def _write_stage(tmp_path):
    """A sink folder with `current` → v000003 holding mix/stage-1 (JSONL and Parquet): a real
    fixture image twice (copies 2) and a synthetic RGB image of another size, over two epochs."""
    synthetic = tmp_path / "synthetic.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(synthetic)
    real = "tests/fixtures/fashion-tiny/coat/" + sorted(os.listdir("tests/fixtures/fashion-tiny/coat"))[0]
    rows = [
        {"stage": 1, "epoch": 1, "sample": 9, "level": 300, "seed": 0, "prompt": "a bag", "label": "bag",
         "path": str(synthetic), "copies": 1},
        {"stage": 1, "epoch": 0, "sample": 5, "level": 1000, "seed": None, "prompt": None, "label": "coat",
         "path": real, "copies": 2},
    ]
    mix = tmp_path / "out" / "manifests" / "v000003" / "mix"
    mix.mkdir(parents=True)
    (mix / "stage-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), mix / "stage-1.parquet")
    os.symlink("v000003", tmp_path / "out" / "manifests" / "current")
    return rows


def test_stage_manifest_pins_the_current_version(tmp_path):
    rows = _write_stage(tmp_path)
    path = discl.stage_manifest(tmp_path / "out", 1)
    assert path == (tmp_path / "out/manifests/v000003/mix/stage-1.jsonl").resolve()
    assert discl.read_stage(path) == rows
    assert discl.read_stage(discl.stage_manifest(tmp_path / "out", 1, format="parquet")) == rows
    with pytest.raises(FileNotFoundError, match="stage 2"):
        discl.stage_manifest(tmp_path / "out", 2)
    with pytest.raises(FileNotFoundError, match="no committed version"):
        discl.stage_manifest(tmp_path / "out", 1, sink="other")


def test_stage_dataset_opens_real_and_synthetic_images_copies_times(tmp_path):
    _write_stage(tmp_path)
    path = discl.stage_manifest(tmp_path / "out", 1)
    assert StageDataset.epochs_of(path) == [0, 1]
    data = StageDataset(path, transform=np.asarray, model_dir="models/fashion-cnn")
    assert len(data) == 3  # the real image twice, then the synthetic one (epoch order)
    assert data.classes[data[0][1]] == "coat" and data[0][1] == data[1][1]
    assert data.classes[data[2][1]] == "bag"
    synthetic, _ = data[2]
    assert synthetic.shape == (28, 28) and synthetic.dtype == np.uint8  # the model's 1×28×28
    assert np.array_equal(data[0][0], np.asarray(Image.open(data.items[0][0]).convert("L")))
    only_epoch_1 = StageDataset(path, transform=np.asarray, epoch=1)
    assert len(only_epoch_1) == 1 and only_epoch_1.classes == ["bag"]
    assert only_epoch_1[0][0].shape == (32, 32, 3)  # no model folder: RGB, size kept
    with pytest.raises(IndexError):
        data[3]


def test_stage_dataset_refuses_labels_outside_its_classes(tmp_path):
    _write_stage(tmp_path)
    with pytest.raises(ValueError, match="unknown class 'bag'"):
        StageDataset(discl.stage_manifest(tmp_path / "out", 1), classes=["coat"])


def test_a_file_that_is_no_stage_manifest_is_refused(tmp_path):
    bad = tmp_path / "stage-0.jsonl"
    bad.write_text('{"stage": 0}\n')
    with pytest.raises(ValueError, match="missing column"):
        discl.read_stage(bad)
    bad.write_text('{"stage": 0,\n')
    with pytest.raises(ValueError, match="stage-0.jsonl:1: malformed JSON"):
        discl.read_stage(bad)
