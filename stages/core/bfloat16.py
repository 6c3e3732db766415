"""The bfloat16 graph (what TensorRT's strongly typed build needs for precision=bf16): the float16 cast's
structure (float32 I/O, fragile ops kept in float32 behind Casts) with every float16 type made bfloat16 and every
weight rounded from its float32 value (bfloat16 has float32's range, so nothing clamps as it would in float16),
at opset 22 or later (the first whose type constraints admit bfloat16 on Conv, Gemm and the rest)."""

from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import PipelineError
from stages.core.float16 import write_fp16
from stages.core.graph_files import copy_graph, is_external, save_onnx

FLOAT, FLOAT16, BFLOAT16 = 1, 10, 16  # onnx.TensorProto data types
BF16_OPSET = 22  # the first opset whose Conv, Gemm, pooling... accept bfloat16


def bf16_for(capabilities: dict[str, Any], keep_float32: list[str], source: Path, out: Path) -> dict[str, Any]:
    """The graph precision=bf16 needs for a backend: a bfloat16 graph (TensorRT), the float32 graph its runtime
    executes in bfloat16 (OpenVINO), or one line saying why not.

    Args:
        capabilities: the backend's env.json capabilities (``bf16``, ``bf16_reason``).
        keep_float32: op types kept in float32 in a bfloat16 graph.
        source: the float32 graph.
        out: where the graph is written.

    Returns:
        dict: the report fields (``bf16``: the form; ``kept_float32`` for a graph).

    Raises:
        PipelineError: the backend has no bf16 here, with its reason.
    """
    form = capabilities["bf16"]
    if form == "graph":
        return {"bf16": form, "kept_float32": write_bf16(source, keep_float32, out)}
    if form == "runtime":
        copy_graph(source, out)
        return {"bf16": form}
    raise PipelineError(f"precision=bf16: {capabilities['bf16_reason']}")


def bfloat16_array(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to bfloat16 (round to nearest even, as ml_dtypes and the hardware do).

    Args:
        values: any float array.

    Returns:
        np.ndarray: of ml_dtypes' bfloat16.
    """
    import ml_dtypes

    return np.asarray(values, dtype=np.float32).astype(ml_dtypes.bfloat16)


def retype(graph: Any, originals: dict[str, np.ndarray]) -> None:
    """Make every float16 type in ``graph`` (and its subgraphs) bfloat16, in place; float16 initializers and
    constants take their float32 value from ``originals`` when it has their name.

    Args:
        graph: the float16 cast's GraphProto.
        originals: initializer name -> its float32 value in the source graph.
    """
    from onnx import AttributeProto, numpy_helper

    def tensor(t: Any) -> None:
        if t.data_type == FLOAT16:
            source = originals.get(t.name)
            value = source if source is not None else numpy_helper.to_array(t).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(bfloat16_array(value), t.name))

    for init in graph.initializer:
        tensor(init)
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.type.tensor_type.elem_type == FLOAT16:
            info.type.tensor_type.elem_type = BFLOAT16
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                tensor(attr.t)
            elif attr.type == AttributeProto.INT and attr.name == "to" and attr.i == FLOAT16:
                attr.i = BFLOAT16
            elif attr.type == AttributeProto.GRAPH:
                retype(attr.g, originals)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    retype(sub, originals)


def write_bf16(source: Path, keep_float32: list[str], out: Path) -> list[str]:
    """Write ``source`` as a bfloat16 graph with float32 inputs and outputs into ``out``.

    Args:
        source: the float32 ONNX model.
        keep_float32: op types kept in float32 (as for float16).
        out: where to write the bfloat16 model.

    Returns:
        list[str]: the op types kept in float32.
    """
    import onnx
    from onnx import numpy_helper, version_converter

    from stages.core.errors import PipelineError, first_line

    model = onnx.load(str(source))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), BF16_OPSET)
    if opset < BF16_OPSET:  # before opset 22 most ops' type constraints have no bfloat16
        try:
            model = version_converter.convert_version(model, BF16_OPSET)
        except Exception as e:  # the converter raises plain exceptions on ops it cannot upgrade
            raise PipelineError(
                f"precision=bf16: cannot upgrade {source} to opset {BF16_OPSET}: {first_line(e)}"
            ) from e
    originals = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer if init.data_type == FLOAT}
    external = is_external(source)
    save_onnx(model, out, external=external)
    kept = write_fp16(out, keep_float32, out)
    model = onnx.load(str(out))
    retype(model.graph, originals)
    save_onnx(model, out, external=external)
    return kept
