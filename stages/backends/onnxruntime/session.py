"""ONNX Runtime sessions as the backend opens them: session options, execution providers and their options (the
TensorRT provider's precision flags, profile and caches; offline optimization without it), the check that the
provider asked for is the one that runs, IO-bound timed calls, the lazy session loader over a built engine and the
smoke check's relative error."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.device import cpu_fingerprint
from stages.core.errors import PipelineError
from stages.runtime.base import BuildSpec, TimedCall
from stages.runtime.cuda_setup import GPU_PROVIDERS, onnxruntime_conflict, preload_gpu_libraries

LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}
LEVELS["all"] = "ORT_ENABLE_ALL"
MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}
TRT = "TensorrtExecutionProvider"
TRT_CACHE = "onnxruntime-tensorrt"  # the TensorRT provider's engines and timing cache, under the timing-cache folder
SHAPES = ("min", "opt", "max")


def tensorrt_options(precision: str, profile: Mapping[str, Any] | None, cache_dir: Path | None) -> dict[str, str]:
    """The TensorRT provider's options for a graph of ``precision``.

    The provider builds weakly typed networks, so a float16 graph needs ``trt_fp16_enable`` and a Q/DQ graph
    ``trt_int8_enable`` for TensorRT to pick those kernels; the profile is explicit (the engine is built once for the
    whole range, not rebuilt as shapes arrive); its engines and timing cache go in ``cache_dir`` (the timing-cache
    folder, outside every DVC output: a later stage that builds for new shapes writes there, never into the engine).

    Args:
        precision: the graph's precision (fp32, fp16, bf16, int8).
        profile: input name -> min/opt/max shapes (``stages.core.profiles``), or None for the provider's own.
        cache_dir: the folder kept across builds, or None for no cache (a judge's session).

    Returns:
        dict[str, str]: provider option -> value, as ONNX Runtime's Python API takes them.
    """
    options = {"trt_fp16_enable": str(precision == "fp16"), "trt_int8_enable": str(precision == "int8")}
    for key in SHAPES if profile else ():
        options[f"trt_profile_{key}_shapes"] = ",".join(
            f"{name}:{'x'.join(map(str, edge[key]))}" for name, edge in (profile or {}).items()
        )
    if cache_dir is not None:
        cache = str(cache_dir / TRT_CACHE)
        options |= {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": cache,
        }
    return options


def provider_options(providers: list[str], tensorrt: Mapping[str, str] | None) -> list[dict[str, str]]:
    """Options per provider: ``tensorrt`` (``tensorrt_options``) for TensorRT's, none for the others."""
    return [dict(tensorrt or {}) if name == TRT else {} for name in providers]


def resolve_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's session settings with defaults made explicit (thread count resolved to a number)."""
    level, mode = settings["graph_optimization_level"], settings.get("execution_mode", "sequential")
    for key, value, allowed in (("graph_optimization_level", level, LEVELS), ("execution_mode", mode, MODES)):
        if value not in allowed:
            raise PipelineError(f"backend.onnxruntime.{key}: {value!r} is not one of {', '.join(allowed)}")
    available = onnxruntime_module().get_available_providers()
    missing = [p for p in settings["providers"] if p not in available]
    if missing or not settings["providers"]:
        gpu = "; GPU providers need onnxruntime-gpu (docs/gpu.md)" if set(missing) & set(GPU_PROVIDERS) else ""
        raise PipelineError(
            f"backend.onnxruntime.providers: {', '.join(missing) or 'empty list'} not available in this "
            f"onnxruntime; available: {', '.join(available)}{gpu}"
        )
    if set(settings["providers"]) & set(GPU_PROVIDERS) and (conflict := onnxruntime_conflict()):
        raise PipelineError(f"backend.onnxruntime.providers: {conflict}")
    threads = settings["intra_op_num_threads"] or cpu_fingerprint()["cores"]
    return {
        "execution_mode": mode,
        "graph_optimization_level": level,
        "intra_op_num_threads": threads,
        "providers": list(settings["providers"]),
    }


def with_tensorrt_options(settings: dict[str, Any], spec: BuildSpec) -> dict[str, Any]:
    """``settings`` plus, where the TensorRT provider is asked for, its options for ``spec``'s graph (precision
    flag, the first profile, which covers every batch size, and caches under ``spec.cache_dir``): recorded in the
    manifest, so every later session on the engine opens with them."""
    if TRT not in settings["providers"]:
        return settings
    return settings | {"tensorrt_options": tensorrt_options(spec.precision, spec.profiles[0], spec.cache_dir)}


def offline_providers(providers: list[str]) -> list[str]:
    """The providers the offline optimization runs on: all but TensorRT's, whose compiled nodes ONNX Runtime cannot
    serialize ("Unable to serialize model as it contains compiled nodes"); TensorRT joins when the engine loads."""
    return [p for p in providers if p != TRT] or ["CPUExecutionProvider"]


def open_session(model: Path, options: Any, providers: list[str], tensorrt: Mapping[str, str] | None = None) -> Any:
    """An InferenceSession on ``providers`` (TensorRT's with the options ``tensorrt``); refused in one line when
    ONNX Runtime silently fell back from the first provider asked for (it does when, e.g., the CUDA or TensorRT
    libraries do not load). The TensorRT and CUDA providers get their libraries loaded first
    (``cuda_setup.preload_gpu_libraries``)."""
    if problem := preload_gpu_libraries(providers):
        raise PipelineError(f"backend.onnxruntime.providers: {problem}")
    if TRT in providers and tensorrt and "trt_engine_cache_path" in tensorrt:
        Path(tensorrt["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
    session = onnxruntime_module().InferenceSession(
        str(model), options, providers=providers, provider_options=provider_options(providers, tensorrt)
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
        options = session_options(threads, "disabled", mode)
        return open_session(self.engine, options, self.settings["providers"], self.settings.get("tensorrt_options"))


def ort_errors() -> tuple[type[Exception], ...]:
    """ONNX Runtime's own exception types (its pybind module's: ``Fail``, ``InvalidArgument``, ...)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = (getattr(state, name) for name in dir(state))
    return tuple(t for t in found if isinstance(t, type) and issubclass(t, Exception))
