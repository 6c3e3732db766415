"""Graph precision for int8 with NNCF's post-training quantizer (``precision.int8.encoding: nncf``, OpenVINO's own):
NNCF on the ONNX graph writes QuantizeLinear/DequantizeLinear in the patterns OpenVINO's CPU plugin fuses into its
int8 kernels. Measured on resnet18 (Xeon, Sapphire Rapids class, AMX, 2 threads, docs/performance.md): OpenVINO ran
NNCF's graph 1.4x (batch 1) to 1.8x (batch 32) faster than ONNX Runtime's Q/DQ graph of the same model. The artifact
stays ONNX, so the fallback, Triton and every reader of the precision stage's graph work unchanged.

NNCF measures its own ranges (it has no way to take ONNX Runtime's) on the same calibration draw; the fallback's
``exclude``/``only`` become NNCF's ignored scope. NNCF's telemetry is off (``NNCF_CI``, its own switch).
"""

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stages.core.attention import has_attention
from stages.core.errors import PipelineError, first_line
from stages.core.graph_files import is_external, save_onnx

NNCF = "nncf"  # the encoding's name in precision.int8.encoding and in a backend's int8_encoding
# NNCF measures ranges on every call (it takes no precomputed ones): a sensitivity ranking's one-node graphs are
# calibrated on the draw's first batches only, to rank nodes, never to ship
RANKING_BATCHES = 8
EXTERNAL_DATA_DIR = "external_data_dir"  # nncf.onnx.quantization.backend_parameters.BackendParameters' key


def _nncf() -> Any:
    os.environ.setdefault("NNCF_CI", "1")  # read once, at import: no telemetry events leave the machine
    import nncf

    nncf.set_log_level(logging.ERROR)  # its notes and warnings: the precision stage prints its own line
    return nncf


def write_nncf(
    source: Path,
    batches: Sequence[dict[str, Any]],
    op_types: Sequence[str],
    out: Path,
    exclude: Sequence[str] = (),
    only: list[str] | None = None,
) -> None:
    """Write ``source`` quantized by NNCF as a Q/DQ ONNX model.

    Args:
        source: the float32 ONNX model (opset 13 or later).
        batches: the calibration draw, as feed dicts (every batch is one statistics step).
        op_types: the op types quantized (``precision.int8.op_types``; empty: every type NNCF quantizes). Measured
            on resnet18: NNCF's residual Adds in int8 moved the logits by up to 5.5 (top-1 agreement 95.3%), with
            them in float by 0.76 (99.6%), at 12% (batch 1) to 29% (batch 32) of the speed-up.
        out: where to write the Q/DQ model.
        exclude: node names kept in float.
        only: when given, quantize only these nodes (sensitivity analysis): every other node is ignored, and the
            ranges come from the draw's first ``RANKING_BATCHES`` batches.

    Raises:
        PipelineError: NNCF fails on the graph.
    """
    import onnx

    nncf = _nncf()
    external = is_external(source)  # NNCF's sessions read the weights from their folder (its EXTERNAL_DATA_DIR)
    model = onnx.load(str(source), load_external_data=not external)
    folder = {EXTERNAL_DATA_DIR: str(Path(source).resolve().parent)} if external else {}
    names = list(exclude)
    if only is not None:
        names += [node.name for node in model.graph.node if node.name not in only]
    types = sorted({node.op_type for node in model.graph.node} - set(op_types)) if op_types else []
    draw = list(batches) if only is None else list(batches)[:RANKING_BATCHES]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its progress bars: the stage prints its own line
            quantized = nncf.quantize(
                model,
                nncf.Dataset(draw),
                subset_size=len(draw),
                model_type=nncf.ModelType.TRANSFORMER if has_attention(model.graph) else None,
                ignored_scope=nncf.IgnoredScope(names=names, types=types, validate=False),
                advanced_parameters=nncf.AdvancedQuantizationParameters(backend_params=folder),
            )
    except Exception as e:  # NNCF raises its own and plain exceptions on graphs it cannot handle
        raise PipelineError(f"NNCF cannot quantize {source}: {first_line(e, 200)}") from e
    save_onnx(quantized, out, external=external)
