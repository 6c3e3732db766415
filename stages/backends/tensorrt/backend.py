"""TensorRT backend (10 and 11): the precision stage's ONNX as a strongly typed network, built per the plan in
``plan`` with Polygraphy's loaders into a plain serialized engine (``engine.plan``, which trtexec and C++
loaders open) beside its manifest; run by Polygraphy's TrtRunner; timed trtexec-style (``timing.TimedInference``).

TensorRT is imported only inside methods: every other module, and the CPU test suite, works without it.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.backends.tensorrt.cuda import compute_capability, cuda_mismatch, device_count, device_facts, why_no_device
from stages.backends.tensorrt.plan import build_plan, loaders
from stages.backends.tensorrt.versions import bf16_problem, too_old
from stages.core.artifacts import atomic_path, sha256
from stages.core.errors import PipelineError, first_line
from stages.core.profiles import profile_index
from stages.core.triton import TritonModel
from stages.runtime import registry
from stages.runtime.base import Availability, Backend, Bf16, BuildSpec, Capabilities, TimedCall, quiet_polygraphy
from stages.runtime.cuda_setup import expose_cudart, installed, tensorrt_cuda_major

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner

NAME = "tensorrt"
ENGINE_FILE = "engine.plan"
INSTALL = "pip install -e '.[tensorrt-cu12]' or '.[tensorrt-cu13]' (by the CUDA version nvidia-smi prints)"


class TensorRTBackend(Backend):
    """TensorRT on the first visible CUDA device."""

    name = NAME
    rank = 0
    colour = "#7a4"

    @property
    def capabilities(self) -> Capabilities:
        """CUDA; int8 as TensorRT's explicit quantization (symmetric int8 Q/DQ, zero points 0); bf16 as a bfloat16
        graph (strongly typed) where the GPU has bfloat16 (compute capability 8.0 on), else one line; shape
        profiles; no baseline (the engine is the TensorRT figure) and no tuning at build (TensorRT times its own
        tactics: backend.tune/tune_s do not reach it)."""
        no_bf16 = bf16_problem(compute_capability())
        bf16 = Bf16.NONE if no_bf16 else Bf16.GRAPH
        return Capabilities("cuda", "s8s8", bf16, bf16_reason=no_bf16 or "", uses_profiles=True)

    def availability(self) -> Availability:
        """TensorRT 10 or newer imports, and a CUDA device is visible."""
        try:
            import tensorrt as trt
        except ImportError as e:
            return Availability(False, f"tensorrt does not import ({e}): {INSTALL}")
        if problem := too_old(trt.__version__):
            return Availability(False, problem)
        if device_count() == 0:
            return Availability(False, why_no_device())
        if problem := cuda_mismatch():
            return Availability(False, problem)
        facts = device_facts()
        return Availability(True, f"TensorRT {trt.__version__} on {facts['gpu']} (sm {facts['compute_capability']})")

    def fingerprint(self) -> dict[str, Any]:
        """What an engine depends on: TensorRT's version and the CUDA major its libraries were built for, the
        driver (and the CUDA it supports), the GPU and its compute capability. cuda-python's own runtime only
        times and copies, so it is recorded in the manifest (``build``), not keyed."""
        import tensorrt as trt

        facts = device_facts()
        facts.pop("cuda_python_runtime")
        cuda = {"driver_api": facts.pop("cuda_driver_api"), "tensorrt_build": tensorrt_cuda_major() or "unknown"}
        return {"backend": NAME, "cuda": cuda, "device": facts, "version": trt.__version__}

    def build(self, onnx: Path, spec: BuildSpec, out: Path) -> dict[str, Any]:
        """Build ``onnx`` per the plan into ``out/engine.plan``; record the plan and the timing cache used.
        TensorRT times its own tactics while it builds, so ``spec.tune`` adds nothing here."""
        quiet_polygraphy()
        plan = build_plan(spec.settings, spec.profiles, registry.fingerprint(NAME), spec.cache_dir)
        cache = Path(plan["timing_cache"]) if plan["timing_cache"] else None
        before = sha256(cache) if cache and cache.is_file() else None
        try:
            engine = loaders(plan, onnx)()
        except self.runtime_errors() as e:  # Polygraphy raises PolygraphyException after logging TensorRT's errors
            raise PipelineError(f"TensorRT cannot build {onnx}: {first_line(e, 200)}") from e
        with atomic_path(out / ENGINE_FILE) as tmp:
            tmp.write_bytes(bytes(engine))
        used = None if cache is None else {"path": str(cache), "sha256_before": before, "reused": before is not None}
        return {
            "cuda_python": installed("cuda-python", "cuda-bindings")
            | {"runtime": device_facts()["cuda_python_runtime"]},
            "engine": ENGINE_FILE,
            "profiles": plan["profiles"],
            "settings": plan["settings"],
            "strongly_typed": True,
            "timing_cache": used,
        }

    def evaluation_runner(self, onnx: Path, spec: BuildSpec, folder: Path, name: str) -> "BaseRunner":
        """The untuned plan built into ``folder`` (the base class's), with libcudart exposed as for ``load_runner``."""
        expose_cudart()
        return super().evaluation_runner(onnx, spec, folder, name)

    def load_runner(self, manifest: dict[str, Any], path: Path, name: str) -> "BaseRunner":
        """A TrtRunner over the verified plan that knows the profiles it was built with (libcudart exposed first:
        Polygraphy's CUDA stream needs it, and CUDA 13's wheel puts it where Polygraphy does not look)."""
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes

        from stages.backends.tensorrt.runner import ProfiledTrtRunner

        expose_cudart()
        return ProfiledTrtRunner(EngineFromBytes(BytesFromPath(str(path))), name, manifest["profiles"])

    def triton(self, manifest: Mapping[str, Any]) -> TritonModel:
        """Triton's tensorrt backend (``tensorrt_plan``) on the plan itself, every instance holding every profile
        the engine was built with; Triton batches up to the largest batch a profile holds."""
        profiles = [str(i) for i in range(len(manifest["profiles"]))]
        return TritonModel("tensorrt", "tensorrt_plan", "model.plan", "engine", kind="KIND_GPU", profiles=profiles)

    def set_profile(self, runner: "BaseRunner", index: int) -> None:
        """Polygraphy's own switch of the activated TrtRunner's optimization profile."""
        runner.set_profile(index)

    def runtime_errors(self) -> tuple[type[Exception], ...]:
        """This project's and Polygraphy's one-line errors (Polygraphy's TensorRT loaders raise its exception), and
        the ``RuntimeError`` and ``TypeError`` TensorRT's bindings raise."""
        return (*super().runtime_errors(), RuntimeError, TypeError)

    def timed_call(self, runner: "BaseRunner", feed: dict[str, Any], settings: Mapping[str, Any]) -> TimedCall:
        """trtexec-style timing (``stages.backends.tensorrt.timing.TimedInference``) in a context of its own."""
        from stages.backends.tensorrt.timing import TimedInference

        index = profile_index(runner.profiles, feed)
        return TimedInference(runner.engine, feed, index, settings["cuda_graph"], settings["no_data_transfers"])
