"""Writing the feedback files a ``feedback`` node reads (README: "The trainer feedback protocol").

A trainer writes, into the feedback node's folder (its ``path``), after K finished stages:

- ``checkpoint-K.jsonl``: one line per training sample,
  ``{"sample": <id or dataset-relative name>, "p_true": 0.83, "loss": 0.19, "predicted": "coat"}``
  (``loss`` optional: −ln p_true). Later checkpoints supersede earlier ones and the classifier's
  scores, so the hard set follows the trainer.
- ``progress-K.jsonl`` (adaptive curricula): one line per validation image and level,
  ``{"sample": <id or name>, "level": 500, "p_true": 0.41}`` (level in per mille, 1000 for the
  real image); ``progress-0.jsonl``, before training, is optional.

Each file is written whole (``.name.tmp``, then renamed: the engine reads final names only), so
a running pipeline never sees half a file. The engine is the judge of each line (a bad one
becomes an error record naming file and line, the rest still counts); these helpers refuse
the mistakes they can see before writing.

This module needs neither the native extension nor any third-party package, so a trainer can
use it from a checkout (``sys.path`` pointing at ``python/``) without building discl.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Union

REAL_LEVEL = 1000
"""The level of a real image in progress lines and stage manifests (λ = 1, per mille)."""

PathLike = Union[str, "os.PathLike[str]"]


def _plain(value: Any) -> Any:
    """numpy scalars (and anything else with ``.item()``) as plain Python numbers."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _sample(value: Any, where: str) -> Union[int, str]:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{where}: sample must be an id (int) or a dataset-relative name (str), got {value!r}")
    if isinstance(value, int) and not 0 <= value < 2**64:
        raise ValueError(f"{where}: sample id {value} is not an unsigned 64-bit number")
    return value


def _probability(value: Any, where: str) -> float:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: p_true must be a probability in [0, 1], got {value!r}")
    return float(value)


def score_line(row: Mapping[str, Any], where: str = "row") -> Dict[str, Any]:
    """One ``checkpoint-K.jsonl`` line from a row with ``sample``, ``p_true``, ``predicted`` and
    optionally ``loss``; other keys are an error."""
    unknown = set(row) - {"sample", "p_true", "loss", "predicted"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (a score has sample, p_true, loss, predicted)")
    for key in ("sample", "p_true", "predicted"):
        if key not in row:
            raise ValueError(f"{where}: missing {key}")
    line: Dict[str, Any] = {"sample": _sample(row["sample"], where), "p_true": _probability(row["p_true"], where)}
    if row.get("loss") is not None:
        loss = _plain(row["loss"])
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss) or loss < 0:
            raise ValueError(f"{where}: loss must be a finite, non-negative number, got {loss!r}")
        line["loss"] = float(loss)
    predicted = _plain(row["predicted"])
    if not isinstance(predicted, str):
        raise ValueError(f"{where}: predicted must be a class name (str), got {predicted!r}")
    line["predicted"] = predicted
    return line


def progress_line(row: Mapping[str, Any], where: str = "row") -> Dict[str, Any]:
    """One ``progress-K.jsonl`` line from a row with ``sample``, ``level`` (per mille, 0–1000)
    and ``p_true``; other keys are an error."""
    unknown = set(row) - {"sample", "level", "p_true"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (progress has sample, level, p_true)")
    for key in ("sample", "level", "p_true"):
        if key not in row:
            raise ValueError(f"{where}: missing {key}")
    level = _plain(row["level"])
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= REAL_LEVEL:
        raise ValueError(f"{where}: level must be an integer per mille from 0 to {REAL_LEVEL}, got {level!r}")
    return {"sample": _sample(row["sample"], where), "level": level, "p_true": _probability(row["p_true"], where)}


def write_atomically(folder: PathLike, name: str, lines: Iterable[Mapping[str, Any]]) -> Path:
    """``folder/name`` written whole, one JSON object a line: ``.name.tmp`` first, synced, then
    renamed into place. Creates ``folder``. Returns the final path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp, final = folder / f".{name}.tmp", folder / name
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _number(value: int, what: str) -> int:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a whole number ≥ 0, got {value!r}")
    return value


def write_scores(folder: PathLike, checkpoint: int, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Writes ``folder/checkpoint-{checkpoint}.jsonl``: the trainer's scores after
    ``checkpoint`` finished stages, one row per training sample (``sample``, ``p_true``,
    ``predicted``, optional ``loss``). Every row is checked before anything is written.

    Example: ``write_scores("out/p/feedback", 1, [{"sample": "coat/1.png", "p_true": 0.2,
    "predicted": "shirt"}])`` writes ``out/p/feedback/checkpoint-1.jsonl``.
    """
    checkpoint = _number(checkpoint, "checkpoint")
    lines = [score_line(row, f"row {i}") for i, row in enumerate(rows)]
    return write_atomically(folder, f"checkpoint-{checkpoint}.jsonl", lines)


def write_progress(folder: PathLike, after_stages: int, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Writes ``folder/progress-{after_stages}.jsonl``: p(true class) of each validation image
    at each level after ``after_stages`` stages (``sample``, ``level``, ``p_true``), which an
    adaptive curriculum reads."""
    after_stages = _number(after_stages, "after_stages")
    lines = [progress_line(row, f"row {i}") for i, row in enumerate(rows)]
    return write_atomically(folder, f"progress-{after_stages}.jsonl", lines)
