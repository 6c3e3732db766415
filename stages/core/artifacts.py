"""Artifacts: atomic writes (temporary name, then rename), deterministic JSON, content hashes."""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.core.errors import PipelineError

WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on failure remove it.

    An interrupted stage therefore never leaves a half-written file (or folder) under the real name; what a killed
    run left under a temporary name is removed by ``sweep_temporaries`` (the env stage).

    Args:
        path: the artifact's real name.
        directory: yield an empty folder instead of a file.

    Yields:
        Path: where to write; renamed onto ``path`` when the block ends without an exception.

    Raises:
        PipelineError: a full disk or a permission error while writing, naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as e:
        raise PipelineError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        yield tmp
        if directory and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        if isinstance(e, OSError) and e.errno in WRITE_ERRORS and _about(e, tmp):
            raise PipelineError(f"cannot write {path}: {e.strerror or e}") from e
        raise


def sweep_temporaries(folder: str | os.PathLike[str]) -> None:
    """Remove what killed runs left under temporary names (``.<name>.*.tmp``) anywhere below ``folder``.

    Only safe while no stage is writing: the env stage calls it, first in every `dvc repro`, under DVC's repo lock.

    Args:
        folder: the build folder.
    """
    for stale in sorted(Path(folder).rglob(".*.tmp"), reverse=True):
        _remove(stale)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _about(error: OSError, tmp: Path) -> bool:
    """Whether ``error`` concerns the temporary output (writes carry no file name, or the temporary one)."""
    names = [n for n in (error.filename, error.filename2) if n]
    return not names or any(str(n).startswith(str(tmp)) for n in names)


def to_json(data: Any) -> str:
    """Deterministic JSON: sorted keys, two-space indent, trailing newline.

    Args:
        data: plain data; numpy scalars and paths are converted.

    Returns:
        str: the text, identical for equal data.
    """
    return json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n"


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Atomically write ``data`` as deterministic JSON.

    Args:
        path: the file to write.
        data: plain data (``to_json``).
    """
    write_text(path, to_json(data))


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write ``text`` (UTF-8).

    Args:
        path: the file to write.
        text: its content.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON artifact.

    Args:
        path: the file to read.

    Returns:
        Any: the parsed content.

    Raises:
        PipelineError: the file is missing (run `dvc repro`) or unreadable, naming it.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise PipelineError(f"missing {path}: run `dvc repro` to produce it") from e
    except (OSError, ValueError) as e:
        raise PipelineError(f"cannot read {path}: {e}") from e


def sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes.

    Args:
        path: the file.

    Returns:
        str: 64 hex digits.
    """
    digest = hashlib.sha256()
    feed(digest, Path(path))
    return digest.hexdigest()


def feed(digest: Any, path: Path) -> None:
    """Update ``digest`` (a hashlib object) with a file's bytes, a megabyte at a time.

    Args:
        digest: e.g. ``hashlib.sha256()``.
        path: the file.
    """
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
