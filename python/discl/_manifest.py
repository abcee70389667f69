"""Finding and reading stage manifests (README: "Curricula and stage manifests").

A sink with a mix input writes stage N of the curriculum to
``<output>/<sink>/current/<mix input>/stage-N.jsonl`` (and/or ``.parquet``): one row per
(epoch, image) with ``stage``, ``epoch``, ``sample``, ``level`` (per mille; 1000 = real),
``seed`` and ``prompt`` (null for real images), ``label``, ``path`` and ``copies``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Union

STAGE_COLUMNS = ("stage", "epoch", "sample", "level", "label", "path", "copies")

PathLike = Union[str, "os.PathLike[str]"]


def stage_manifest(output: PathLike, stage: int, sink: str = "manifests", mix: str = "mix", format: str = "jsonl") -> Path:
    """The file of stage ``stage`` in the version ``<output>/<sink>/current`` points to now,
    resolved once, so later snapshots do not change what is read (a version never changes).
    ``format`` is ``"jsonl"`` or ``"parquet"``.

    Raises FileNotFoundError if the sink has no committed version yet or that version holds no
    such stage (the stage index, the curriculum's input of the sink, lists the stages).
    """
    if format not in ("jsonl", "parquet"):
        raise ValueError(f"format must be 'jsonl' or 'parquet', got {format!r}")
    folder = Path(output) / sink
    try:
        target = os.readlink(folder / "current")
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder}/current: no committed version yet") from None
    path = (folder / target).resolve() / mix / f"stage-{stage}.{format}"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such stage manifest (does the stage index list stage {stage}?)")
    return path


def read_stage(path: PathLike) -> List[Dict[str, Any]]:
    """The rows of a stage manifest, JSONL or Parquet (through pyarrow), in file order; an error
    names the file (and line) of anything that is not a stage manifest."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: malformed JSON: {e}") from None
    for row in rows[:1]:
        missing = [c for c in STAGE_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"{path}: not a stage manifest: missing column(s) {', '.join(missing)}")
    return rows
