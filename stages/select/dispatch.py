"""The engine folder of a race run per batch range: each heat's winner, the largest range's at the top (the folder
is that engine's, as with one heat) and each other range's in ``bs<first>-<last>/``, with the top manifest's
``dispatch`` naming which engine serves which batches (``Engine`` routes each call by its batch)."""

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stages.core.artifacts import read_json, write_json
from stages.core.graph_files import files_bytes
from stages.runtime.dispatch import PRIMARY
from stages.runtime.manifest import MANIFEST

OBJECTIVES = ("per_batch", "latency", "throughput")  # backend.race.objective


def assemble(winners: Sequence[tuple[tuple[int, int], Path]], record: list | None, final: Path) -> dict[str, Any]:
    """Copy each heat's winning engine folder into ``final`` and write the top manifest's ``race`` and ``dispatch``.

    Args:
        winners: (the batch range it serves, its engine folder), one per heat, ranges ascending.
        record: the race's record of every candidate (None: one candidate, nothing raced).
        final: the (empty) engine folder.

    Returns:
        dict: the top manifest written (``dispatch`` None with one heat).
    """
    shutil.copytree(winners[-1][1], final, dirs_exist_ok=True)
    parts = []
    for span, folder in winners:
        where = PRIMARY if folder == winners[-1][1] else f"bs{span[0]}-{span[1]}"
        if where != PRIMARY:
            shutil.copytree(folder, final / where)
        part = read_json(final / where / MANIFEST)
        keys = ("backend", "precision", "engine_sha256", "settings")
        parts.append({"serves": list(span), "folder": where} | {k: part[k] for k in keys})
    manifest = read_json(final / MANIFEST) | {"race": record, "dispatch": parts if len(parts) > 1 else None}
    write_json(final / MANIFEST, manifest)
    return manifest


def served_line(manifest: dict[str, Any], folder: Path) -> str:
    """``openvino fp32 engine (12 KiB)``, or per batch range where the folder holds several engines.

    Args:
        manifest: the top manifest.
        folder: the engine folder.

    Returns:
        str: the build stage's line, without its destination.
    """

    def one(part: dict[str, Any], where: Path) -> str:
        size = files_bytes(where / read_json(where / MANIFEST)["engine"])  # with its sidecar
        shown = f"{size / 2**20:.0f} MiB" if size >= 2**24 else f"{size / 1024:.0f} KiB"
        return f"{part['backend']} {part['precision']} engine ({shown})"

    if not manifest.get("dispatch"):
        return one(manifest, folder)
    shown = [f"batch {p['serves'][0]}-{p['serves'][1]}: {one(p, folder / p['folder'])}" for p in manifest["dispatch"]]
    return "one engine per batch range: " + "; ".join(shown)
