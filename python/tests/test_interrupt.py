"""Ctrl-C (SIGINT) during `Pipeline.run`: the version in hand is finished and committed, then
`KeyboardInterrupt` is raised; a second Ctrl-C abandons the run at once. Either way the output
folder is left consistent: a later run completes it and a rerun after that writes nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import discl
from conftest import REPO, read_jsonl, shipped

SCRIPT = """
import signal, sys, discl
# Python's own Ctrl-C handler, even where this test runs with SIGINT ignored (a background job
# of a shell without job control starts its children so, and Python then installs none).
signal.signal(signal.SIGINT, signal.default_int_handler)
pipeline = discl.Pipeline.from_toml(open(sys.argv[1]).read(), "tiny-sd.toml")
print("running", flush=True)
try:
    summary = pipeline.run()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
print("finished", summary.versions_written, flush=True)
"""


def _run_and_interrupt(tmp_path: Path, signals: int, env) -> tuple:
    """Starts the shipped tiny-sd pipeline in a child Python, sends it `signals` SIGINTs once it
    runs; returns (return code, stdout, stderr, seconds from the last signal to exit)."""
    graph = tmp_path / "g.toml"
    graph.write_text(shipped("pipelines/tiny-sd-spectrum.toml", tmp_path / "out"))
    child = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(graph)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert child.stdout.readline().strip() == "running"
    time.sleep(1.0)  # into the run: models load, images are classified
    for _ in range(signals):
        child.send_signal(signal.SIGINT)
        time.sleep(0.5)
    sent = time.monotonic()
    out, err = child.communicate(timeout=600)
    return child.returncode, out, err, time.monotonic() - sent


def _consistent(out: Path) -> dict:
    """Checks the commit: `state/run.json` names each sink's snapshot folder, which is complete
    (its row counts are its files'), and `current` points at it. Returns run.json."""
    run = json.loads((out / "state" / "run.json").read_text())
    for sink, folder in run["snapshots"].items():
        info = json.loads((out / folder / "_snapshot.json").read_text())
        for input, rows in info["rows"].items():
            assert len(read_jsonl(out / folder / f"{input}.jsonl")) == rows
        assert (out / sink / "current").resolve() == (out / folder).resolve()
    return run


def test_sigint_during_run_finishes_the_version_then_raises_keyboard_interrupt(tmp_path, python_env):
    code, out, err, _ = _run_and_interrupt(tmp_path, 1, python_env)
    assert code == 3, (out, err)
    assert "interrupted" in out and "stopping after the version in hand" in err
    run = _consistent(tmp_path / "out")
    assert run["last_version"] == 0 and set(run["snapshots"]) == {"errors", "manifests"}
    # The interrupted run finished its version: a rerun has nothing new to write.
    pipeline = discl.Pipeline.from_toml((tmp_path / "g.toml").read_text(), "tiny-sd.toml")
    again = pipeline.run()
    assert again.versions_written == [] and again.nodes["synthetic"]["computed"] == 0


def test_a_second_sigint_abandons_the_run_and_the_next_run_completes_it(tmp_path, python_env):
    code, out, err, seconds = _run_and_interrupt(tmp_path, 2, python_env)
    assert code == 3, (out, err)
    assert "abandoned" in err and seconds < 10
    pipeline = discl.Pipeline.from_toml((tmp_path / "g.toml").read_text(), "tiny-sd.toml")
    summary = pipeline.run()
    run = _consistent(tmp_path / "out")
    # Version 0 by this run, or (on a machine fast enough) by the abandoned one before it died.
    assert run["last_version"] == 0 and summary.versions_written in ([0], [])
    assert pipeline.run().versions_written == []
