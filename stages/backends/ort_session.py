"""ONNX Runtime sessions as the backend opens them: session options, execution providers and their options (the
TensorRT provider's caches inside the engine folder; offline optimization without it), the check that the provider
asked for is the one that runs, IO-bound timed calls, the lazy session loader over a built engine and the
smoke check's relative error."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stages.backends.base import TimedCall
from stages.backends.cuda_setup import preload_gpu_libraries
from stages.core.errors import PipelineError

LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}
LEVELS["all"] = "ORT_ENABLE_ALL"
MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
TRT_EP_CACHE = "trt_ep_cache"  # inside the engine folder: the TensorRT provider's engines and timing cache


def provider_options(providers: list[str], engine_dir: Path | None) -> list[dict[str, str]]:
    """Options per provider: the TensorRT provider caches its engines and timing cache inside the engine folder,
    so DVC owns them with the engine (never a side directory)."""
    options = []
    for name in providers:
        if name == "TensorrtExecutionProvider" and engine_dir is not None:
            cache = str(engine_dir / TRT_EP_CACHE)
            options.append(
                {
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": cache,
                    "trt_timing_cache_enable": "True",
                    "trt_timing_cache_path": cache,
                }
            )
        else:
            options.append({})
    return options


def offline_providers(providers: list[str]) -> list[str]:
    """The providers the offline optimization runs on: all but TensorRT's, whose compiled nodes ONNX Runtime cannot
    serialize ("Unable to serialize model as it contains compiled nodes"); TensorRT joins when the engine loads."""
    return [p for p in providers if p != "TensorrtExecutionProvider"] or ["CPUExecutionProvider"]


def open_session(model: Path, options: Any, providers: list[str], engine_dir: Path | None = None) -> Any:
    """An InferenceSession on ``providers``; refused in one line when ONNX Runtime silently fell back from the
    first provider asked for (it does when, e.g., the CUDA or TensorRT libraries do not load). The TensorRT
    and CUDA providers get their libraries loaded first (``cuda_setup.preload_gpu_libraries``)."""
    if problem := preload_gpu_libraries(providers):
        raise PipelineError(f"backend.onnxruntime.providers: {problem}")
    session = onnxruntime_module().InferenceSession(
        str(model), options, providers=providers, provider_options=provider_options(providers, engine_dir)
    )
    check_provider(session, providers[0])
    return session


def check_provider(session: Any, wanted: str) -> None:
    """Fail unless ``wanted`` is the provider the session actually runs on first."""
    running = session.get_providers()
    if not running or running[0] != wanted:
        raise PipelineError(
            f"backend.onnxruntime.providers: asked for {wanted} but ONNX Runtime runs on "
            f"{', '.join(running) or 'nothing'} (it falls back silently when a provider's libraries do not load)"
        )


def onnxruntime_module() -> Any:
    """The onnxruntime module, imported on first use (the CPU or the GPU distribution, whichever is installed)."""
    import onnxruntime

    return onnxruntime


def session_options(threads: int, level: str, mode: str = "sequential") -> Any:
    """SessionOptions with ``threads`` intra-op threads (0: ONNX Runtime's default), optimization ``level`` and
    execution ``mode`` (parallel runs independent branches at once)."""
    ort = onnxruntime_module()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    options.execution_mode = getattr(ort.ExecutionMode, MODES[mode])
    options.log_severity_level = 3  # errors only
    return options


def bound_session(sess: Any, feed: Mapping[str, np.ndarray]) -> TimedCall:
    """``run_with_iobinding`` on a binding of ``feed`` and of outputs preallocated from one run."""
    ort = onnxruntime_module()
    outputs = sess.run(None, dict(feed))  # learn the output shapes once
    binding = sess.io_binding()
    values = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in feed.items()}
    for name, value in values.items():
        binding.bind_ortvalue_input(name, value)
    for meta, array in zip(sess.get_outputs(), outputs, strict=True):
        values[meta.name] = ort.OrtValue.ortvalue_from_numpy(array)
        binding.bind_ortvalue_output(meta.name, values[meta.name])
    run_options = ort.RunOptions()

    def call(keep_alive: tuple = (feed, outputs, values)) -> None:  # the bound buffers must outlive the call
        sess.run_with_iobinding(binding, run_options)

    return TimedCall(call)


def relative_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """Largest L2 relative error over the outputs; infinite when an output is not finite."""
    errors = []
    for a, b in zip(got, want, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if not np.isfinite(a).all():
            return float("inf")
        errors.append(float(np.linalg.norm(a - b)) / max(float(np.linalg.norm(b)), 1e-12))
    return float(max(errors, default=0.0))


class SessionFromEngine:
    """A lazy loader in Polygraphy's style: calling it opens an InferenceSession over a built engine with the
    settings its manifest records (OnnxrtRunner invokes it on activation)."""

    def __init__(self, engine: Path, settings: dict[str, Any]) -> None:
        self.engine, self.settings = engine, settings

    def __call__(self) -> Any:
        threads, mode = self.settings["intra_op_num_threads"], self.settings.get("execution_mode", "sequential")
        return open_session(
            self.engine, session_options(threads, "disabled", mode), self.settings["providers"], self.engine.parent
        )
