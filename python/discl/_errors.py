"""The exceptions discl raises (the native module raises these same classes)."""

from __future__ import annotations

from typing import Iterable, List, NamedTuple, Optional, Tuple


class DisclError(RuntimeError):
    """A pipeline could not start or run, or a call on a running pipeline failed (an unknown
    node, an unreadable output, a worker that stopped). The message says what and where."""


class GraphProblem(NamedTuple):
    """One error of a graph file, placed as precisely as the engine can."""

    file: str
    """The graph file (or the name given to `Pipeline.from_toml`)."""
    line: int
    """1-based line of the node, or of the field when one is known."""
    node: Optional[str]
    """The node's name (``"out"``), or ``"models.NAME"`` for a model; None for the file itself."""
    label: Optional[str]
    """How the engine labels the place in messages (``"node `out`"``)."""
    field: Optional[str]
    """The field the error is about, where one is known."""
    message: str

    def __str__(self) -> str:
        where = f"{self.label}: " if self.label else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class GraphError(DisclError, ValueError):
    """A graph file with errors: ``errors`` lists every one (the engine reports them all at
    once), each with file, line, node and field; ``str(error)`` is one line per error, as
    ``discl validate`` prints them."""

    errors: List[GraphProblem]

    def __init__(self, errors: Iterable[Tuple[str, int, Optional[str], Optional[str], Optional[str], str]]):
        self.errors = [GraphProblem(*e) for e in errors]
        super().__init__("\n".join(str(e) for e in self.errors))

    def __reduce__(self):
        return (type(self), ([tuple(e) for e in self.errors],))


DisclError.__module__ = "discl"
GraphProblem.__module__ = "discl"
GraphError.__module__ = "discl"
