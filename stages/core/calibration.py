"""INT8 calibration: samples of the model's calibration split -> the range of every float tensor, with provenance.

One calibration serves every encoding: the ranges are measured once on the float graph (ONNX Runtime's
calibrators: minmax, entropy, percentile); the Q/DQ encoding a backend wants (stages/core/quantize.py) is derived
from them. The provenance (model and data hashes, split, samples, seed, method) is stored with the ranges so a
table can be traced to, and only reused for, the model and data it came from.
"""

import contextlib
import hashlib
import io
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core.batches import feeds
from stages.core.data import data_source, load_dataset
from stages.core.errors import PipelineError, first_line
from stages.core.graph_files import files_sha256, is_external
from stages.core.progress import Progress
from stages.core.specs import input_specs

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# Batches a calibrator holds at once: its histogram methods keep every intermediate tensor of every batch it is
# given until the call ends (MinMax keeps per-batch minima and maxima), so batches go in chunks; the ranges of
# MinMax are the same either way (min of minima), the histograms grow by merging as ONNX Runtime's collector does.
CHUNK = 4


def method_of(calibration: DictConfig, key: str) -> Any:
    """ONNX Runtime's CalibrationMethod for ``calibration.method``.

    Args:
        calibration: the calibration settings.
        key: where the user set them, for errors (``precision.int8.calibration``).

    Returns:
        CalibrationMethod: MinMax, Entropy or Percentile.
    """
    from onnxruntime.quantization import CalibrationMethod

    if calibration.method not in METHODS:
        raise PipelineError(f"{key}.method: {calibration.method!r} is not one of {', '.join(METHODS)}")
    return CalibrationMethod[METHODS[calibration.method]]


def calibration_batches(model: DictConfig, calibration: DictConfig, key: str) -> tuple[list[dict], dict[str, Any]]:
    """``calibration.samples`` samples of the split, drawn with ``calibration.seed``, as feed dicts; and their
    provenance. A split with fewer samples than asked is used whole (its provenance says so), down to
    ``calibration.min_samples``.

    Args:
        model: the model's config section.
        calibration: the calibration settings (split, samples, seed, batch_size).
        key: where the user set them, for errors.

    Returns:
        tuple: the feed dicts, and the provenance (split, data source, samples, seed, sha256 of the arrays used).

    Raises:
        PipelineError: fewer samples than ``calibration.min_samples``, or a non-positive count.
    """
    if calibration.samples < 1 or calibration.batch_size < 1 or calibration.min_samples < 1:
        raise PipelineError(f"{key}.samples, .min_samples and .batch_size must be at least 1")
    data = load_dataset(model, calibration.split)  # checks names, dtypes, shapes and lengths
    names = [spec.name for spec in input_specs(model)]
    available = len(data[names[0]])
    if available < min(calibration.samples, calibration.min_samples):
        raise PipelineError(
            f"{key}.min_samples: the calibration data of model {model.name!r} "
            f"({data_source(model, calibration.split)}) has {available} samples, fewer than the "
            f"{calibration.min_samples} int8 needs to measure ranges; give more data or lower {key}.min_samples"
        )
    used = min(available, calibration.samples)
    index = np.sort(np.random.default_rng(calibration.seed).permutation(available)[:used])
    chosen = {name: np.ascontiguousarray(data[name][index]) for name in names}
    digest = hashlib.sha256()
    for name in names:
        digest.update(f"{name}:{chosen[name].dtype}:{chosen[name].shape};".encode())
        digest.update(chosen[name].tobytes())
    provenance = {
        "split": calibration.split,
        "data": data_source(model, calibration.split),
        "samples": used,
        "seed": calibration.seed,
        "data_sha256": digest.hexdigest(),
    }
    if used < calibration.samples:  # the split is smaller than asked: all of it, and the report says so
        provenance["asked"] = calibration.samples
    return feeds(model, chosen, calibration.batch_size), provenance


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def calibrate(onnx: Path, batches: list[dict], calibration: DictConfig, key: str) -> dict[str, tuple[float, float]]:
    """Run ONNX Runtime's calibrator over ``batches``: tensor name -> (min, max) for every float tensor.

    Args:
        onnx: the float model.
        batches: feed dicts (``calibration_batches``).
        calibration: the calibration settings (method, percentile).
        key: where the user set them, for errors.

    Returns:
        dict[str, tuple[float, float]]: tensor name -> (min, max), sorted by name.

    Raises:
        PipelineError: the calibrator failed, or found no float tensor.
    """
    from onnxruntime.quantization.calibrate import create_calibrator

    method = method_of(calibration, key)
    options = {"percentile": calibration.percentile} if calibration.method == "percentile" else {}
    silent = partial(contextlib.redirect_stdout, io.StringIO())  # the calibrator prints as it goes; progress does not
    with (
        tempfile.TemporaryDirectory(prefix="engineforge-calibrate-") as tmp,
        Progress("precision", len(batches), "calibration batches") as progress,
    ):
        try:
            with silent():
                calibrator = create_calibrator(
                    Path(onnx),
                    None,
                    str(Path(tmp) / "augmented.onnx"),
                    method,
                    use_external_data_format=is_external(onnx),
                    extra_options=options,
                )
            for start in range(0, len(batches), CHUNK):  # each call folds its batches into the ranges
                with silent():
                    calibrator.collect_data(_Reader(batches[start : start + CHUNK]))
                progress.step(count=len(batches[start : start + CHUNK]))
            with silent():
                ranges = calibrator.compute_data()
        except Exception as e:  # onnxruntime raises its own types when the model or data do not fit
            raise PipelineError(f"calibration of {onnx} failed: {first_line(e, 200)}") from e
    table: dict[str, tuple[float, float]] = {}
    for name in sorted(ranges.keys()):
        low, high = (float(np.asarray(v).reshape(-1)[0]) for v in ranges[name].range_value)
        table[name] = (low, high)
    if not table:
        raise PipelineError(f"calibration of {onnx} found no float tensor to measure: the model cannot be quantized")
    return table


def provenance(onnx: Path, data: dict[str, Any], calibration: DictConfig) -> dict[str, Any]:
    """Everything a calibration depends on: the float model, the data actually used and the method.

    Args:
        onnx: the float model.
        data: the data's provenance (``calibration_batches``).
        calibration: the calibration settings.

    Returns:
        dict: model sha256, the data's provenance, method (and percentile), onnxruntime version.
    """
    import onnxruntime

    record = {"model_sha256": files_sha256(onnx), **data, "method": calibration.method}
    if calibration.method == "percentile":
        record["percentile"] = calibration.percentile
    return record | {"onnxruntime": onnxruntime.__version__}
