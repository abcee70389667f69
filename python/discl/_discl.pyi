"""Type stubs of the native module ``discl._discl`` (Rust, PyO3). Use the Python API in
``discl`` (``discl.Pipeline``, ``discl.RunningPipeline``), which wraps these classes."""

from typing import List, Optional, Tuple

BUNDLED_LIBRARY: str
"""Where ``scripts/setup.sh`` puts ONNX Runtime, relative to a checkout's root."""
__version__: str

SummaryParts = Tuple[str, str]
"""(the summary as ``--summary-json`` JSON, the line ``discl run`` prints)"""

def sample_id(name: str) -> int:
    """The stable id of a sample with this dataset-relative name (what the engine derives)."""

class Pipeline:
    @staticmethod
    def from_file(path: str) -> Pipeline: ...
    @staticmethod
    def from_toml(text: str, name: str) -> Pipeline: ...
    def validate(self) -> None: ...
    def dot(self) -> str: ...
    def configuration(self) -> List[str]: ...
    @property
    def name(self) -> str: ...
    @property
    def output(self) -> str: ...
    def nodes(self) -> List[Tuple[str, str, List[str]]]: ...
    def run(self, timely_args: List[str], progress: bool) -> SummaryParts: ...
    def start(self, timely_args: List[str], progress: bool) -> RunningPipeline: ...

class RunningPipeline:
    def refresh(self) -> int: ...
    def push_samples(
        self,
        source: str,
        rows: List[Tuple[str, str, str, Optional[int], Optional[str], int]],
    ) -> None:
        """rows: (name, label, path, id or None, digest hex or None, diff ±1)"""
    def push_feedback(self, feedback: str, rows: List[Tuple[str, int, int]]) -> None:
        """rows: (checkpoint-N.jsonl line, checkpoint N, diff ±1)"""
    def push_progress(self, feedback: str, rows: List[Tuple[str, int, int]]) -> None:
        """rows: (progress-N.jsonl line, N, diff ±1)"""
    def snapshot(self, sink: str, input: str) -> bytes:
        """The committed snapshot of a sink input as the sink's Parquet bytes."""
    def summary(self) -> SummaryParts: ...
    def stop(self) -> SummaryParts: ...
    @property
    def stopped(self) -> bool: ...
