"""Trainer feedback and pushed samples reach the dataflow at the next refresh."""

from __future__ import annotations

import json

import pytest

import discl
from discl.feedback import write_progress, write_scores


def _names(table) -> set:
    return set(table.column("name").to_pylist())


def _an_easy_sample(running) -> dict:
    """A training sample the CNN classifies right with p_true ≥ 0.5 (so not hard)."""
    hard = _names(running.snapshot("manifests", "hard"))
    scores = {r["sample"]: r for r in running.snapshot("manifests", "scores").to_pylist()}
    for row in running.snapshot("manifests", "train").to_pylist():
        if row["name"] not in hard and scores[row["id"]]["p_true"] > 0.9:
            return row
    raise AssertionError("no easy sample in the fixture")


def test_pushed_feedback_changes_the_hard_set_at_the_next_refresh(tiny):
    text, _, _, _ = tiny
    with discl.Pipeline.from_toml(text, "tiny.toml").start() as running:
        running.refresh()
        before = _names(running.snapshot("manifests", "hard"))
        easy = _an_easy_sample(running)
        wrong = "bag" if easy["label"] != "bag" else "coat"
        running.push_feedback([{"sample": easy["name"], "p_true": 0.05, "predicted": wrong}], checkpoint=1)
        assert _names(running.snapshot("manifests", "hard")) == before  # not before the refresh
        running.refresh()
        after = _names(running.snapshot("manifests", "hard"))
        assert after == before | {easy["name"]}
        # Retracting the score (same row, diff -1) gives the CNN's verdict back.
        running.push_feedback(
            [{"sample": easy["id"], "p_true": 0.05, "predicted": wrong, "checkpoint": 1, "diff": -1}]
        )
        running.refresh()
        assert _names(running.snapshot("manifests", "hard")) == before


def test_a_feedback_file_changes_the_hard_set_at_the_next_refresh(tiny):
    text, out, feedback, _ = tiny
    with discl.Pipeline.from_toml(text, "tiny.toml").start() as running:
        running.refresh()
        before = _names(running.snapshot("manifests", "hard"))
        easy = _an_easy_sample(running)
        path = write_scores(feedback, 1, [{"sample": easy["id"], "p_true": 0.2, "loss": 1.6,
                                           "predicted": easy["label"]}])
        assert path == feedback / "checkpoint-1.jsonl"
        version = running.refresh()
        assert _names(running.snapshot("manifests", "hard")) == before | {easy["name"]}
        run = json.loads((out / "state" / "run.json").read_text())
        assert run["last_version"] == version
    assert not (out / "errors" / "current" / "errors.jsonl").read_text().strip()


def test_pushed_samples_enter_and_leave(tiny):
    text, _, _, images = tiny
    with discl.Pipeline.from_toml(text, "tiny.toml").start() as running:
        running.refresh()
        assert len(running.snapshot("manifests", "train")) == 120
        good = next((images / "bag").iterdir())
        row = {"name": "pushed/bag.png", "label": "bag", "path": good}
        running.push_samples([row])
        running.refresh()
        train = running.snapshot("manifests", "train").to_pylist()
        pushed = [r for r in train if r["name"] == "pushed/bag.png"]
        assert len(train) == 121 and pushed[0]["id"] == discl.sample_id("pushed/bag.png")
        running.push_samples([{**row, "diff": -1}], source="train")
        running.refresh()
        assert len(running.snapshot("manifests", "train")) == 120


def test_bad_rows_and_nodes_are_refused(tiny):
    text, _, _, _ = tiny
    with discl.Pipeline.from_toml(text, "tiny.toml").start() as running:
        with pytest.raises(ValueError, match="row 0: p_true must be a probability"):
            running.push_feedback([{"sample": 1, "p_true": 1.5, "predicted": "bag"}], checkpoint=1)
        with pytest.raises(ValueError, match="no checkpoint"):
            running.push_feedback([{"sample": 1, "p_true": 0.5, "predicted": "bag"}])
        with pytest.raises(ValueError, match="unknown key"):
            running.push_feedback([{"sample": 1, "p_true": 0.5, "predicted": "bag", "pred": 1}], checkpoint=1)
        with pytest.raises(discl.DisclError, match="is not a feedback"):
            running.push_feedback([{"sample": 1, "p_true": 0.5, "predicted": "bag"}], feedback="hard", checkpoint=1)
        with pytest.raises(ValueError, match="row 0: missing label, path"):
            running.push_samples([{"name": "x"}])
        with pytest.raises(discl.DisclError, match="cannot read"):
            running.push_samples([{"name": "x", "label": "bag", "path": "no/such.png"}])
    assert running.stopped
    with pytest.raises(discl.DisclError, match="stopped"):
        running.refresh()


def test_feedback_files_are_written_whole_and_checked(tmp_path):
    path = write_scores(tmp_path / "fb", 3, [
        {"sample": 7, "p_true": 0.25, "predicted": "coat"},
        {"sample": "coat/a.png", "p_true": 1, "loss": 0.0, "predicted": "coat"},
    ])
    assert path.name == "checkpoint-3.jsonl"
    assert [json.loads(l) for l in path.read_text().splitlines()] == [
        {"sample": 7, "p_true": 0.25, "predicted": "coat"},
        {"sample": "coat/a.png", "p_true": 1.0, "loss": 0.0, "predicted": "coat"},
    ]
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint-3.jsonl"]
    progress = write_progress(tmp_path / "fb", 0, [{"sample": 7, "level": 1000, "p_true": 0.5}])
    assert progress.read_text() == '{"sample": 7, "level": 1000, "p_true": 0.5}\n'
    for bad, message in (
        ({"sample": 7, "p_true": float("nan"), "predicted": "c"}, "p_true"),
        ({"sample": -1, "p_true": 0.5, "predicted": "c"}, "unsigned"),
        ({"sample": 7, "p_true": 0.5, "predicted": "c", "loss": -1}, "loss"),
        ({"sample": 7, "p_true": 0.5}, "missing predicted"),
    ):
        with pytest.raises(ValueError, match=message):
            write_scores(tmp_path / "fb", 4, [bad])
    with pytest.raises(ValueError, match="level"):
        write_progress(tmp_path / "fb", 1, [{"sample": 7, "level": 1001, "p_true": 0.5}])
    assert not (tmp_path / "fb" / "checkpoint-4.jsonl").exists()
