"""ONNX files: loading with one-line errors, op counts, and running a model on ONNX Runtime to check outputs."""

import contextlib
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import PipelineError, first_line
from stages.core.graph_files import data_files, session_source


def load_onnx(path: str | os.PathLike[str], check: bool = True, weights: bool = True) -> Any:
    """Load (and with ``check``, validate) an ONNX model; anything wrong with the file is a PipelineError naming it.

    External data is loaded only from files inside the model's folder: a location that leaves it (``../``, an
    absolute path, a symlink pointing out) is refused as unsafe before any of it is read.

    Args:
        path: the ONNX file.
        check: run ONNX's checker on it.
        weights: load its external data (False: only the structure, for names, shapes and op counts).

    Returns:
        ModelProto: the model, external data loaded unless ``weights`` is False.

    Raises:
        PipelineError: missing, not ONNX, invalid, or with unsafe external data.
    """
    import onnx

    if not os.path.isfile(path):
        raise PipelineError(f"missing ONNX model {path}: run `dvc repro`")
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise PipelineError(f"not a valid ONNX model: {path} ({first_line(e)})") from e
    external = bool(data_files(path, model))  # each checked to lie in the model's folder before any is read
    if external and weights:
        onnx.load_external_data_for_model(model, str(Path(path).resolve().parent))
    if check:
        try:  # a graph with external data is checked from its file (the checker reads the data beside it)
            onnx.checker.check_model(os.fspath(path) if external else model)
        except Exception as e:  # onnx raises ValidationError and others
            raise PipelineError(f"not a valid ONNX model: {path} ({first_line(e)})") from e
    return model


def all_tensors(graph: Any) -> Iterator[Any]:
    """Every tensor stored in ``graph``: initializers and tensor attributes, subgraphs included.

    Args:
        graph: a GraphProto.

    Yields:
        TensorProto: each stored tensor.
    """
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from all_tensors(sub)


def unsupported_op(error: Exception, model: Any, runtime: str, where: str) -> PipelineError:
    """A runtime's failure to load ``model`` as one line; when it names an operator of the graph, the line names
    that operator and its node.

    Args:
        error: the runtime's exception.
        model: the ModelProto it failed on.
        runtime: the runtime's name for the line (``onnxruntime``, ``openvino``).
        where: what was loaded (a path, or "the model").

    Returns:
        PipelineError: to raise.
    """
    message = " ".join(str(error).split())
    if "onnxruntime_src" in message:  # drop the C++ source location and signature ONNX Runtime puts first
        message = message.split("failed:", 1)[0] + "failed: " + message.rsplit(") ", 1)[-1]
    message = message[:400]
    for node in model.graph.node:
        op = f"{node.domain}:{node.op_type}" if node.domain else node.op_type
        if (node.name and repr(node.name) in message) or re.search(rf"\b{re.escape(op)}\(", message):
            return PipelineError(f"{runtime} cannot run operator {op} (node {node.name!r}) of {where}: {message}")
    return PipelineError(f"{runtime} cannot run {where}: {message}")


def op_counts(model: Any) -> dict[str, int]:
    """Operator type -> number of nodes in the main graph.

    Args:
        model: a ModelProto.

    Returns:
        dict[str, int]: sorted by operator type.
    """
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def ort_outputs(
    model: Any, feeds: list[dict[str, np.ndarray]], as_written: bool = False, name: str | None = None
) -> dict[str, np.ndarray]:
    """Run ``model`` in a default CPU session over ``feeds``; return each output concatenated over batches.

    Args:
        model: an ONNX file (str or PathLike), or a ModelProto with its weights loaded (of any size).
        feeds: input name -> array, one dict per batch.
        as_written: with graph optimizations off, so every node computes in the types the graph gives it (the
            optimizer moves float16 work to float32 on CPUs without float16 kernels).
        name: what errors call the model (default: its path, or "the model").

    Returns:
        dict[str, np.ndarray]: output name -> every batch's output, concatenated.

    Raises:
        PipelineError: ONNX Runtime cannot load or run the model (``unsupported_op`` names the operator).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if as_written:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    is_file = isinstance(model, str | os.PathLike)
    where = name or (os.fspath(model) if is_file else "the model")
    with contextlib.nullcontext(where) if is_file else session_source(model) as source:
        try:
            sess = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types
            raise unsupported_op(e, load_onnx(model, check=False) if is_file else model, "onnxruntime", where) from e
    names = [o.name for o in sess.get_outputs()]
    try:
        runs = [sess.run(None, feed) for feed in feeds]
    except Exception as e:  # onnxruntime's own exception types
        raise PipelineError(f"onnxruntime cannot run {where}: {first_line(e)}") from e
    scalar = next((name for i, name in enumerate(names) if np.ndim(runs[0][i]) == 0), None)
    if scalar is not None:
        raise PipelineError(
            f"{where}: output {scalar!r} is a scalar (shape []); every output's first axis is its batch of samples, "
            "so a graph with a scalar output cannot be batched"
        )
    return {name: np.concatenate([run[i] for run in runs]) for i, name in enumerate(names)}


def compare_outputs(
    expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], atol: float, rtol: float
) -> dict[str, dict[str, Any]]:
    """Per-output max absolute/relative difference and whether every element passes the one tolerance rule of
    this project, Polygraphy's (the gate's): an element fails only where it is beyond both ``atol`` and
    ``rtol * |expected|`` (Polygraphy divides by the candidate's value instead; the relative figures here are
    against the reference, as recorded in export.json and simplify.json).

    Args:
        expected: output name -> the reference's array.
        actual: output name -> the candidate's array.
        atol: absolute tolerance.
        rtol: relative tolerance.

    Returns:
        dict: output name -> ``max_abs``, ``max_rel`` and ``passed`` (False also on NaN or Inf).

    Raises:
        PipelineError: an output is missing or has another shape.
    """
    report = {}
    for name, want in expected.items():
        if name not in actual:
            raise PipelineError(f"output {name!r} is missing; outputs are {', '.join(actual)}")
        got = actual[name]
        if got.shape != want.shape:
            raise PipelineError(f"output {name!r} has shape {list(got.shape)}, expected {list(want.shape)}")
        want64, got64 = want.astype(np.float64), got.astype(np.float64)
        diff = np.abs(got64 - want64)
        report[name] = {
            "max_abs": float(diff.max(initial=0.0)),
            "max_rel": float((diff / np.maximum(np.abs(want64), 1e-12)).max(initial=0.0)),
            "passed": bool(np.all(np.isfinite(got64)) and np.all((diff <= atol) | (diff <= rtol * np.abs(want64)))),
        }
    return report
