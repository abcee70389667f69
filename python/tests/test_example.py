"""examples/python/train_stage.py trains stage 0 of the adaptive tiny curriculum from Python,
writes its feedback, and the next refresh plans stage 1 from it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import REPO


def test_the_example_trains_one_stage_and_sends_feedback(tmp_path, python_env):
    done = subprocess.run(
        [sys.executable, "examples/python/train_stage.py", "--output", str(tmp_path / "out")],
        cwd=REPO, env=python_env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    feedback = tmp_path / "out" / "feedback"
    scores = [json.loads(l) for l in (feedback / "checkpoint-1.jsonl").read_text().splitlines()]
    assert scores and all(set(s) == {"sample", "p_true", "loss", "predicted"} for s in scores)
    assert {"progress-0.jsonl", "progress-1.jsonl"} <= {p.name for p in feedback.iterdir()}
    planned = re.search(r"version (\d+): stage 1 at level\(s\) \[(\d+)\] .*; (\d+) trainer scores", done.stdout)
    assert planned, done.stdout
    assert int(planned.group(1)) >= 1 and int(planned.group(2)) in (300, 700)
    assert int(planned.group(3)) == len(scores)
    assert not (tmp_path / "out" / "errors" / "current" / "errors.jsonl").read_text().strip()
