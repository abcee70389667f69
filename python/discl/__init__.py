"""discl: diffusion curricula for image classifiers, from Python.

The discl dataflow engine (Rust) behind its embedding API::

    import discl

    pipeline = discl.Pipeline.from_file("pipelines/tiny-sd-spectrum.toml")
    pipeline.validate()                      # raises discl.GraphError with every error
    summary = pipeline.run(workers=2)        # once; Ctrl-C stops cleanly

    with pipeline.start() as running:        # or keep it running and refresh
        running.refresh()
        hard = running.snapshot("manifests", "hard")    # a pyarrow.Table
        running.push_feedback([{"sample": "coat/1.png", "p_true": 0.1, "predicted": "shirt"}],
                              checkpoint=1)
        running.refresh()                    # the hard set follows the feedback

Training side: ``discl.torch.StageDataset`` (a PyTorch-style dataset over a stage manifest)
and ``discl.feedback.write_scores`` (the feedback files a ``feedback`` node reads).

The native extension is imported on first use of what needs it, so ``discl.feedback`` works
from a source checkout without building it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import DisclError, GraphError, GraphProblem
from ._manifest import read_stage, stage_manifest
from ._ort import OnnxRuntimeLibrary, onnxruntime_library
from ._summary import Summary

if TYPE_CHECKING:
    from ._discl import sample_id
    from ._pipeline import Node, Pipeline, RunningPipeline

__version__ = "0.1.0"

__all__ = [
    "DisclError",
    "GraphError",
    "GraphProblem",
    "Node",
    "OnnxRuntimeLibrary",
    "Pipeline",
    "RunningPipeline",
    "Summary",
    "onnxruntime_library",
    "read_stage",
    "sample_id",
    "stage_manifest",
]

_NATIVE = {"Pipeline": "_pipeline", "RunningPipeline": "_pipeline", "Node": "_pipeline", "sample_id": "_discl"}


def __getattr__(name: str) -> Any:
    module = _NATIVE.get(name)
    if module is None:
        raise AttributeError(f"module 'discl' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
