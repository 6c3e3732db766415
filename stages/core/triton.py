"""A Triton Inference Server model repository for a deployed engine: ``triton/<model>/config.pbtxt`` and
``triton/<model>/1/<file>``, written from the engine's I/O spec, its profiles and what its backend declares
(``TritonModel``). The text is Triton's ``ModelConfig`` in protobuf text format; tests parse every file written
with the ``ModelConfig`` message that ``tritonclient`` ships. No Triton server runs here (docs/deploy.md)."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stages.core.errors import PipelineError

# numpy dtype name -> Triton's DataType (model_config.proto)
DATA_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int16": "TYPE_INT16",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


@dataclass(frozen=True)
class TritonModel:
    """What a backend declares for Triton: which Triton backend serves its engines and how.

    Attributes:
        backend: Triton's backend name (``tensorrt``, ``onnxruntime``, ``openvino``).
        platform: Triton's platform string, where the backend has one (``tensorrt_plan``, ``onnxruntime_onnx``).
        file: the model file's name under ``1/`` (``model.plan``, ``model.onnx``, ``model.xml``).
        source: which file of the deploy folder that is: ``engine`` (the engine file) or ``graph`` (the precision
            graph, for a backend that compiles at load: Triton's OpenVINO backend cannot load an exported blob).
        kind: the instance group's kind (``KIND_GPU``, ``KIND_CPU``).
        batching: ``dynamic`` (Triton batches requests up to the profiles' largest batch: ``max_batch_size`` > 0),
            or ``shapes`` (``max_batch_size: 0``, every axis in ``dims``, a dynamic one as -1).
        parameters: the backend's ``parameters`` (the certified settings Triton can carry), as strings.
        lines: further top-level lines of ``config.pbtxt`` (e.g. ``optimization { graph { level: 2 } }``).
        profiles: the optimization profiles every instance holds (TensorRT), as Triton's index strings.
        notes: what Triton cannot carry of the certified settings, written as comments at the top of the file.
    """

    backend: str
    platform: str | None
    file: str
    source: str
    kind: str = "KIND_CPU"
    batching: str = "dynamic"
    parameters: Mapping[str, str] = field(default_factory=dict)
    lines: Sequence[str] = ()
    profiles: Sequence[str] = ()
    notes: Sequence[str] = ()


def batched(io: Mapping[str, Any]) -> bool:
    """Whether every input and output starts with a dynamic (named) axis: Triton's batch dimension.

    Args:
        io: the manifest's ``io``.

    Returns:
        bool: True where Triton can batch requests along the first axis.
    """
    tensors = [*io["inputs"], *io["outputs"]]
    return bool(tensors) and all(t["shape"] and isinstance(t["shape"][0], str) for t in tensors)


def tensor_block(kind: str, tensors: Sequence[Mapping[str, Any]], skip_batch: bool) -> str:
    """``input [ ... ]`` or ``output [ ... ]`` for ``tensors`` (the batch axis left out where Triton batches).

    Args:
        kind: ``input`` or ``output``.
        tensors: the manifest's ``io`` entries of that kind.
        skip_batch: leave the first axis out (``max_batch_size`` > 0).

    Returns:
        str: the block's protobuf text.
    """
    entries = []
    for tensor in tensors:
        if tensor["dtype"] not in DATA_TYPES:
            raise PipelineError(f"{kind} {tensor['name']!r}: Triton has no data type for {tensor['dtype']}")
        shape = tensor["shape"][1:] if skip_batch else tensor["shape"]
        dims = ", ".join("-1" if isinstance(d, str) else str(d) for d in shape)
        entries.append(
            f"  {{\n    name: {json.dumps(tensor['name'])}\n    data_type: {DATA_TYPES[tensor['dtype']]}\n"
            f"    dims: [ {dims} ]\n  }}"
        )
    return f"{kind} [\n" + ",\n".join(entries) + "\n]"


def config_text(name: str, model: TritonModel, io: Mapping[str, Any], profiles: Sequence[Mapping[str, Any]]) -> str:
    """The ``config.pbtxt`` of the engine ``name`` served by ``model``.

    Args:
        name: the model's name in the repository (its folder).
        model: what the engine's backend declares for Triton.
        io: the manifest's ``io`` (inputs and outputs with dtypes and shapes).
        profiles: the manifest's shape profiles: the largest batch one of them holds is ``max_batch_size``.

    Returns:
        str: protobuf text of Triton's ``ModelConfig``.
    """
    dynamic = model.batching == "dynamic" and batched(io)
    # the largest batch some profile holds for every input (Triton's rule for TensorRT engines)
    max_batch = max((min(e["max"][0] for e in profile.values()) for profile in profiles), default=0) if dynamic else 0
    dynamic = dynamic and max_batch > 0
    lines = [f"# {note}" for note in model.notes]
    lines.append(f"name: {json.dumps(name)}")
    lines.append(f"backend: {json.dumps(model.backend)}")
    if model.platform:
        lines.append(f"platform: {json.dumps(model.platform)}")
    lines.append(f"default_model_filename: {json.dumps(model.file)}")
    lines.append(f"max_batch_size: {max_batch}")
    lines.append(tensor_block("input", io["inputs"], dynamic))
    lines.append(tensor_block("output", io["outputs"], dynamic))
    group = f"  {{\n    kind: {model.kind}\n    count: 1\n"
    if model.profiles:
        group += f"    profile: [ {', '.join(json.dumps(p) for p in model.profiles)} ]\n"
    lines.append(f"instance_group [\n{group}  }}\n]")
    if dynamic:
        lines.append("dynamic_batching { }")
    for key, value in sorted(model.parameters.items()):
        lines.append(f"parameters {{\n  key: {json.dumps(key)}\n  value: {{ string_value: {json.dumps(value)} }}\n}}")
    lines += list(model.lines)
    return "\n".join(lines) + "\n"
