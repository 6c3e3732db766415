"""An engine folder that holds one engine per batch range (the race's ``per_batch`` objective): its parts, each
opened and checked against its own manifest and against the top manifest's record of it, and the part a call's
batch goes to."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.core.errors import PipelineError
from stages.runtime.bundle import EngineError
from stages.runtime.manifest import MANIFEST, read_manifest

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
            where = part_folder(folder, record)
            engine = primary if where == folder else opener(where)
            parts.append(Part(int(record["serves"][0]), int(record["serves"][1]), engine))
    except BaseException:
        for part in parts:
            if part.engine is not primary:
                part.engine.close()
        raise
    return parts


def part_folder(folder: Path, record: Mapping[str, Any]) -> Path:
    """The folder of one part, checked before anything loads it: a record with its keys, a folder inside ``folder``,
    whose manifest names the engine the top manifest records (sha256).

    Args:
        folder: the engine or deploy folder.
        record: one entry of the top manifest's ``dispatch``.

    Returns:
        Path: the part's folder (``folder`` itself for the top engine).

    Raises:
        EngineError: one line: a malformed record, a folder outside, another engine than the one recorded.
    """
    top = folder / MANIFEST
    if not all(key in record for key in ("folder", "serves", "engine_sha256")):
        raise EngineError(f"{top}: a dispatch entry lacks folder, serves or engine_sha256: rebuild with `dvc repro`")
    name = str(record["folder"])
    if name != PRIMARY and (Path(name).name != name or name in ("", "..")):
        raise EngineError(f"{top}: dispatch folder {name!r} is not a folder of {folder}")
    where = folder if name == PRIMARY else folder / name
    try:
        recorded = read_manifest(where)["engine_sha256"]
    except (PipelineError, KeyError) as e:
        raise EngineError(f"{where}: {e}") from e
    if recorded != record["engine_sha256"]:
        raise EngineError(f"{where}: its engine is not the one {top} records (sha256)")
    return where


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
