"""ONNX files: loading with one-line errors, op counts, and running a model on ONNX Runtime to check outputs."""

import os
from collections import Counter
from typing import Any

import numpy as np

from stages.core.errors import PipelineError


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """Load and check an ONNX model; anything wrong with the file is a PipelineError naming it."""
    import onnx

    if not os.path.isfile(path):
        raise PipelineError(f"missing ONNX model {path}: run `dvc repro`")
    try:
        model = onnx.load(os.fspath(path))
        onnx.checker.check_model(model)
    except Exception as e:  # onnx raises DecodeError, ValidationError, ...
        raise PipelineError(f"not a valid ONNX model: {path} ({str(e).splitlines()[0][:200]})") from e
    return model


def op_counts(model: Any) -> dict[str, int]:
    """Operator type -> number of nodes in the main graph."""
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def ort_outputs(model: str | os.PathLike[str] | bytes, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Run ``model`` in a default CPU session over ``feeds``; return each output concatenated over batches."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else os.fspath(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        sess = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        runs = [sess.run(None, feed) for feed in feeds]
    except Exception as e:  # onnxruntime's own exception types
        raise PipelineError(
            f"onnxruntime cannot run {model if not isinstance(model, bytes) else 'the model'}: {str(e).splitlines()[0]}"
        ) from e
    return {name: np.concatenate([run[i] for run in runs]) for i, name in enumerate(names)}


def compare_outputs(
    expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], atol: float, rtol: float
) -> dict[str, dict[str, Any]]:
    """Per-output max absolute/relative difference and whether every element is within atol + rtol*|expected|."""
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
            "passed": bool(np.all(np.isfinite(got64)) and np.all(diff <= atol + rtol * np.abs(want64))),
        }
    return report
