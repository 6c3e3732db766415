"""The manifest check every engine load goes through: the engine file's hash, its folder, and the fingerprint it
was built for against this machine's (which fields differ, named in one line)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.core.artifacts import read_json
from stages.core.errors import PipelineError
from stages.core.graph_files import files_sha256

MANIFEST = "manifest.json"


def differences(built: Any, current: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every (dotted key, built value, current value) where two nested dicts differ, in sorted key order (lists of
    one length compared item by item, an item's index its key)."""
    if isinstance(built, dict) and isinstance(current, dict):
        for key in sorted(set(built) | set(current)):
            yield from differences(built.get(key), current.get(key), f"{prefix}{key}.")
    elif isinstance(built, list) and isinstance(current, list) and len(built) == len(current):
        for index, (old, new) in enumerate(zip(built, current, strict=True)):
            yield from differences(old, new, f"{prefix}{index}.")
    elif built != current:
        yield prefix.rstrip("."), built, current


def first_difference(built: Any, current: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted key, built value, current value) where two fingerprints differ, else None."""
    return next(differences(built, current, prefix), None)


def read_manifest(folder: Path) -> dict[str, Any]:
    """``folder``'s manifest, refused in one line where the folder holds none.

    Args:
        folder: an engine or deploy folder.

    Returns:
        dict: the manifest.
    """
    if not (folder / MANIFEST).is_file():
        raise PipelineError(
            f"{folder} holds no {MANIFEST}: give an engine folder (build/<model>/<precision>/<target>/engine) or a deploy folder"
        )
    return read_json(folder / MANIFEST)


def engine_file(folder: Path, manifest: dict[str, Any]) -> Path:
    """The engine file ``manifest`` names, refused in one line unless it lies in ``folder`` and its sha256 matches.

    Args:
        folder: the engine or deploy folder.
        manifest: its manifest.

    Returns:
        Path: the engine file, resolved.
    """
    engine = (folder / manifest["engine"]).resolve()
    if engine.parent != folder.resolve():
        raise PipelineError(f"{folder / MANIFEST}: engine file {manifest['engine']!r} is outside its folder")
    if not engine.is_file() or files_sha256(engine) != manifest["engine_sha256"]:
        raise PipelineError(
            f"{folder / manifest['engine']} does not match its manifest (sha256): "
            "restore it with `dvc checkout` or rebuild with `dvc repro`"
        )
    return engine


def host_mismatch(folder: Path, manifest: dict[str, Any], fingerprint: dict[str, Any]) -> str | None:
    """One line naming the first field where the fingerprint ``manifest`` was built for differs from this
    machine's ``fingerprint``, else None.

    Args:
        folder: the engine or deploy folder, for the message.
        manifest: its manifest.
        fingerprint: the engine's backend's fingerprint on this machine.

    Returns:
        str | None: the difference, or None.
    """
    diff = first_difference(manifest["fingerprint"], fingerprint)
    if diff is None:
        return None
    key, built, now = diff
    return f"{folder} was built for {key}={built}, this machine has {key}={now}"
