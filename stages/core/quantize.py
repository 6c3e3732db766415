"""Graph precision: the FP16 cast and the INT8 Q/DQ encodings (one calibration, the form each backend runs fast).

FP16 uses the float16 converter that ships inside onnxruntime (``onnxruntime.transformers.float16``, the same code
as onnxconverter-common): no extra dependency, it keeps float32 inputs and outputs (``keep_io_types``) and keeps
listed op types in float32 (``op_block_list``) with Casts around them. ModelOpt's AutoCast chooses float32
islands from data instead, but needs nvidia-modelopt installed without its dependencies (its ``[onnx]`` extra
replaces onnxruntime and onnx); an explicit list of fragile op types is what a user can read and override.

INT8 writes explicit QuantizeLinear/DequantizeLinear pairs with ONNX Runtime's ``quantize_static`` (QDQ format),
fed the precomputed ranges through its calibration cache so it never calibrates again. Encodings:
``u8s8`` (uint8 asymmetric activations, int8 symmetric per-channel weights: what ONNX Runtime's CPU kernels run
fast) and ``s8s8`` (int8 symmetric activations and weights, every zero point 0: what TensorRT consumes).
"""

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core.errors import PipelineError

ENCODINGS = {"u8s8": ("QUInt8", False), "s8s8": ("QInt8", True)}  # encoding -> (activation type, symmetric)
QDQ = ("QuantizeLinear", "DequantizeLinear")


def write_fp16(source: Path, keep_float32: list[str], out: Path) -> list[str]:
    """Cast ``source`` to float16 (float32 inputs and outputs) into ``out``; return the op types kept in float32."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    blocked = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_float32))
    try:
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True, op_block_list=blocked)
    except Exception as e:  # the converter raises plain exceptions on graphs it cannot handle
        raise PipelineError(f"cannot cast {source} to float16: {str(e).splitlines()[0][:200]}") from e
    topological_sort(model.graph)  # the converter appends its input Casts after their consumers
    onnx.save(model, str(out))
    present = {node.op_type for node in model.graph.node}
    return sorted(present & set(keep_float32))


def topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` in place so every node follows the producers of its inputs (stable otherwise)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            (ordered if all(name in ready for name in node.input) else rest).append(node)
            if ordered and ordered[-1] is node:
                ready.update(node.output)
        if len(rest) == len(pending):
            raise PipelineError(f"graph {graph.name!r} has a cycle or an input nothing produces: {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def write_int8(
    source: Path,
    ranges: dict[str, tuple[float, float]],
    method: Any,
    encoding: str,
    int8: DictConfig,
    out: Path,
    exclude: list[str] = (),
    only: list[str] | None = None,
) -> None:
    """Write ``source`` as an explicit Q/DQ model in ``encoding`` using the calibrated ``ranges``.

    Args:
        source: the float32 ONNX model.
        ranges: tensor name -> (min, max) from stages.core.calibration.calibrate.
        method: the ONNX Runtime CalibrationMethod the ranges came from.
        encoding: ``u8s8`` or ``s8s8``.
        int8: ``cfg.precision.int8`` (op_types, per_channel, reduce_range).
        out: where to write the Q/DQ model.
        exclude: node names kept in float.
        only: when given, quantize only these nodes (sensitivity analysis).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    activation, symmetric = ENCODINGS[encoding]
    data = {
        name: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
        for name, (lo, hi) in ranges.items()
    }
    with tempfile.TemporaryDirectory(prefix="engineforge-int8-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(TensorsData(method, data), cache)
        try:
            quantize_static(
                str(source),
                str(out),
                None,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(int8.op_types) or None,
                per_channel=int8.per_channel,
                reduce_range=int8.reduce_range,
                activation_type=QuantType[activation],
                weight_type=QuantType.QInt8,
                nodes_to_quantize=only,
                nodes_to_exclude=list(exclude),
                calibrate_method=method,
                calibration_cache_path=cache,
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
            )
        except Exception as e:  # the quantizer raises plain exceptions on graphs it cannot handle
            raise PipelineError(f"cannot quantize {source}: {str(e).splitlines()[0][:200]}") from e


def quantized_nodes(model: Any) -> list[str]:
    """Names of the compute nodes that read a dequantized tensor, in graph order (the nodes INT8 quantized)."""
    dequantized = {out for node in model.graph.node if node.op_type == QDQ[1] for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type not in QDQ and any(name in dequantized for name in node.input)
    ]


def activation_table(model: Any, ranges: dict[str, tuple[float, float]]) -> dict[str, dict[str, Any]]:
    """Tensor -> calibrated range plus the scale and zero point the Q/DQ model quantizes it with (when it does)."""
    from onnx import numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    table = {name: {"min": lo, "max": hi} for name, (lo, hi) in ranges.items()}
    for node in model.graph.node:
        if node.op_type == QDQ[0] and node.input[0] in table and node.input[1] in constants:
            zero_point = constants.get(node.input[2]) if len(node.input) > 2 else None
            table[node.input[0]] |= {
                "scale": float(constants[node.input[1]]),
                "zero_point": 0 if zero_point is None else int(zero_point),
                "type": "uint8" if zero_point is not None and zero_point.dtype == np.uint8 else "int8",
            }
    return table


def check_int8(model: Any) -> None:
    """A model the quantizer left without any Q/DQ node cannot run as int8: say so in one line."""
    if not quantized_nodes(model):
        ops = sorted({node.op_type for node in model.graph.node})
        raise PipelineError(
            f"the model has no node int8 can quantize (op types: {', '.join(ops)}); "
            "check precision.int8.op_types or use precision=fp16"
        )
