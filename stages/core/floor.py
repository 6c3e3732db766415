"""float32's own resolution of a graph's outputs: model.sim.onnx + eval batches -> per-output atol floors.

A Softmax output reading logits of magnitude |z| cannot be pinned below what a few ulps of |z| do to it: two
correct float32 runtimes that sum in another order end ``ORDER`` spacings of |z| apart at least, which moves a
probability p by up to p·(e^{2Δz} - 1). For logits near 10 that is ~1e-5; for the onnx package's SqueezeNet,
whose constant weights tie every logit near 6.77e9 (spacing 512), it is everything: its softmax is undetermined
in float32, and the gate says so instead of failing one runtime and passing another.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

ORDER = 16  # spacings of the largest logit two float32 sums of the same terms in another order may differ by


def softmax_floors(onnx: Path, batches: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """The float32 floor of every graph output a Softmax writes, from the reference's logits on ``batches``.

    Args:
        onnx: the float32 graph (``model.sim.onnx``).
        batches: the eval feeds.

    Returns:
        dict[str, float]: output name -> the smallest atol float32 can honour there (at most 1); outputs not
        written by a Softmax are absent.
    """
    import onnx as onnx_lib

    from stages.core.onnx_io import load_onnx, ort_outputs

    model = load_onnx(onnx, check=False)
    outputs = {o.name for o in model.graph.output}
    logits = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Softmax" and n.output[0] in outputs}
    if not logits or not batches:
        return {}
    model.graph.output.extend(onnx_lib.ValueInfoProto(name=z) for z in set(logits.values()) - outputs)
    values = ort_outputs(model.SerializeToString(), list(batches))
    floors = {}
    for out, z in logits.items():
        shift = ORDER * float(np.spacing(np.float32(np.abs(values[z]).max())))
        floors[out] = float(min(1.0, float(np.abs(values[out]).max()) * np.expm1(min(2 * shift, 50.0))))
    return floors
