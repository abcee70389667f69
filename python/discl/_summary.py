"""What a run did: the summary ``discl run --summary-json`` writes, as an object."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


@dataclass(frozen=True)
class Summary:
    """What a run (or a running pipeline so far) did.

    ``nodes`` maps each node (and the built-in ``errors`` sink) to its counters, as in
    ``--summary-json``: ``op``, ``records_in``, ``records_out``, ``errors``, ``model_calls``,
    ``batches``, ``computed`` (answers a model computed), ``cache_hits`` (answers found in the
    store instead), ``seconds`` and, for a quality node with retries, ``retries``.
    """

    pipeline: str
    versions_written: List[int]
    """The versions any sink wrote, ascending (a refresh that changed nothing writes none)."""
    nodes: Dict[str, Dict[str, Any]]
    errors: int
    """Error records in the last snapshot of ``<output>/errors/``."""
    seconds: float
    training: Optional[Dict[str, Any]] = None
    """A ``train`` node's per-stage report, when the graph has one."""
    line: str = field(default="", compare=False)
    """The one-line summary ``discl run`` prints."""

    @classmethod
    def _from_parts(cls, parts: Tuple[str, str]) -> "Summary":
        data, line = json.loads(parts[0]), parts[1]
        return cls(
            pipeline=data["pipeline"],
            versions_written=list(data["versions_written"]),
            nodes=dict(data["nodes"]),
            errors=int(data["errors"]),
            seconds=float(data["seconds"]),
            training=data.get("training"),
            line=line,
        )

    def to_dict(self) -> Dict[str, Any]:
        """The summary as ``--summary-json`` writes it."""
        out: Dict[str, Any] = {
            "pipeline": self.pipeline,
            "versions_written": list(self.versions_written),
            "nodes": self.nodes,
            "errors": self.errors,
            "seconds": self.seconds,
        }
        if self.training is not None:
            out["training"] = self.training
        return out

    def __str__(self) -> str:
        return self.line


Summary.__module__ = "discl"
