"""What Triton's onnxruntime backend gets of an ONNX Runtime engine: the offline-optimized file and the session
settings it was certified with."""

from collections.abc import Mapping
from typing import Any

from stages.backends.onnxruntime.session import TRT
from stages.core.triton import TritonModel
from stages.runtime.cuda_setup import GPU_PROVIDERS


def triton_model(manifest: Mapping[str, Any]) -> TritonModel:
    """Triton's onnxruntime backend on the offline-optimized engine file, with the session settings the engine
    was certified with (threads, execution mode) and its optimizations off (level 2 is ORT_DISABLE_ALL in that
    backend: the file is already optimized, as ``Engine.open`` opens it).

    Args:
        manifest: the engine's manifest (its session settings and providers).

    Returns:
        TritonModel: the onnxruntime backend, the engine file as ``model.onnx`` and the settings it carries.
    """
    settings = manifest["settings"]
    parameters = {
        "intra_op_thread_count": str(settings["intra_op_num_threads"]),
        "execution_mode": "1" if settings.get("execution_mode") == "parallel" else "0",
    }
    gpu = bool(set(settings["providers"][:1]) & set(GPU_PROVIDERS))
    notes = (
        ["certified behind ONNX Runtime's TensorRT provider: add it as Triton's gpu_execution_accelerator"]
        if TRT in settings["providers"]
        else []
    )
    return TritonModel(
        "onnxruntime",
        "onnxruntime_onnx",
        "model.onnx",
        "engine",
        kind="KIND_GPU" if gpu else "KIND_CPU",
        parameters=parameters,
        lines=["optimization { graph { level: 2 } }"],
        notes=notes,
    )
