"""OpenVINO's side of Polygraphy's runner interface: a compiled model (imported from its blob, or compiled with
OpenVINO's defaults for a baseline) as a BaseRunner whose ports keep the ONNX graph's names, what a compiled model
actually runs with, and the IO-bound timed call of one infer request."""

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from stages.core.specs import onnx_interface
from stages.runtime.base import TimedCall

DEVICE = "CPU"


def property_text(value: Any) -> str:
    """An OpenVINO property as plain text: an element type by its short name (``f32``), an enum by its member's
    name (``LATENCY``), anything else as ``str``."""
    if hasattr(value, "get_type_name"):
        return str(value.get_type_name())
    return str(getattr(value, "name", value))


def compiled_settings(compiled: Any) -> dict[str, Any]:
    """What a compiled model actually runs with: execution precision, hint, threads, streams."""
    read = compiled.get_property
    return {
        "inference_precision": property_text(read("INFERENCE_PRECISION_HINT")),
        "performance_hint": property_text(read("PERFORMANCE_HINT")),
        "inference_num_threads": int(read("INFERENCE_NUM_THREADS")),
        "num_streams": int(read("NUM_STREAMS")),
    }


def graph_names(onnx: Path) -> list[str]:
    """The ONNX graph's input and output names: what a port is called in every report (OpenVINO's own name for a
    port can be another tensor of it, e.g. the float16 cast's ``graph_input_cast_0``)."""
    inputs, outputs = onnx_interface(str(onnx))
    return [spec.name for spec in inputs] + list(outputs)


def port_name(port: Any, names: Sequence[str]) -> str:
    """``port``'s name in the ONNX graph (one of ``names``), else OpenVINO's."""
    return next((n for n in names if n in port.get_names()), port.get_any_name())


class OpenVinoRunner(BaseRunner):
    """Polygraphy's runner interface over a compiled model that ``load`` returns on activation; ports are named as
    in the ONNX graph (``names``)."""

    def __init__(self, load: Callable[[], Any], name: str, names: Sequence[str]) -> None:
        super().__init__(name=name, prefix="openvino-runner")
        self._load, self.names = load, list(names)

    def activate_impl(self) -> None:
        """Compile or import the model, and make one infer request."""
        self.compiled = self._load()
        self.request = self.compiled.create_infer_request()

    def get_input_metadata_impl(self) -> TensorMetadata:
        """Input names, dtypes and shapes (None for a dynamic axis)."""
        meta = TensorMetadata()
        for port in self.compiled.inputs:
            shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
            meta.add(port_name(port, self.names), dtype=port.get_element_type().to_dtype(), shape=shape)
        return meta

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict:
        """One synchronous inference; outputs copied out of the request's buffers."""
        start = time.perf_counter()
        inputs = {port_name(port, self.names): port for port in self.compiled.inputs}
        feed = {
            inputs[name]: array for name, array in feed_dict.items() if name in inputs
        }  # OpenVINO drops unread ones
        results = self.request.infer(feed)
        self.inference_time = time.perf_counter() - start
        return OrderedDict((port_name(port, self.names), np.array(results[port])) for port in self.compiled.outputs)

    def deactivate_impl(self) -> None:
        """Release the request and the compiled model."""
        del self.request, self.compiled


def bound_request(compiled: Any, feed: Mapping[str, np.ndarray], names: Sequence[str]) -> TimedCall:
    """``request.infer`` on a request whose input tensors were set once (``names``: the ONNX graph's)."""
    import openvino as ov

    request = compiled.create_infer_request()
    arrays = {name: np.ascontiguousarray(a) for name, a in feed.items()}
    ports = {port_name(port, names): port for port in compiled.inputs}
    for name, array in arrays.items():
        if name in ports:  # OpenVINO drops a graph input no node reads
            request.set_tensor(ports[name], ov.Tensor(array, shared_memory=True))

    def call(keep_alive: tuple = (arrays,)) -> None:  # the shared input buffers must outlive the request
        request.infer()

    return TimedCall(call)


@cache
def compiled_precision(hint: str) -> str:
    """What OpenVINO's CPU plugin here compiles a float32 MatMul in when asked for ``hint``: the runtime's own
    answer, not a rule about instruction sets (OpenVINO 2026.4 runs bf16 on every AVX-512 CPU, with bf16
    instructions or emulated without them, and on none with AVX2 only: docs/openvino.md).

    Args:
        hint: an ``INFERENCE_PRECISION_HINT`` (``bf16``, ``f16``, ``f32``), or ``""`` for OpenVINO's default.

    Returns:
        str: the element type the compiled model reports (``bf16``, ``f32`` ...), or ``""`` where OpenVINO cannot
        compile it at all (its kernels capped below what it detected, e.g. by ``ONEDNN_MAX_CPU_ISA``).
    """
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 16], ov.Type.f32, name="x")
    model = ov.Model([ops.matmul(x, ops.constant(np.ones((16, 16), np.float32)), False, False)], [x])
    try:
        compiled = ov.Core().compile_model(model, DEVICE, {"INFERENCE_PRECISION_HINT": hint} if hint else {})
    except RuntimeError:  # "could not create a primitive descriptor": no kernel for that type here
        return ""
    return str(compiled_settings(compiled)["inference_precision"])


def properties(settings: Mapping[str, Any]) -> dict[str, Any]:
    """OpenVINO compile properties from our settings (threads 0 and streams 0 leave OpenVINO's choice)."""
    props: dict[str, Any] = {"PERFORMANCE_HINT": settings["performance_hint"]}
    if settings.get("inference_precision"):
        props["INFERENCE_PRECISION_HINT"] = settings["inference_precision"]
    if settings.get("inference_num_threads"):
        props["INFERENCE_NUM_THREADS"] = int(settings["inference_num_threads"])
    if settings.get("num_streams"):
        props["NUM_STREAMS"] = int(settings["num_streams"])
    return props
