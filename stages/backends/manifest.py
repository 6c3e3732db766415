"""The manifest check every engine load goes through: the engine file's hash, its folder, and the fingerprint it
was built for against this machine's (which fields differ, named in one line)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.core.artifacts import read_json, sha256
from stages.core.errors import PipelineError

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


def verified_engine(engine_dir: Path, fingerprint: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """Read ``engine_dir``'s manifest and refuse, in one line, an engine that does not match it or this machine.

    Returns the manifest and the engine file's path.
    """
    manifest = read_json(engine_dir / MANIFEST)
    engine = (engine_dir / manifest["engine"]).resolve()
    if engine.parent != engine_dir.resolve():
        raise PipelineError(f"{engine_dir / MANIFEST}: engine file {manifest['engine']!r} is outside its folder")
    if not engine.is_file() or sha256(engine) != manifest["engine_sha256"]:
        raise PipelineError(
            f"{engine_dir / manifest['engine']} does not match its manifest (sha256): "
            "restore it with `dvc checkout` or rebuild with `dvc repro`"
        )
    diff = first_difference(manifest["fingerprint"], fingerprint)
    if diff:
        key, built, now = diff
        raise PipelineError(
            f"{engine_dir} was built for {key}={built}, this machine has {key}={now}: rebuild with `dvc repro`"
        )
    return manifest, engine
