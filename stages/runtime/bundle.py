"""What an engine folder holds besides the engine: its I/O record as ``TensorSpec``s (and the check of a feed
against them) and the precision graph the CPU fallback runs; and ``EngineError``, the one-line error of opening or
running an engine."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import PipelineError
from stages.core.graph_files import files_sha256


class EngineError(PipelineError):
    """An engine that cannot be opened or run as given, in one line naming the file or input and the fix."""


@dataclass(frozen=True)
class TensorSpec:
    """An engine input or output: name, numpy dtype name, shape (a dynamic axis by its name)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


def tensor_specs(entries: list[Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
    """The manifest's ``io`` entries as ``TensorSpec``s.

    Args:
        entries: ``io["inputs"]`` or ``io["outputs"]``.

    Returns:
        tuple[TensorSpec, ...]: in the graph's order.
    """
    return tuple(TensorSpec(e["name"], e["dtype"], tuple(e["shape"])) for e in entries)


def fallback_graph(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """The precision graph the engine was built from, checked against its sha256: a deploy folder's own copy
    (``graph``), else the precision stage's file the manifest names (``onnx``, relative to the repository).

    Args:
        folder: the engine or deploy folder.
        manifest: its manifest.

    Returns:
        Path: the graph, its sha256 checked.
    """
    if "graph" in manifest:
        path, digest = folder / manifest["graph"]["file"], manifest["graph"]["sha256"]
    else:
        path, digest = Path(manifest["onnx"]["path"]), manifest["onnx"]["sha256"]
    if not path.is_file() or files_sha256(path) != digest:
        raise EngineError(f"{path}: the engine's graph is missing or does not match its manifest (sha256)")
    return path


def check_feed(inputs: Sequence[TensorSpec], feed: Mapping[str, Any]) -> None:
    """One line for a feed that does not fit an engine's ``inputs``: names, dtypes, ranks, fixed sizes.

    Args:
        inputs: the engine's input specs.
        feed: input name -> array.

    Raises:
        EngineError: the first mismatch.
    """
    wanted = {s.name: s for s in inputs}
    if set(feed) != set(wanted):
        raise EngineError(f"feed has inputs {sorted(feed)}; the engine takes {sorted(wanted)}")
    for name, spec in wanted.items():
        array = np.asarray(feed[name])
        fits = len(array.shape) == len(spec.shape) and all(
            isinstance(d, str) or d == n for d, n in zip(spec.shape, array.shape, strict=True)
        )
        if array.dtype.name != spec.dtype or not fits:
            raise EngineError(
                f"input {name!r}: got {list(array.shape)} {array.dtype.name}, the engine takes "
                f"{list(spec.shape)} {spec.dtype}"
            )
