"""Graph precision for int8: explicit QuantizeLinear/DequantizeLinear pairs with ONNX Runtime's ``quantize_static``
(QDQ format): its QDQ quantizer fed the precomputed ranges, so it never calibrates again (one calibration, the form
each backend runs fast; the same calls on onnxruntime 1.26 and 1.31, the versions the GPU setups install). Encodings: ``u8s8`` (uint8 asymmetric activations, int8 symmetric
per-channel weights: what ONNX Runtime's CPU kernels run fast), ``u8s7`` (the same with 7-bit weights, for x86
without VNNI) and ``s8s8`` (int8 symmetric activations and weights, every zero point 0, float biases: what
TensorRT consumes). The float16 cast is ``stages.core.float16``.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core.attention import has_attention
from stages.core.errors import PipelineError, first_line
from stages.core.graph_files import is_external, save_onnx

# encoding -> (activation type, symmetric activations, 7-bit weights). u8s7: x86 without VNNI multiplies uint8 by
# int8 pairwise into int16 (vpmaddubsw), which saturates at 255 * 127 * 2; 7-bit weights keep the sums in range.
ENCODINGS = {"u8s8": ("QUInt8", False, False), "u8s7": ("QUInt8", False, True), "s8s8": ("QInt8", True, False)}
QDQ = ("QuantizeLinear", "DequantizeLinear")
KEEP_FLOAT_IN = ("attention", "every", "none")  # the graphs whose keep_float readers read float


QDQ_OPSET = 13  # per-channel DequantizeLinear (its axis attribute) needs opset 13


def with_qdq_opset(source: Path, folder: Path) -> tuple[Path, int]:
    """``source``, or a copy converted to ``QDQ_OPSET`` in ``folder`` when its opset is older; and its opset.

    Args:
        source: the float model.
        folder: where a converted copy is written (same file name).

    Returns:
        tuple[Path, int]: the model to quantize, and ``source``'s original opset.

    Raises:
        PipelineError: ONNX's version converter cannot convert the graph.
    """
    import onnx
    from onnx import version_converter

    model = onnx.load(str(source))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=QDQ_OPSET)
    if opset >= QDQ_OPSET:
        return source, opset
    try:
        converted = version_converter.convert_version(model, QDQ_OPSET)
    except Exception as e:  # the converter raises plain exceptions per op
        raise PipelineError(f"int8 needs opset {QDQ_OPSET}; {source} has {opset}: {first_line(e, 200)}") from e
    save_onnx(converted, folder / source.name, external=is_external(source))
    return folder / source.name, opset


def write_int8(
    source: Path,
    ranges: dict[str, tuple[float, float]],
    method: Any,
    encoding: str,
    int8: DictConfig,
    out: Path,
    exclude: Sequence[str] = (),
    only: list[str] | None = None,
) -> None:
    """Write ``source`` as an explicit Q/DQ model in ``encoding`` using the calibrated ``ranges``.

    Args:
        source: the float32 ONNX model.
        ranges: tensor name -> (min, max) from stages.core.calibration.calibrate.
        method: the ONNX Runtime CalibrationMethod the ranges came from.
        encoding: ``u8s8``, ``u8s7`` or ``s8s8`` (``ENCODINGS``).
        int8: ``cfg.precision.int8`` (op_types, per_channel, reduce_range).
        out: where to write the Q/DQ model.
        exclude: node names kept in float.
        only: when given, quantize only these nodes (sensitivity analysis).

    Raises:
        PipelineError: ``int8.keep_float_in`` is not one of ``KEEP_FLOAT_IN``, or the quantizer fails on the graph.
    """
    if int8.keep_float_in not in KEEP_FLOAT_IN:
        raise PipelineError(
            f"precision.int8.keep_float_in: {int8.keep_float_in!r} is not one of {', '.join(KEEP_FLOAT_IN)}"
        )
    quantize_qdq(source, tensors_data(method, ranges), encoding, int8, out, exclude, only)
    if int8.keep_float and int8.keep_float_in != "none":
        import onnx

        model = onnx.load(str(out))
        if int8.keep_float_in == "every" or has_attention(model.graph):
            float_readers_read_float(model.graph, set(int8.keep_float))
            save_onnx(model, out, external=is_external(source))


def tensors_data(method: Any, ranges: dict[str, tuple[float, float]]) -> Any:
    """The calibrated ranges in the form ONNX Runtime's quantizers take them.

    Args:
        method: the ONNX Runtime CalibrationMethod the ranges came from.
        ranges: tensor name -> (min, max).

    Returns:
        onnxruntime.quantization.calibrate.TensorsData: each tensor's float32 lowest and highest value.
    """
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    return TensorsData(
        method,
        {
            name: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
            for name, (lo, hi) in ranges.items()
        },
    )


def quantize_qdq(
    source: Path,
    ranges: Any,
    encoding: str,
    int8: DictConfig,
    out: Path,
    exclude: Sequence[str],
    only: list[str] | None,
) -> None:
    """quantize_static's own steps, minus calibrating: shape inference, then its QDQ quantizer fed ``ranges``.
    Called directly because 1.26 (onnxruntime-gpu's last CUDA 12 build) has no calibration_cache_path.

    Args:
        source: the float32 ONNX model.
        ranges: the calibrated ranges (``tensors_data``).
        encoding: ``u8s8``, ``u8s7`` or ``s8s8`` (``ENCODINGS``).
        int8: ``cfg.precision.int8`` (op_types, per_channel, reduce_range).
        out: where to write the Q/DQ model.
        exclude: node names kept in float.
        only: when given, quantize only these nodes.

    Raises:
        PipelineError: the quantizer fails on the graph.
    """
    from onnxruntime.quantization import QDQQuantizer, QuantType
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    activation, symmetric, seven_bit = ENCODINGS[encoding]
    try:
        quantizer = QDQQuantizer(
            load_model_with_shape_infer(Path(source)),
            int8.per_channel,
            bool(int8.reduce_range) or seven_bit,
            QuantType.QInt8,
            QuantType[activation],
            ranges,
            only,
            list(exclude),
            list(int8.op_types) or sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
            {
                "ActivationSymmetric": symmetric,
                "WeightSymmetric": True,
                # s8s8 is TensorRT's form: its ONNX parser rejects an int32 bias feeding DequantizeLinear
                # ("only activation types allowed as input to this layer"), so biases stay float there
                "QuantizeBias": encoding != "s8s8",
            },
        )
        quantizer.quantize_model()
        quantizer.model.topological_sort()  # what its save_model_to_file does first (and an fp8 check)
        save_onnx(quantizer.model.model, out, external=is_external(source))
    except Exception as e:  # the quantizer raises plain exceptions on graphs it cannot handle
        raise PipelineError(f"cannot quantize {source}: {first_line(e, 200)}") from e


def float_readers_read_float(graph: Any, keep_float: set[str]) -> None:
    """Rewire, in place, the nodes of a type in ``keep_float`` that read an activation's Q/DQ copy, to read the
    float activation itself. ONNX Runtime's quantizer hands the dequantized tensor to every reader of a tensor it
    quantizes for one node, so a residual Add or a LayerNormalization beside a MatMul would take its rounding
    error; TensorRT's and ONNX Runtime's transformer recipes keep those in float.

    Args:
        graph: the Q/DQ model's GraphProto.
        keep_float: op types that read float.
    """
    weights = {t.name for t in graph.initializer}
    q_input = {n.output[0]: n.input[0] for n in graph.node if n.op_type == QDQ[0] and n.input[0] not in weights}
    float_of = {n.output[0]: q_input[n.input[0]] for n in graph.node if n.op_type == QDQ[1] and n.input[0] in q_input}
    for node in graph.node:
        if node.op_type in keep_float:
            for i, name in enumerate(node.input):
                if name in float_of:
                    node.input[i] = float_of[name]


def quantized_nodes(model: Any, op_types: Sequence[str] = ()) -> list[str]:
    """Names of the nodes that read a dequantized tensor, in graph order (the nodes INT8 quantized).

    Args:
        model: a Q/DQ ModelProto.
        op_types: only nodes of these types (``precision.int8.op_types``; a Reshape reading a Q/DQ copy is not
            quantized compute); empty for every type.

    Returns:
        list[str]: node names.
    """
    dequantized = {out for node in model.graph.node if node.op_type == QDQ[1] for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type not in QDQ
        and (not op_types or node.op_type in op_types)
        and any(name in dequantized for name in node.input)
    ]


def activation_table(model: Any, ranges: dict[str, tuple[float, float]]) -> dict[str, dict[str, Any]]:
    """Tensor -> calibrated range plus the scale and zero point the Q/DQ model quantizes it with (when it does).

    Args:
        model: the Q/DQ ModelProto.
        ranges: tensor name -> calibrated (min, max); a quantized tensor it lacks (NNCF measures its own ranges)
            is recorded with its scale and zero point alone.

    Returns:
        dict: tensor name -> ``min``, ``max`` and, where quantized, ``scale``, ``zero_point`` and ``type``.
    """
    from onnx import numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    table: dict[str, dict[str, Any]] = {name: {"min": lo, "max": hi} for name, (lo, hi) in ranges.items()}
    for node in model.graph.node:
        if node.op_type == QDQ[0] and node.input[1] in constants and constants[node.input[1]].size == 1:
            zero_point = constants.get(node.input[2]) if len(node.input) > 2 else None
            table[node.input[0]] = table.get(node.input[0], {}) | {
                "scale": float(constants[node.input[1]].item()),  # NNCF writes shape (1,), ONNX Runtime ()
                "zero_point": 0 if zero_point is None else int(zero_point.item()),
                "type": "uint8" if zero_point is not None and zero_point.dtype == np.uint8 else "int8",
            }
    return table


def check_int8(model: Any) -> None:
    """A model the quantizer left without any Q/DQ node cannot run as int8: say so in one line.

    Args:
        model: the Q/DQ ModelProto.

    Raises:
        PipelineError: nothing was quantized, naming the graph's op types and the keys to change.
    """
    if not quantized_nodes(model):
        ops = sorted({node.op_type for node in model.graph.node})
        raise PipelineError(
            f"the model has no node int8 can quantize (op types: {', '.join(ops)}); "
            "check precision.int8.op_types or use precision=fp16"
        )
