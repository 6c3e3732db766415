"""Graph precision for fp16: the float16 cast, and the node that overflows float16 when a cast model does.

The cast is the float16 converter that ships inside onnxruntime (``onnxruntime.transformers.float16``, the same code
as onnxconverter-common): no extra dependency, it keeps float32 inputs and outputs (``keep_io_types``) and keeps
listed op types in float32 (``op_block_list``) with Casts around them. ModelOpt's AutoCast chooses float32
islands from data instead, but needs nvidia-modelopt installed without its dependencies (its ``[onnx]`` extra
replaces onnxruntime and onnx); an explicit list of fragile op types is what a user can read and override.
"""

from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import PipelineError, first_line
from stages.core.graph_files import is_external, save_onnx


def write_fp16(source: Path, keep_float32: list[str], out: Path) -> list[str]:
    """Cast ``source`` to float16 (float32 inputs and outputs) into ``out``.

    Args:
        source: the float32 model.
        keep_float32: op types kept in float32 (besides the converter's own list).
        out: where the float16 model is written.

    Returns:
        list[str]: the op types of ``keep_float32`` the graph has (kept in float32).

    Raises:
        PipelineError: the converter failed on the graph.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    blocked = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_float32))
    model = onnx.load(str(source))
    constant_of_shape_values(model.graph)
    try:
        model = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    except Exception as e:  # the converter raises plain exceptions on graphs it cannot handle
        raise PipelineError(f"cannot cast {source} to float16: {first_line(e, 200)}") from e
    drop_repeated_nodes(model.graph)  # a shared initializer gets one identical Cast per float32-kept consumer
    topological_sort(model.graph)  # the converter appends its input Casts after their consumers
    save_onnx(model, out, external=is_external(source))
    present = {node.op_type for node in model.graph.node}
    return sorted(present & set(keep_float32))


def float16_overflow(fp16: Path, batches: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The first node (graph order) of a float16 model whose output is Inf or NaN on ``batches``.

    Args:
        fp16: the float16 model.
        batches: input feeds (a few eval batches).

    Returns:
        (node name or output name, op type), or None when the model's outputs are finite.
    """
    import onnx

    from stages.core.onnx_io import ort_outputs

    model = onnx.load(str(fp16))
    if all(np.isfinite(v).all() for v in ort_outputs(model, batches, as_written=True).values()):
        return None
    listed = {o.name for o in model.graph.output}
    producers = [(n, name) for n in model.graph.node for name in n.output if name]
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for _, name in producers if name not in listed)
    values = ort_outputs(model, batches, as_written=True)
    for node, name in producers:
        value = values.get(name)
        if value is not None and value.dtype.kind == "f" and not np.isfinite(value).all():
            return node.name or name, node.op_type
    return None


def constant_of_shape_values(graph: Any) -> None:
    """Give each ConstantOfShape without a ``value`` its default (a float32 zero) as an explicit attribute, in place.

    The converter casts attribute tensors, so the fill then becomes float16 like its readers. onnxruntime 1.31's
    converter adds the attribute itself; 1.26's (onnxruntime-gpu's last CUDA 12 build) leaves the float32 default, a
    type mismatch with every float16 reader: with the attribute written here, both write the same graph.

    Args:
        graph: a GraphProto.
    """
    import onnx

    for node in graph.node:
        fill = node.domain in ("", "ai.onnx") and node.op_type == "ConstantOfShape"
        if fill and not any(a.name == "value" for a in node.attribute):
            zero = onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [0.0])
            node.attribute.append(onnx.helper.make_attribute("value", zero))


def check_float16_range(source: Path, fp16: Path, batches: list[dict[str, Any]], where: str) -> None:
    """Refuse, in one line naming the first overflowing node, a float16 model that gives Inf or NaN on ``batches``
    where the float32 model does not.

    Args:
        source: the float32 model.
        fp16: its float16 cast.
        batches: input feeds (a few eval batches).
        where: the data's name, for the message.

    Raises:
        PipelineError: the node, its op type and the keys to change.
    """
    from stages.core.onnx_io import ort_outputs

    if not all(np.isfinite(v).all() for v in ort_outputs(source, batches, as_written=True).values()):
        return  # the float32 model itself is not finite here: compare names the output
    found = float16_overflow(fp16, batches)
    if found:
        raise PipelineError(
            f"precision=fp16: node {found[0]!r} ({found[1]}) gives Inf or NaN in float16 on {where} (float32 is "
            f"finite: values beyond float16's 65504); add {found[1]} to precision.fp16.keep_float32 or use "
            "precision=fp32"
        )


def drop_repeated_nodes(graph: Any) -> None:
    """Keep one of each set of nodes that are the same computation (op, inputs, outputs, attributes), in place.

    The float16 converter casts an initializer back to float32 for each float32-kept node that reads it, every Cast
    writing ``<initializer>_cast_to_fp32``: a graph that shares a weight (the dynamo exporter stores identical
    initializers once; tied weights) would break single assignment and not load.

    Args:
        graph: a GraphProto.
    """
    seen: set[tuple] = set()
    kept = []
    for node in graph.node:
        attributes = tuple(a.SerializeToString(deterministic=True) for a in node.attribute)
        key = (node.op_type, node.domain, tuple(node.input), tuple(node.output), attributes)
        if key not in seen:
            seen.add(key)
            kept.append(node)
    if len(kept) < len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` in place so every node follows the producers of its inputs (stable otherwise).

    Args:
        graph: a GraphProto.

    Raises:
        PipelineError: a cycle, or an input nothing produces, naming the first node left.
    """
    ordered: list[Any]
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest: list[Any] = []
        for node in pending:
            (ordered if all(name in ready for name in node.input) else rest).append(node)
            if ordered and ordered[-1] is node:
                ready.update(node.output)
        if len(rest) == len(pending):
            raise PipelineError(f"graph {graph.name!r} has a cycle or an input nothing produces: {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
