"""An engine folder that holds one engine per batch range (the race's ``per_batch`` objective): its parts, each
opened and checked against its own manifest and against the top manifest's record of it, and the part a call's
batch goes to."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.runtime.bundle import EngineError

if TYPE_CHECKING:
    from stages.runtime.engine import Engine

PRIMARY = "."  # the dispatch record's folder of the engine at the top of the folder


@dataclass(frozen=True)
class Part:
    """One engine of a dispatching folder and the batches it serves."""

    first: int
    last: int
    engine: "Engine"


def open_parts(
    folder: Path, dispatch: Sequence[Mapping[str, Any]], opener: Callable[[Path], "Engine"], primary: "Engine"
) -> list[Part]:
    """Open every part ``dispatch`` records (the top engine is ``primary``, already open); each part's engine file is
    checked against its own manifest by ``opener``, and its manifest against the top manifest's record.

    Args:
        folder: the engine or deploy folder.
        dispatch: the top manifest's ``dispatch``.
        opener: opens one engine folder (``Engine.open`` without dispatch).
        primary: the top folder's engine, as the part that serves its own range.

    Returns:
        list[Part]: one per range, ascending.
    """
    parts: list[Part] = []
    try:
        for record in dispatch:
            engine = primary if record["folder"] == PRIMARY else opener(folder / record["folder"])
            parts.append(Part(int(record["serves"][0]), int(record["serves"][1]), engine))
            if engine.manifest["engine_sha256"] != record["engine_sha256"]:
                where = folder / record["folder"]
                raise EngineError(f"{where}: its engine is not the one {folder}/manifest.json records (sha256)")
    except BaseException:
        for part in parts:
            if part.engine is not primary:
                part.engine.close()
        raise
    return parts


def route(parts: Sequence[Part], batch: int) -> "Engine":
    """The engine that serves ``batch``.

    Args:
        parts: the folder's parts.
        batch: the call's batch size.

    Returns:
        Engine: its engine.

    Raises:
        EngineError: no part serves the batch (one line naming the ranges).
    """
    for part in parts:
        if part.first <= batch <= part.last:
            return part.engine
    held = ", ".join(f"{p.first}-{p.last}" for p in parts)
    raise EngineError(f"batch {batch} is outside the batches this engine serves ({held})")
