"""Which ONNX Runtime library the engine loads.

The engine loads ``libonnxruntime`` at run time (it links none). From Python it is found in this
order, the first two exactly as the ``discl`` command line finds it:

1. ``ORT_DYLIB_PATH``, when set (a path to the library file);
2. ``vendor/onnxruntime/libonnxruntime.so.<version>`` relative to the current directory (where
   ``scripts/setup.sh`` puts it in a checkout of the repository);
3. the library inside the ``onnxruntime`` wheel installed in the same environment
   (``onnxruntime/capi/libonnxruntime.so.*``; ``pip install "discl[onnxruntime]"``), found
   without importing onnxruntime. discl needs ONNX Runtime 1.31 or newer.

Rule 3 works by setting ``ORT_DYLIB_PATH`` for this process just before the first pipeline
validates, starts or runs (the engine reads it when it opens its first model).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import NamedTuple, Optional

VARIABLE = "ORT_DYLIB_PATH"


class OnnxRuntimeLibrary(NamedTuple):
    """Where the library comes from: ``path`` (None when none was found) and ``rule``, one of
    ``"ORT_DYLIB_PATH"``, ``"vendor"``, ``"onnxruntime wheel"`` or ``"not found"``."""

    path: Optional[str]
    rule: str


def _bundled() -> str:
    from . import _discl

    return _discl.BUNDLED_LIBRARY


def _version_key(path: Path):
    numbers = re.findall(r"\d+", path.name)
    return tuple(int(n) for n in numbers)


def wheel_library() -> Optional[str]:
    """The ONNX Runtime library of the ``onnxruntime`` package installed beside discl, if any."""
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        capi = Path(location) / "capi"
        found = [
            p
            for pattern in ("libonnxruntime.so.*", "libonnxruntime.*.dylib", "onnxruntime.dll")
            for p in capi.glob(pattern)
            if p.is_file()
        ]
        if found:
            return str(max(found, key=_version_key))
    return None


def onnxruntime_library() -> OnnxRuntimeLibrary:
    """The ONNX Runtime library a pipeline started now would load, and the rule that chose it
    (see the module's documentation for the order)."""
    path = os.environ.get(VARIABLE)
    if path:
        return OnnxRuntimeLibrary(path, VARIABLE)
    bundled = _bundled()
    if Path(bundled).exists():
        return OnnxRuntimeLibrary(bundled, "vendor")
    wheel = wheel_library()
    if wheel is not None:
        return OnnxRuntimeLibrary(wheel, "onnxruntime wheel")
    return OnnxRuntimeLibrary(None, "not found")


def prepare() -> OnnxRuntimeLibrary:
    """Before the engine opens a model: points ``ORT_DYLIB_PATH`` at the wheel's library when
    the first two rules find nothing. Returns what was found."""
    found = onnxruntime_library()
    if found.rule == "onnxruntime wheel":
        os.environ[VARIABLE] = found.path
    return found


OnnxRuntimeLibrary.__module__ = "discl"
