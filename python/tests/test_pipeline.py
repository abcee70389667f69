"""Compiling, validating and running pipelines from Python; snapshots as pyarrow Tables."""

from __future__ import annotations

import math
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import discl
from conftest import read_jsonl, shipped

MALFORMED = '''[pipeline]
name = "bad"
output = "out/bad"

[models.cnn]
path = "models/fashion-cnn"

[nodes.train]
op = "source"
format = "image_folder"
path = "tests/fixtures/fashion-tiny"

[nodes.scores]
op = "clasify"
inputs = ["train"]

[nodes.hard]
op = "hard"
inputs = ["train", "scorez"]
rules = [{ misclassified = true }]

[nodes.gen]
op = "generate"
inputs = ["hard"]
model = "cnn"
levels = "many"
seeds = "four"

[nodes.out]
op = "sink"
inputs = ["hard", "gen"]
'''


def test_a_malformed_graph_raises_graph_error_with_every_error():
    with pytest.raises(discl.GraphError) as caught:
        discl.Pipeline.from_toml(MALFORMED, "bad.toml")
    error = caught.value
    assert isinstance(error, discl.DisclError) and isinstance(error, ValueError)
    got = [(e.file, e.line, e.node, e.field) for e in error.errors]
    assert got == [
        ("bad.toml", 14, "scores", None),
        ("bad.toml", 19, "hard", None),
        ("bad.toml", 26, "gen", "levels"),
        ("bad.toml", 27, "gen", "seeds"),
    ]
    assert "unknown op `clasify`" in error.errors[0].message
    assert "input `scorez` is not a node" in error.errors[1].message
    lines = str(error).splitlines()
    assert len(lines) == 4
    assert lines[1] == "bad.toml:19: node `hard`: input `scorez` is not a node"
    assert str(error.errors[3]) == lines[3]


def test_from_file_names_the_file_in_errors(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(MALFORMED)
    with pytest.raises(discl.GraphError) as caught:
        discl.Pipeline.from_file(path)
    assert {e.file for e in caught.value.errors} == {str(path)}


def test_validate_reports_missing_files_and_models_with_their_nodes(tmp_path):
    text = f'''[pipeline]
name = "missing"
output = "{tmp_path / 'out'}"

[models.cnn]
path = "{tmp_path / 'no-model'}"

[nodes.train]
op = "source"
format = "image_folder"
path = "{tmp_path / 'no-images'}"

[nodes.scores]
op = "classify"
inputs = ["train"]
model = "cnn"

[nodes.out]
op = "sink"
inputs = ["scores"]
'''
    pipeline = discl.Pipeline.from_toml(text, "missing.toml")  # the structure is fine
    with pytest.raises(discl.GraphError) as caught:
        pipeline.validate()
    errors = caught.value.errors
    assert [(e.node, e.line, e.field) for e in errors] == [("train", 11, "path"), ("models.cnn", 5, None)]
    assert errors[0].message.endswith("no-images: no such image folder")
    assert "no-model" in errors[1].message and "used by node `scores`" in errors[1].message


def test_graph_dot_nodes_and_configuration():
    pipeline = discl.Pipeline.from_file("pipelines/tiny-sd-spectrum.toml")
    assert pipeline.name == "tiny-sd-spectrum"
    assert str(pipeline.output) == "out/tiny-sd-spectrum"
    dot = pipeline.graph_dot()
    assert dot.startswith("digraph") and '"hard"' in dot and "->" in dot
    nodes = {n.name: n for n in pipeline.nodes()}
    assert nodes["synthetic"].op == "generate" and nodes["synthetic"].inputs == ["hard"]
    assert any("generator" in line for line in pipeline.configuration())


def _flat(row: dict) -> dict:
    """A JSONL row as the Parquet columns name it (a synthetic image's key flattened)."""
    key = row.get("key")
    if key is None:
        return row
    rest = {k: v for k, v in row.items() if k != "key"}
    return {**key, **rest}


def _same(table_value, json_value) -> bool:
    if isinstance(json_value, float) and isinstance(table_value, float):
        # float32 columns: the JSONL holds the shortest decimal of the same f32.
        return math.isclose(table_value, json_value, rel_tol=1e-6)
    return table_value == json_value


def test_a_shipped_pipeline_snapshot_is_a_table_equal_to_the_jsonl_manifest(tmp_path):
    pipeline = discl.Pipeline.from_toml(shipped("pipelines/tiny-sd-spectrum.toml", tmp_path), "tiny-sd.toml")
    with pipeline.start(workers=2) as running:
        assert running.refresh() == 0
        current = tmp_path / "manifests" / "current"
        for input, kind_columns in (("hard", ["id", "name", "label", "path", "digest"]),
                                    ("synthetic", ["sample", "level", "seed", "prompt", "label", "path",
                                                   "digest", "source", "text_score", "image_score"])):
            table = running.snapshot("manifests", input)
            assert isinstance(table, pa.Table)
            assert table.column_names == kind_columns
            rows = read_jsonl(current / f"{input}.jsonl")
            assert table.num_rows == len(rows) > 0
            for got, want in zip(table.to_pylist(), (_flat(r) for r in rows)):
                assert got.keys() == want.keys()
                assert all(_same(got[k], want[k]) for k in want), (got, want)
            # The sink's own Parquet file holds the same table.
            assert table.equals(pq.read_table(current / f"{input}.parquet"))
        assert running.snapshot("manifests", "hard").schema.field("id").type == pa.uint64()
        with pytest.raises(discl.DisclError, match="has no input `scores`"):
            running.snapshot("manifests", "scores")
        with pytest.raises(discl.DisclError, match="no node `nope`"):
            running.snapshot("nope", "hard")
        summary = running.summary()
    assert running.stopped
    assert summary.versions_written == [0]
    assert summary.nodes["synthetic"]["op"] == "generate"
    assert summary.nodes["synthetic"]["computed"] == summary.nodes["synthetic"]["records_out"] > 0


def test_run_returns_the_summary_and_a_rerun_writes_nothing(tiny):
    text, out, _, _ = tiny
    pipeline = discl.Pipeline.from_toml(text, "tiny.toml")
    first = pipeline.run(workers=2)
    assert isinstance(first, discl.Summary)
    assert first.versions_written == [0] and first.errors == 0
    assert first.nodes["scores"]["computed"] == 120
    assert first.line.startswith("tiny: version(s) [0] written") and str(first) == first.line
    assert set(first.to_dict()) == {"pipeline", "versions_written", "nodes", "errors", "seconds"}
    again = pipeline.run()
    assert again.versions_written == [] and again.nodes["scores"]["computed"] == 0
    assert (out / "state" / "run.json").is_file()


def test_workers_must_be_positive():
    pipeline = discl.Pipeline.from_file("pipelines/tiny-sd-spectrum.toml")
    with pytest.raises(ValueError, match="workers"):
        pipeline.run(workers=0)


def test_run_releases_the_gil(tiny):
    """Another Python thread keeps running while the engine works."""
    text, _, _, _ = tiny
    pipeline = discl.Pipeline.from_toml(text, "tiny.toml")
    ticks, done = [], threading.Event()

    def count():
        while not done.is_set():
            ticks.append(time.monotonic())  # needs the GIL
            time.sleep(0.002)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        start = time.monotonic()
        pipeline.run()
        end = time.monotonic()
    finally:
        done.set()
        counter.join()
    during = [t for t in ticks if start < t < end]
    # Holding the GIL, the run would leave the counter no tick at all.
    possible = (end - start) / 0.002
    assert len(during) >= max(3, 0.25 * possible), (end - start, len(during))
