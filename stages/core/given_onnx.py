"""``model.source=onnx``: an ONNX file from any framework taken as the export. It is validated (its external data
must stay in its folder), checked against ``model.inputs`` when those are given, upgraded to ``export.opset`` with
onnx's version converter when it is older than any opset ONNX Runtime still runs, run once in ONNX Runtime on the
eval samples (no NaN or Inf), and saved as an export writes it (weights as constants, data inline below 2 GiB).
"""

from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core.batches import feeds
from stages.core.data import data_source
from stages.core.errors import PipelineError, first_line
from stages.core.graph_files import write_graph
from stages.core.onnx_io import load_onnx, ort_outputs
from stages.core.specs import check_against_file, input_specs

OLDEST_RUN = 7  # ONNX Runtime 1.31 implements no operator older than opset 7 ("no implementation for Mul(6)")


def opset_of(model: Any) -> int:
    """The default-domain opset a ModelProto imports.

    Args:
        model: a ModelProto.

    Returns:
        int: the opset (0 when it imports none).
    """
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def upgraded(model: Any, opset: int, path: str) -> tuple[Any, int | None]:
    """``model`` converted to ``opset`` when it is older than ``OLDEST_RUN``; and the opset it had, or None.

    Args:
        model: the given ModelProto (weights already constants).
        opset: ``export.opset``.
        path: ``model.path``, for errors.

    Returns:
        tuple: the model to go on with, and its original opset when it was upgraded.

    Raises:
        PipelineError: onnx's version converter cannot upgrade it.
    """
    from onnx import helper, version_converter

    old = opset_of(model)
    if old >= OLDEST_RUN:
        return model, None
    try:
        converted = version_converter.convert_version(model, opset)
        # the converter keeps the IR version: an IR 3 graph would list its new constants as inputs downstream
        converted.ir_version = max(converted.ir_version, helper.find_min_ir_version_for(converted.opset_import))
        return converted, old
    except Exception as e:  # the converter raises plain exceptions per operator
        raise PipelineError(
            f"{path} is at opset {old}, older than any ONNX Runtime runs ({OLDEST_RUN}), and onnx's version "
            f"converter cannot upgrade it to {opset}: {first_line(e, 200)}"
        ) from e


def from_onnx(cfg: DictConfig, data: dict[str, np.ndarray]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Validate ``model.path`` and save it as an export writes it into ``paths.onnx``.

    Args:
        cfg: the export stage's params.
        data: the eval split.

    Returns:
        tuple: the ModelProto, its run check (NaN/Inf on the eval samples, the opset upgrade) and no exporter.
    """

    model = cfg.model
    onnx_model = load_onnx(model.path)
    if model.inputs is not None:
        check_against_file(input_specs(model), model.path)
    fixed = weights_as_constants(onnx_model)
    onnx_model, old = upgraded(onnx_model, cfg.export.opset, model.path)
    batches = feeds(model, data, cfg.export.example_batch + 1, limit=cfg.export.check.samples)
    try:
        outputs = ort_outputs(onnx_model, batches, name=str(model.path))
    except PipelineError as e:
        if old is None:
            raise
        raise PipelineError(f"opset {old} upgraded to {cfg.export.opset} by onnx's version converter, then: {e}") from e
    bad = [name for name, value in outputs.items() if not np.isfinite(value).all()]
    if bad:
        raise PipelineError(f"{model.path}: output {bad[0]!r} has NaN or Inf on {data_source(model, 'test')}")
    # its external data (checked safe) is written anew, as an export writes it: past 2 GiB (or always), else inline
    write_graph(onnx_model, cfg.paths.exported, cfg.paths.onnx, external=cfg.export.external_data == "always")
    samples = sum(len(next(iter(b.values()))) for b in batches)
    checked = {"against": None, "samples": samples, "weights_no_longer_inputs": fixed, "opset_upgraded_from": old}
    return onnx_model, checked, {"exporter": None, "exporter_failed": [], "axes_checked": {}}


def weights_as_constants(model: Any) -> int:
    """Drop, in place, the graph inputs that only name an initializer (IR version 3 lists every weight as an
    input, so runtimes let a caller override it and converters treat it as I/O); returns how many. The weights
    stay, as the constants a deployed engine has."""
    weights = {t.name for t in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in weights]
    dropped = len(model.graph.input) - len(kept)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(kept)
        model.ir_version = max(model.ir_version, 4)  # IR 4 lets initializers stand alone
    return dropped
