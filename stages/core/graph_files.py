"""An ONNX graph on disk is its ``.onnx`` file plus, past protobuf's 2 GiB limit, the external data file beside it.

Every stage writes graphs through ``save_onnx`` (weights in ``<file>.data``, the ``sidecar``, when the graph is
past ``EXTERNAL_ABOVE`` bytes or its source already kept them outside), copies them with ``copy_graph`` and hashes
them with ``files_sha256``, so a graph's data travels, and is checked, with it. External data is only ever read from the
graph's own folder (``data_files`` refuses any other location).
"""

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.core.artifacts import feed
from stages.core.errors import PipelineError

INLINE_TYPES = (6, 7)  # TensorProto.INT32, INT64: kept in the graph file of a graph with external data
EXTERNAL_ABOVE = 1_800_000_000  # bytes of a serialized graph past which its weights go to <file>.data (limit: 2 GiB)
SIDE_CAR = ".data"  # the external data file's suffix, after the graph's own file name


def data_files(path: str | os.PathLike[str], model: Any | None = None) -> list[Path]:
    """The external data files ``path`` refers to, each checked to lie inside the graph's folder and to exist.

    Args:
        path: the ONNX file.
        model: its ModelProto loaded without external data (read from ``path`` when None).

    Returns:
        list[Path]: the data files, in first-use order (empty for a self-contained graph).

    Raises:
        PipelineError: a location outside the graph's folder, or a missing data file.
    """
    import onnx

    from stages.core.onnx_io import all_tensors

    if model is None:
        model = onnx.load(os.fspath(path), load_external_data=False)
    folder = Path(path).resolve().parent
    found: list[Path] = []
    for tensor in all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(folder):
            raise PipelineError(
                f"unsafe ONNX external data in {path}: tensor {tensor.name!r} points to {location!r}, outside "
                f"the model's folder {folder}; refused (keep the data files beside the model)"
            )
        if not target.is_file():
            raise PipelineError(f"missing ONNX external data for {path}: tensor {tensor.name!r} needs {target}")
        if target not in found:
            found.append(target)
    return found


def save_onnx(model: Any, path: str | os.PathLike[str], external: bool = False) -> None:
    """Write ``model`` to ``path``; its weights go to ``<file>.data`` beside it when ``external`` or when the graph
    is past ``EXTERNAL_ABOVE`` bytes. ``model`` keeps its weights in memory either way.

    Args:
        model: a ModelProto with its weights loaded.
        path: the ONNX file to write.
        external: keep the weights outside even when the graph is small (its source kept them outside).
    """
    import onnx

    path = Path(path)
    data = sidecar(path)
    data.unlink(missing_ok=True)  # onnx appends to an existing data file; an inline graph has none
    if not (external or model.ByteSize() > EXTERNAL_ABOVE):
        onnx.save_model(model, os.fspath(path))
        return
    from onnx.external_data_helper import convert_model_to_external_data

    # every tensor (the graph file keeps the structure only) but the integer ones: shape and axis constants, which
    # shape inference reads from the graph (ONNX Runtime refuses a Reshape whose shape is external data)
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=data.name, size_threshold=0)
    for tensor in model.graph.initializer:
        if tensor.data_type in INLINE_TYPES:
            tensor.data_location = tensor.DEFAULT
            del tensor.external_data[:]
    onnx.save_model(model, os.fspath(path))
    onnx.load_external_data_for_model(model, os.fspath(path.parent))  # saving moved the weights out of ``model``


def sidecar(path: str | os.PathLike[str]) -> Path:
    """Where this project keeps a graph's (or an ONNX Runtime engine's) external data: ``<file>.data`` beside it.

    Args:
        path: the ONNX file.

    Returns:
        Path: the data file's path (which exists only for a graph past 2 GiB, or written with external data).
    """
    return Path(path).with_name(Path(path).name + SIDE_CAR)


