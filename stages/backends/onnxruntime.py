"""ONNX Runtime backend: the engine is an offline-optimized ONNX model plus the session settings it runs with.

Build runs ONNX Runtime's graph optimizer once (``optimized_model_filepath``) and saves the result; loading
reads it back with optimizations disabled (they are already applied). The optimized model holds layouts chosen
for this CPU's instruction set, so the manifest's fingerprint includes the CPU.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.backends.base import Availability, cpu_fingerprint, quiet_polygraphy, verified_engine
from stages.core.errors import PipelineError

if TYPE_CHECKING:
    from omegaconf import DictConfig

NAME = "onnxruntime"
ENGINE_FILE = "engine.onnx"
LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}
LEVELS["all"] = "ORT_ENABLE_ALL"
SMOKE_TOLERANCE = 0.1  # largest relative error (L2) of an optimized engine against its unoptimized graph


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def session_options(threads: int, level: str) -> Any:
    """SessionOptions with ``threads`` intra-op threads (0: ONNX Runtime's default) and optimization ``level``."""
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    options.log_severity_level = 3  # errors only
    return options


def resolve_settings(settings: "DictConfig") -> dict[str, Any]:
    """The engine's session settings with defaults made explicit (thread count resolved to a number)."""
    level = settings.graph_optimization_level
    if level not in LEVELS:
        raise PipelineError(
            f"backend.onnxruntime.graph_optimization_level: {level!r} is not one of {', '.join(LEVELS)}"
        )
    available = _ort().get_available_providers()
    missing = [p for p in settings.providers if p not in available]
    if missing or not settings.providers:
        raise PipelineError(
            f"backend.onnxruntime.providers: {', '.join(missing) or 'empty list'} not available in this "
            f"onnxruntime; available: {', '.join(available)}"
        )
    threads = settings.intra_op_num_threads or cpu_fingerprint()["cores"]
    return {"graph_optimization_level": level, "intra_op_num_threads": threads, "providers": list(settings.providers)}


def smoke_feed(session: Any, dims: "DictConfig", batch: int = 2) -> dict[str, np.ndarray]:
    """Seeded inputs for ``session``'s model: batch ``batch``, other dynamic axes from ``model.dims`` (else 1);
    floats standard normal, integers 0 or 1 (valid ids and mask values for every model here)."""
    rng = np.random.default_rng(0)
    feed = {}
    for meta in session.get_inputs():
        shape = [d if isinstance(d, int) else (batch if i == 0 else dims.get(d, 1)) for i, d in enumerate(meta.shape)]
        dtype = np.dtype({"tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(meta.type, np.float32))
        if dtype.kind == "i":
            feed[meta.name] = rng.integers(0, 2, size=shape, dtype=dtype)
        else:
            feed[meta.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def relative_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """Largest L2 relative error over the outputs; infinite when an output is not finite."""
    errors = []
    for a, b in zip(got, want, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if not np.isfinite(a).all():
            return float("inf")
        errors.append(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))
    return float(max(errors, default=0.0))


class SessionFromEngine:
    """A lazy loader in Polygraphy's style: calling it opens an InferenceSession over a built engine with the
    settings its manifest records (OnnxrtRunner invokes it on activation)."""

    def __init__(self, engine: Path, settings: dict[str, Any]) -> None:
        self.engine, self.settings = engine, settings

    def __call__(self) -> Any:
        options = session_options(self.settings["intra_op_num_threads"], "disabled")
        return _ort().InferenceSession(str(self.engine), options, providers=self.settings["providers"])


class OnnxRuntimeBackend:
    """ONNX Runtime on the execution providers this onnxruntime build has (CPU everywhere)."""

    name = NAME
    int8_encoding = "u8s8"  # MLAS runs uint8 activations x int8 weights fast; symmetric s8s8 ran slower than fp32

    def availability(self) -> Availability:
        """ONNX Runtime is available wherever it imports."""
        try:
            ort = _ort()
        except ImportError as e:
            return Availability(False, f"onnxruntime does not import ({e}): pip install onnxruntime")
        return Availability(True, f"onnxruntime {ort.__version__} with {', '.join(ort.get_available_providers())}")

    def fingerprint(self) -> dict[str, Any]:
        """ONNX Runtime's version and providers, and the CPU."""
        ort = _ort()
        return {
            "backend": NAME,
            "device": {"cpu": cpu_fingerprint()},
            "providers": sorted(ort.get_available_providers()),
            "version": ort.__version__,
        }

    def build(self, onnx: Path, cfg: "DictConfig", out: Path) -> dict[str, Any]:
        """Optimize ``onnx`` offline into ``out/engine.onnx`` at the configured level, or the next lower one that
        runs it: each candidate must load and match the unoptimized graph on a smoke input (ONNX Runtime's CPU
        optimizers have crashed on float16 graphs). A lower level than asked is recorded in the manifest."""
        settings = resolve_settings(cfg.backend.onnxruntime)
        requested = settings["graph_optimization_level"]
        reference = self._session(onnx, settings, "disabled")
        feed = smoke_feed(reference, cfg.model.dims)
        expected = reference.run(None, feed)
        problems = []
        downward = list(LEVELS)[::-1]  # all, extended, basic, disabled
        for level in downward[downward.index(requested) :]:
            try:
                options = session_options(settings["intra_op_num_threads"], level)
                options.optimized_model_filepath = str(out / ENGINE_FILE)
                _ort().InferenceSession(str(onnx), options, providers=settings["providers"])
                got = self._session(out / ENGINE_FILE, settings, "disabled").run(None, feed)
                error = relative_error(got, expected)
            except Exception as e:  # onnxruntime raises its own exception types for graphs it cannot optimize
                problems.append(f"{level}: {str(e).splitlines()[0][:160]}")
                continue
            if error <= SMOKE_TOLERANCE:
                break
            problems.append(f"{level}: outputs differ from the unoptimized graph (relative error {error:.3g})")
        else:
            raise PipelineError(f"onnxruntime cannot build {onnx} at any optimization level ({'; '.join(problems)})")
        built = {"engine": ENGINE_FILE, "settings": settings | {"graph_optimization_level": level}}
        if problems:
            built["optimization_fallback"] = {"requested": requested, "used": level, "why": problems}
        return built

    @staticmethod
    def _session(model: Path, settings: dict[str, Any], level: str) -> Any:
        options = session_options(settings["intra_op_num_threads"], level)
        try:
            return _ort().InferenceSession(str(model), options, providers=settings["providers"])
        except Exception as e:  # onnxruntime's own exception types
            raise PipelineError(f"onnxruntime cannot load {model}: {str(e).splitlines()[0][:200]}") from e

    def runner(self, engine: Path, name: str = "engine") -> Any:
        """An OnnxrtRunner over the verified engine in the folder ``engine``."""
        from polygraphy.backend.onnxrt import OnnxrtRunner

        quiet_polygraphy()
        manifest, path = verified_engine(engine, self.fingerprint())
        return OnnxrtRunner(SessionFromEngine(path, manifest["settings"]), name=name)

    def timed_call(self, runner: Any, feed: dict[str, Any]) -> Callable[[], object]:
        """IO-bound ``run_with_iobinding``: inputs and preallocated outputs are bound once, outside the timing."""
        ort, sess = _ort(), runner.sess
        outputs = sess.run(None, feed)  # learn the output shapes once
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

        return call


def default_session_runner(onnx: str | os.PathLike[str], name: str) -> Any:
    """An OnnxrtRunner over a default InferenceSession (CPU, ONNX Runtime's own defaults) on ``onnx``."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    quiet_polygraphy()
    return OnnxrtRunner(SessionFromOnnx(str(onnx), providers=["CPUExecutionProvider"]), name=name)
