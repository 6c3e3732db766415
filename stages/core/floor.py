"""float32's own resolution of a graph's outputs: model.sim.onnx + eval batches -> per-output atol floors.

A Softmax output reading logits of magnitude |z| cannot be pinned below what a few ulps of |z| do to it: two
correct float32 runtimes that sum in another order end ``ORDER`` spacings of |z| apart at least, which moves a
probability p by up to p·(e^{2Δz} - 1). For logits near 10 that is ~1e-5; for the onnx package's SqueezeNet,
whose constant weights tie every logit near 6.77e9 (spacing 512), it is everything: its softmax is undetermined
in float32, and the gate says so instead of failing one runtime and passing another.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ORDER = 16  # spacings of the largest logit two float32 sums of the same terms in another order may differ by


def with_logits(onnx: Path) -> tuple[Any, dict[str, str], set[str]]:
    """``onnx`` with the logits of every output a Softmax writes added as outputs, so one run gives the reference
    outputs and what their floors need.

    Args:
        onnx: the float32 graph (``model.sim.onnx``).

    Returns:
        tuple: the graph (a ModelProto), output -> the Softmax's input, and the names added (not the graph's outputs).
    """
    import onnx as onnx_lib

    from stages.core.onnx_io import load_onnx

    model = load_onnx(onnx, check=False)
    outputs = {o.name for o in model.graph.output}
    logits = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Softmax" and n.output[0] in outputs}
    added = set(logits.values()) - outputs
    model.graph.output.extend(onnx_lib.ValueInfoProto(name=z) for z in sorted(added))
    return model, logits, added


def floors_of(values: Mapping[str, np.ndarray], logits: Mapping[str, str]) -> dict[str, float]:
    """The float32 floor of every output a Softmax writes, from one run's values (``with_logits``'s graph).

    Args:
        values: output name -> value, the logits included.
        logits: output -> the Softmax's input.

    Returns:
        dict[str, float]: output name -> the smallest atol float32 can honour there (at most 1); outputs not
        written by a Softmax are absent.
    """
    floors = {}
    for out, z in logits.items():
        shift = ORDER * float(np.spacing(np.float32(np.abs(values[z]).max())))
        floors[out] = float(min(1.0, float(np.abs(values[out]).max()) * np.expm1(min(2 * shift, 50.0))))
    return floors


def reference_and_floors(
    onnx: Path, batches: Sequence[dict[str, np.ndarray]]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The float32 graph's outputs on ``batches`` (ONNX Runtime's CPU session) and their floors, in one run.

    Args:
        onnx: the float32 graph (``model.sim.onnx``).
        batches: the eval feeds.

    Returns:
        tuple: output name -> every batch's output, concatenated; output name -> floor (``floors_of``).
    """
    from stages.core.onnx_io import ort_outputs

    graph, logits, added = with_logits(onnx)
    values = ort_outputs(graph if added else onnx, list(batches))
    return {k: v for k, v in values.items() if k not in added}, floors_of(values, logits)
