"""What Triton's OpenVINO backend gets of an OpenVINO engine. That backend compiles a model file (an IR, ONNX ...),
never an exported blob, and of the precision settings it takes only ``HINT_BF16``: it cannot pin f32 or f16. Where
OpenVINO's default here is not the certified precision (bf16 on AVX-512 CPUs for a float32 engine), Triton would
serve the graph in that default: config.pbtxt says so at its top, and docs/deploy.md gives the measurement.
(Marking the IR's operations precise, OpenVINO's DisablePrecisionConversion, did not keep the digits model's
FullyConnected and pooling out of bf16 on the Sapphire Rapids Xeon: not a pin either.)"""

from collections.abc import Mapping
from typing import Any

from stages.backends.openvino.runner import compiled_precision
from stages.core.triton import TritonModel


def triton_model(manifest: Mapping[str, Any]) -> TritonModel:
    """Triton's openvino backend on the engine's precision graph (``model.onnx``) with its threads, streams and
    hint; every axis as the graph has it (``max_batch_size: 0``, a dynamic axis -1 with ``RESHAPE_IO_LAYERS``: with a
    positive ``max_batch_size`` that backend takes only full batches).

    Args:
        manifest: the engine's manifest (its settings: threads, streams, hint, execution precision).

    Returns:
        TritonModel: with a warning note where Triton would not run it as certified here.
    """
    settings = manifest["settings"]
    parameters = {
        "PERFORMANCE_HINT": str(settings["performance_hint"]),
        "INFERENCE_NUM_THREADS": str(settings["inference_num_threads"]),
        "NUM_STREAMS": str(settings["num_streams"]),
        "RESHAPE_IO_LAYERS": "yes",
    }
    certified, default = settings["inference_precision"], compiled_precision("")
    notes = []
    if certified == "bf16":
        parameters["HINT_BF16"] = "yes"
    elif certified != default:
        notes.append(
            f"NOT AS CERTIFIED HERE: the engine runs {certified}; Triton's OpenVINO backend cannot pin it (HINT_BF16 "
            f"only) and OpenVINO's default on this CPU is {default}. Serve it with engineforge.Engine (docs/deploy.md)."
        )
    return TritonModel("openvino", None, "model.onnx", "graph", batching="shapes", parameters=parameters, notes=notes)