def graph_folder(folder: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """The folder a stage writes whole (atomically) around its graph: ``folder``, checked to hold ``path``.

    Args:
        folder: the folder param (``paths.exported``, ``paths.simplified_dir``).
        path: the graph's param (``paths.onnx``, ``paths.simplified``).

    Returns:
        Path: ``folder``.

    Raises:
        PipelineError: ``path`` is not directly inside ``folder``.
    """
    if Path(path).parent != Path(folder):
        raise PipelineError(f"paths: {path} is not inside {folder}, the folder its stage writes whole (conf/paths/)")
    return Path(folder)


def write_graph(model: Any, folder: str | os.PathLike[str], path: str | os.PathLike[str], external: bool) -> None:
    """Write ``model`` as ``path`` in a fresh ``folder`` (the folder written whole under a temporary name, then
    renamed into place: an interrupted stage leaves the previous one), weights outside where ``save_onnx`` says.

    Args:
        model: the ModelProto.
        folder: the graph's folder (``graph_folder``).
        path: the graph's file.
        external: keep the weights outside at any size.
    """
    from stages.core.artifacts import atomic_path

    with atomic_path(graph_folder(folder, path), directory=True) as tmp:
        save_onnx(model, tmp / Path(path).name, external=external)


def is_external(path: str | os.PathLike[str]) -> bool:
    """Whether the graph at ``path`` keeps its weights in external data files.

    Args:
        path: the ONNX file.

    Returns:
        bool: True when any tensor lives outside the file.
    """
    return bool(data_files(path))


def copy_graph(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Copy the graph ``source`` to ``dest`` with its external data, which becomes ``dest``'s ``sidecar`` (the
    graph's locations are rewritten when the name changes: a graph's data is always ``<its file>.data``).

    Args:
        source: the ONNX file (its data, if any, in its ``sidecar``).
        dest: the file to write (its name may differ from ``source``'s).
    """
    source, dest = Path(source), Path(dest)
    if not sidecar(source).is_file():
        shutil.copy2(source, dest)
        return
    shutil.copy2(sidecar(source), sidecar(dest))
    if dest.name == source.name:
        shutil.copy2(source, dest)
        return
    import onnx

    from stages.core.onnx_io import all_tensors

    model = onnx.load(os.fspath(source), load_external_data=False)

    for tensor in all_tensors(model.graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = sidecar(dest).name
    onnx.save_model(model, os.fspath(dest))


def parts(path: str | os.PathLike[str]) -> list[Path]:
    """A graph's or an engine's files: itself, then its ``sidecar`` where it has one.

    Args:
        path: the file.

    Returns:
        list[Path]: one or two paths.
    """
    return [Path(path), *([sidecar(path)] if sidecar(path).is_file() else [])]


def files_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a graph or an engine file: its bytes, then its ``sidecar``'s where it has one, so a changed
    weight changes the digest too. Standard library only: an application checks its engine with it.

    Args:
        path: the file.

    Returns:
        str: 64 hex digits (the file's own sha256 when it has no sidecar).
    """
    digest = hashlib.sha256()
    for part in parts(path):
        feed(digest, part)
    return digest.hexdigest()


def files_bytes(path: str | os.PathLike[str]) -> int:
    """The size of a graph or an engine file with its ``sidecar``.

    Args:
        path: the file.

    Returns:
        int: bytes.
    """
    return sum(part.stat().st_size for part in parts(path))


def remove_graph(path: str | os.PathLike[str]) -> None:
    """Delete a graph and its ``sidecar`` (a skipped candidate's).

    Args:
        path: the ONNX file.
    """
    for part in (Path(path), sidecar(path)):
        part.unlink(missing_ok=True)


@contextlib.contextmanager
def session_source(model: Any) -> Iterator[bytes | str]:
    """What ONNX Runtime or OpenVINO can load ``model`` from: its bytes, or, past ``EXTERNAL_ABOVE``, a temporary
    file with external data (a serialized graph cannot pass protobuf's 2 GiB limit).

    Args:
        model: a ModelProto with its weights loaded.

    Yields:
        bytes | str: the serialized graph, or the temporary file's path (removed afterwards).
    """
    if model.ByteSize() <= EXTERNAL_ABOVE:
        yield model.SerializeToString()
        return
    with tempfile.TemporaryDirectory(prefix="engineforge-graph-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_onnx(model, path, external=True)
        yield str(path)
