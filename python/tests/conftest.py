"""Shared fixtures: the repository root (tests run there, as discl resolves a graph file's
relative paths against the current directory), shipped graph files with their output moved
into a temporary folder, and a small classify → hard graph over the tiny fixture."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def shipped(relative: str, output: Path) -> str:
    """The text of a shipped graph file with its `output` (and any folder under it) moved to
    `output`."""
    text = (REPO / relative).read_text()
    line = next(l for l in text.splitlines() if l.startswith("output = "))
    old = json.loads(line.split("=", 1)[1].strip())
    assert old.startswith("out/"), old
    return text.replace(f'"{old}', f'"{output}')


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def copy_fixture(to: Path) -> Path:
    images = to / "images"
    shutil.copytree(REPO / "tests/fixtures/fashion-tiny", images, ignore=shutil.ignore_patterns("*.md"))
    return images


def hard_graph(tmp: Path, images: Path) -> str:
    """Classify the fixture with the shipped CNN; hard = misclassified or p_true < 0.5, with
    a feedback node (folder `tmp/feedback`) whose scores supersede the CNN's."""
    return f"""
[pipeline]
name = "tiny"
output = "{tmp / 'out'}"

[models.cnn]
path = "models/fashion-cnn"

[nodes.train]
op = "source"
format = "image_folder"
path = "{images}"

[nodes.scores]
op = "classify"
inputs = ["train"]
model = "cnn"
batch_size = 16

[nodes.trainer]
op = "feedback"
inputs = ["train"]
path = "{tmp / 'feedback'}"

[nodes.hard]
op = "hard"
inputs = ["train", "scores", "trainer"]
rules = [{{ misclassified = true }}, {{ p_true_below = 0.5 }}]

[nodes.manifests]
op = "sink"
inputs = ["hard", "scores", "train"]
formats = ["jsonl"]
"""


@pytest.fixture
def tiny(tmp_path):
    """(graph text, output folder, feedback folder, images folder) of `hard_graph`."""
    images = copy_fixture(tmp_path)
    return hard_graph(tmp_path, images), tmp_path / "out", tmp_path / "feedback", images


@pytest.fixture(scope="session")
def python_env():
    """Environment for subprocesses running this interpreter on the installed package."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env
