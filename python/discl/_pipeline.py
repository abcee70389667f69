"""``Pipeline`` and ``RunningPipeline``: discl's embedding API from Python.

Long calls (``validate``, ``run``, ``start``, ``refresh``, ``stop``) release the GIL and honour
Ctrl-C: the first one finishes the version in hand (a ``train`` node stops between epochs),
commits it, then raises ``KeyboardInterrupt``, so the output folder is left at a committed
version; a second one abandons the call at once (it goes on in the background, and the
running pipeline answers later calls with ``DisclError`` "busy" until it is done).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Union

from . import _discl, _ort
from ._errors import DisclError
from ._summary import Summary
from .feedback import progress_line, score_line

if TYPE_CHECKING:
    import pyarrow

PathLike = Union[str, "os.PathLike[str]"]
Rows = Union[Iterable[Mapping[str, Any]], Any]
"""Rows: an iterable of dicts, or a ``pyarrow.Table`` / pandas ``DataFrame`` of them."""


class Node(NamedTuple):
    """A node of a compiled graph."""

    name: str
    op: str
    inputs: List[str]


def _timely_args(workers: int, timely_args: Sequence[str]) -> List[str]:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number ≥ 1, got {workers!r}")
    return ["-w", str(workers), *(str(a) for a in timely_args)]


def _records(rows: Rows) -> List[Mapping[str, Any]]:
    if hasattr(rows, "to_pylist"):  # pyarrow.Table
        return rows.to_pylist()
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # pandas.DataFrame
        return rows.to_dict("records")
    if isinstance(rows, Mapping):
        raise TypeError("rows must be an iterable of dicts (got one dict: wrap it in a list)")
    return list(rows)


def _diff(row: Mapping[str, Any], where: str) -> int:
    diff = row.get("diff", 1)
    if diff not in (1, -1) or isinstance(diff, bool):
        raise ValueError(f"{where}: diff must be 1 (insert) or -1 (retract), got {diff!r}")
    return int(diff)


def _count(value: Any, what: str, where: str) -> int:
    value = getattr(value, "item", lambda: value)()
    if value is None:
        raise ValueError(f"{where}: no {what} (give it in the row or as the call's {what}=)")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: {what} must be a whole number ≥ 0, got {value!r}")
    return value


class Pipeline:
    """A compiled graph file (README: "Running a pipeline"). Relative paths in it are relative
    to the current directory when the pipeline validates, starts or runs, as for ``discl run``.

    >>> pipeline = discl.Pipeline.from_file("pipelines/tiny-sd-spectrum.toml")
    >>> pipeline.validate()                  # loads every model once
    >>> summary = pipeline.run(workers=2)    # one version from everything the inputs hold
    """

    def __init__(self, native: "_discl.Pipeline"):
        self._native = native

    @classmethod
    def from_file(cls, path: PathLike) -> "Pipeline":
        """Reads and compiles a graph file (structure only; no model is loaded). Raises
        ``GraphError`` listing every error, each with file, line and node."""
        return cls(_discl.Pipeline.from_file(os.fspath(path)))

    @classmethod
    def from_toml(cls, text: str, name: str = "<string>") -> "Pipeline":
        """Compiles graph-file text; ``name`` stands for the file in errors."""
        return cls(_discl.Pipeline.from_toml(text, name))

    @property
    def name(self) -> str:
        """The ``[pipeline] name``."""
        return self._native.name

    @property
    def output(self) -> Path:
        """The output folder, as the graph file gives it."""
        return Path(self._native.output)

    def nodes(self) -> List[Node]:
        """Every node, in dependency order."""
        return [Node(name, op, list(inputs)) for name, op, inputs in self._native.nodes()]

    def validate(self) -> None:
        """Checks files and models too (loads every model once); raises ``GraphError`` with
        every error found. Releases the GIL; Ctrl-C raises ``KeyboardInterrupt``."""
        _ort.prepare()
        self._native.validate()

    def graph_dot(self) -> str:
        """The graph as Graphviz DOT (what ``discl graph`` prints)."""
        return self._native.dot()

    def configuration(self) -> List[str]:
        """What a run will use, one line each, defaults resolved (each model's device and
        sessions × threads, each generate node's batch size)."""
        return list(self._native.configuration())

    def run(self, workers: int = 1, *, timely_args: Sequence[str] = (), progress: bool = False) -> Summary:
        """Runs the pipeline once, like ``discl run``: one version from everything the sources
        and feedback folders hold (with a ``train`` node, one version per trained stage).

        ``workers`` timely workers in this process; ``timely_args`` are more of timely's own
        arguments (``-n``, ``-p``, ``-h`` for a cluster); ``progress`` shows a spinner on a
        terminal. Releases the GIL; Ctrl-C finishes and commits the version in hand, then
        raises ``KeyboardInterrupt`` (a second Ctrl-C abandons it)."""
        args = _timely_args(workers, timely_args)
        _ort.prepare()
        return Summary._from_parts(self._native.run(args, progress))

    def start(self, workers: int = 1, *, timely_args: Sequence[str] = (), progress: bool = False) -> "RunningPipeline":
        """Loads every model, starts the workers and returns the running pipeline; nothing is
        read until its first ``refresh()``. Use it as a context manager to stop it cleanly::

            with pipeline.start() as running:
                running.refresh()
        """
        args = _timely_args(workers, timely_args)
        _ort.prepare()
        return RunningPipeline(self._native.start(args, progress), self)

    def __repr__(self) -> str:
        return f"<discl.Pipeline {self.name!r} output={str(self.output)!r}>"


class RunningPipeline:
    """A started pipeline (``Pipeline.start``): each ``refresh()`` rescans every source and
    feedback folder, takes what was pushed, and computes and commits the next version; sinks
    write only versions that changed something. A context manager: leaving the ``with`` block
    stops it (closes the inputs, drains, joins the workers, commits)."""

    def __init__(self, native: "_discl.RunningPipeline", pipeline: Pipeline):
        self._native = native
        self._pipeline = pipeline

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline this was started from."""
        return self._pipeline

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._native.stopped

    def _only(self, op: str, given: Optional[str], what: str) -> str:
        if given is not None:
            return given
        names = [n.name for n in self._pipeline.nodes() if n.op == op]
        if len(names) != 1:
            raise ValueError(f"this pipeline has {len(names)} {op} nodes ({', '.join(names) or 'none'}): name one with {what}=")
        return names[0]

    def refresh(self) -> int:
        """Computes the next version from what changed and commits it once every sink has
        written it; returns its number (numbers can have gaps: a refresh that changes nothing
        writes nothing). Releases the GIL; Ctrl-C finishes the version, then raises."""
        return self._native.refresh()

    def push_samples(self, rows: Rows, source: Optional[str] = None) -> None:
        """Queues samples for a ``source`` node (the only one, unless ``source`` names it); they
        enter at the next refresh. Each row: ``name`` (dataset-relative, e.g. ``"coat/1.png"``),
        ``label``, ``path``, and optionally ``id`` (default: the id discl derives from the
        name), ``digest`` (64 hex digits; default: BLAKE3 of the file) and ``diff`` (1 inserts,
        the default; -1 retracts). A pushed sample overrides the folder's sample with its id
        until retracted."""
        node = self._only("source", source, "source")
        native_rows = []
        for i, row in enumerate(_records(rows)):
            where = f"row {i}"
            unknown = set(row) - {"name", "label", "path", "id", "digest", "diff"}
            if unknown:
                raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
            missing = [key for key in ("name", "label", "path") if key not in row]
            if missing:
                raise ValueError(f"{where}: missing {', '.join(missing)}")
            name, label, path = row["name"], row["label"], os.fspath(row["path"])
            if not isinstance(name, str) or not isinstance(label, str):
                raise ValueError(f"{where}: name and label must be strings, got {name!r}, {label!r}")
            sample_id = row.get("id")
            sample_id = None if sample_id is None else _count(sample_id, "id", where)
            native_rows.append((name, label, path, sample_id, row.get("digest"), _diff(row, where)))
        self._native.push_samples(node, native_rows)

    def push_feedback(self, rows: Rows, feedback: Optional[str] = None, checkpoint: Optional[int] = None) -> None:
        """Queues trainer scores for a ``feedback`` node (the only one, unless ``feedback`` names
        it), as if read from ``checkpoint-K.jsonl`` in its folder, under the same rules. Each
        row: ``sample`` (id or dataset-relative name), ``p_true``, ``predicted``, optionally
        ``loss`` (default −ln p_true), ``checkpoint`` (default: the ``checkpoint`` argument;
        later checkpoints supersede earlier ones) and ``diff`` (1 or -1)."""
        node = self._only("feedback", feedback, "feedback")
        native_rows = []
        for i, row in enumerate(_records(rows)):
            where = f"row {i}"
            k = _count(row.get("checkpoint", checkpoint), "checkpoint", where)
            line = score_line({key: v for key, v in row.items() if key not in ("checkpoint", "diff")}, where)
            native_rows.append((json.dumps(line), k, _diff(row, where)))
        self._native.push_feedback(node, native_rows)

    def push_progress(self, rows: Rows, feedback: Optional[str] = None, after_stages: Optional[int] = None) -> None:
        """Queues validation progress for a ``feedback`` node's ``progress`` output, as if read
        from ``progress-K.jsonl``. Each row: ``sample``, ``level`` (per mille), ``p_true``,
        optionally ``after_stages`` (default: the argument) and ``diff``."""
        node = self._only("feedback", feedback, "feedback")
        native_rows = []
        for i, row in enumerate(_records(rows)):
            where = f"row {i}"
            k = _count(row.get("after_stages", after_stages), "after_stages", where)
            line = progress_line({key: v for key, v in row.items() if key not in ("after_stages", "diff")}, where)
            native_rows.append((json.dumps(line), k, _diff(row, where)))
        self._native.push_progress(node, native_rows)

    def snapshot(self, sink: str, input: str) -> "pyarrow.Table":
        """Input ``input`` of sink ``sink`` in the last committed version, as a
        ``pyarrow.Table`` with the columns the sink's Parquet file has (README: "Manifest
        columns": ids uint64, scores float32, a synthetic image's key flattened into
        ``sample``, ``level``, ``seed``, ``prompt``), whether or not the sink writes Parquet.
        Stage manifests (a mix input) are one file per stage: see ``discl.stage_manifest``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        return pq.read_table(pa.BufferReader(self._native.snapshot(sink, input)))

    def summary(self) -> Summary:
        """The summary so far."""
        return Summary._from_parts(self._native.summary())

    def stop(self) -> Summary:
        """Closes the inputs, lets the dataflow drain, joins the workers, commits; returns the
        summary. A second ``stop()`` raises ``DisclError``."""
        return Summary._from_parts(self._native.stop())

    def __enter__(self) -> "RunningPipeline":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.stopped:
            return
        if exc_type is None:
            self.stop()
            return
        try:
            self.stop()
        except (DisclError, KeyboardInterrupt):
            pass  # the exception already leaving the block says more

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else "running"
        return f"<discl.RunningPipeline {self._pipeline.name!r} {state}>"


Node.__module__ = "discl"
Pipeline.__module__ = "discl"
RunningPipeline.__module__ = "discl"
