"""Where the ONNX Runtime library comes from: ORT_DYLIB_PATH, then vendor/ relative to the
current directory (as the CLI), then the onnxruntime wheel of this environment."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import pytest

import discl
from discl import _discl


def test_ort_dylib_path_comes_first(monkeypatch, tmp_path):
    monkeypatch.setenv("ORT_DYLIB_PATH", str(tmp_path / "lib.so"))
    assert discl.onnxruntime_library() == (str(tmp_path / "lib.so"), "ORT_DYLIB_PATH")


def test_then_the_vendored_copy_relative_to_the_current_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("ORT_DYLIB_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    library = tmp_path / _discl.BUNDLED_LIBRARY
    library.parent.mkdir(parents=True)
    library.write_bytes(b"")
    assert discl.onnxruntime_library() == (_discl.BUNDLED_LIBRARY, "vendor")


def test_then_the_onnxruntime_wheel(monkeypatch, tmp_path):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("no onnxruntime wheel in this environment")
    monkeypatch.delenv("ORT_DYLIB_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    path, rule = discl.onnxruntime_library()
    assert rule == "onnxruntime wheel" and os.path.basename(path).startswith("libonnxruntime")
    assert "onnxruntime" not in sys.modules  # found without importing it


def test_a_pipeline_runs_on_the_wheels_library(tiny, python_env, tmp_path):
    """In a fresh process with neither ORT_DYLIB_PATH nor vendor/ (run from elsewhere), the
    wheel's library is used and a model runs."""
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("no onnxruntime wheel in this environment")
    text, _, _, _ = tiny
    text = text.replace('"models/fashion-cnn"', f'"{os.path.abspath("models/fashion-cnn")}"')
    env = {k: v for k, v in python_env.items() if k != "ORT_DYLIB_PATH"}
    script = (
        "import sys, os, discl; p = discl.Pipeline.from_toml(sys.stdin.read());"
        "s = p.run(); print(discl.onnxruntime_library().rule, os.environ['ORT_DYLIB_PATH']);"
        "print(s.nodes['scores']['computed'])"
    )
    done = subprocess.run([sys.executable, "-c", script], input=text, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    version = tuple(int(n) for n in importlib.metadata.version("onnxruntime").split(".")[:2])
    if version < (1, 31):  # too old for discl: the error says so
        assert done.returncode == 1 and "expected version >= '1.31" in done.stderr, done.stderr
        return
    assert done.returncode == 0, done.stderr
    rule_line, computed = done.stdout.splitlines()
    assert rule_line.startswith("ORT_DYLIB_PATH ") and "onnxruntime" in rule_line
    assert computed == "120"
