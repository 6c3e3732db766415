"""ONNX Runtime backend: the engine is an offline-optimized ONNX model plus the session settings it runs with.

Build runs ONNX Runtime's graph optimizer once (``optimized_model_filepath``) and saves the result; loading
reads it back with optimizations disabled (they are already applied). The optimized model holds layouts chosen
for this CPU's instruction set, so the manifest's fingerprint includes the CPU.
"""

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.backends.onnxruntime.session import (
    LEVELS,
    TRT,
    SessionFromEngine,
    bound_session,
    offline_providers,
    onnxruntime_module,
    open_session,
    ort_errors,
    relative_error,
    resolve_settings,
    session_options,
    with_tensorrt_options,
)
from stages.backends.onnxruntime.triton import triton_model
from stages.core.device import cpu_fingerprint, x86_without_vnni
from stages.core.errors import PipelineError, first_line
from stages.core.graph_files import is_external, sidecar
from stages.core.onnx_io import load_onnx, unsupported_op
from stages.core.triton import TritonModel
from stages.core.tuning import distinct, thread_counts, tune
from stages.runtime.base import Availability, Backend, Bf16, BuildSpec, Capabilities, TimedCall, quiet_polygraphy
from stages.runtime.cuda_setup import GPU_PROVIDERS

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner

NAME = "onnxruntime"
ENGINE_FILE = "engine.onnx"
EXTERNAL_FILE = "session.optimized_model_external_initializers_file_name"  # ONNX Runtime's session config keys
EXTERNAL_MIN_BYTES = "session.optimized_model_external_initializers_min_size_in_bytes"
SMOKE_TOLERANCE = 0.1  # largest relative error (L2) of an optimized engine against its unoptimized graph


def candidates(settings: Mapping[str, Any], cores: int) -> list[dict[str, Any]]:
    """Session settings worth timing: the configured ones first, then other thread counts and parallel mode."""
    first = {"intra_op_num_threads": settings["intra_op_num_threads"], "execution_mode": settings["execution_mode"]}
    options = [first] + [{"intra_op_num_threads": t, "execution_mode": "sequential"} for t in thread_counts(cores)]
    options.append({"intra_op_num_threads": cores, "execution_mode": "parallel"})
    return distinct(options)


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the execution providers this onnxruntime build has (CPU everywhere)."""

    name = NAME
    rank = 2
    baseline = "onnxruntime_fp32"
    colour = "#58c"

    @property
    def capabilities(self) -> Capabilities:
        """CPU; int8 as uint8 activations x int8 weights, which MLAS runs fast (symmetric s8s8 ran slower than fp32),
        with 7-bit weights on x86 without VNNI, where its int16 pair sums saturate on 8-bit weights (u8s7); no bf16.
        """
        return Capabilities(
            device="cpu",
            int8_encoding="u8s7" if x86_without_vnni(cpu_fingerprint()) else "u8s8",
            bf16=Bf16.NONE,
            bf16_reason=(
                "ONNX Runtime's CPU provider has no bfloat16 kernels for most ops: use backend=openvino (bf16 on "
                "AVX-512 CPUs), or precision=fp16"
            ),
            baseline=self.baseline,
            tunes=True,  # threads and the execution mode, timed at build within backend.tune_s
        )

    def capabilities_for(self, settings: Mapping[str, Any]) -> Capabilities:
        """On a GPU provider the engine runs on CUDA; behind TensorRT's it takes TensorRT's int8 form (s8s8: its
        parser refuses the CPU encoding's uint8 zero points), else the CPU's."""
        providers = list(settings.get("providers") or [])
        caps = self.capabilities
        if providers[:1] == [TRT]:
            no_bf16 = "bf16 behind ONNX Runtime's TensorRT provider is not wired here: use backend=tensorrt"
            return replace(caps, device="cuda", int8_encoding="s8s8", bf16_reason=no_bf16)
        if set(providers[:1]) & set(GPU_PROVIDERS):
            return replace(caps, device="cuda")
        return caps

    def availability(self) -> Availability:
        """ONNX Runtime is available wherever it imports."""
        try:
            ort = onnxruntime_module()
        except ImportError as e:
            return Availability(False, f"onnxruntime does not import ({e}): pip install onnxruntime")
        return Availability(True, f"onnxruntime {ort.__version__} with {', '.join(ort.get_available_providers())}")

    def fingerprint(self) -> dict[str, Any]:
        """ONNX Runtime's version and providers, and the CPU."""
        ort = onnxruntime_module()
        return {
            "backend": NAME,
            "device": {"cpu": cpu_fingerprint()},
            "providers": sorted(ort.get_available_providers()),
            "version": ort.__version__,
        }

    def build(self, onnx: Path, spec: BuildSpec, out: Path) -> dict[str, Any]:
        """Optimize ``onnx`` offline into ``out/engine.onnx`` at the configured level, or the next lower one that
        runs it: each candidate must load and match the unoptimized graph on a smoke input (ONNX Runtime's CPU
        optimizers have crashed on float16 graphs). A lower level than asked is recorded in the manifest. Then,
        when ``spec.tune``, time thread counts and execution modes on the optimized model and keep the fastest."""
        settings = with_tensorrt_options(resolve_settings(spec.settings), spec)
        requested = settings["graph_optimization_level"]
        if set(settings["providers"]) & set(GPU_PROVIDERS) and requested in ("extended", "all"):
            requested = "basic"  # higher levels bake in CPU-only layouts; ONNX Runtime advises basic for other EPs
        feed = spec.feed(min(spec.batch_sizes))
        expected = self._session(onnx, settings, "disabled").run(None, feed)
        problems = []
        external = is_external(onnx)
        downward = list(LEVELS)[::-1]  # all, extended, basic, disabled
        for level in downward[downward.index(requested) :]:
            try:
                options = session_options(settings["intra_op_num_threads"], level)
                options.optimized_model_filepath = str(out / ENGINE_FILE)
                if external:  # past 2 GiB the optimized model cannot hold its weights: they go to its sidecar
                    options.add_session_config_entry(EXTERNAL_FILE, sidecar(ENGINE_FILE).name)
                    options.add_session_config_entry(EXTERNAL_MIN_BYTES, "0")  # every initializer, as save_onnx
                open_session(onnx, options, offline_providers(settings["providers"]))
                got = self._session(out / ENGINE_FILE, settings, "disabled").run(None, feed)
                error = relative_error(got, expected)
            except ort_errors() as e:  # ONNX Runtime's own types, for graphs it cannot optimize
                problems.append(f"{level}: {first_line(e, 160)}")
                continue
            if error <= SMOKE_TOLERANCE:
                break
            problems.append(f"{level}: outputs differ from the unoptimized graph (relative error {error:.3g})")
        else:
            raise PipelineError(f"onnxruntime cannot build {onnx} at any optimization level ({'; '.join(problems)})")
        settings["graph_optimization_level"] = level
        tuning = None
        if spec.tune and not set(settings["providers"]) & set(GPU_PROVIDERS):

            def open_call(option: dict[str, Any], batch: int) -> TimedCall:
                session = self._session(out / ENGINE_FILE, settings | option, "disabled")
                return bound_session(session, spec.feed(batch))

            options = candidates(settings, cpu_fingerprint()["cores"])
            tuning = tune(options, open_call, spec.batch_sizes, spec.tune_s)
            settings |= tuning["chosen"]
        built = {"engine": ENGINE_FILE, "profiles": spec.profiles, "settings": settings, "tuning": tuning}
        if problems:
            built["optimization_fallback"] = {"requested": requested, "used": level, "why": problems}
        return built

    @staticmethod
    def _session(model: Path, settings: dict[str, Any], level: str) -> Any:
        options = session_options(settings["intra_op_num_threads"], level, settings.get("execution_mode", "sequential"))
        try:
            return open_session(model, options, settings["providers"], settings.get("tensorrt_options"))
        except ort_errors() as e:  # ONNX Runtime's own types: the op or graph it cannot take, in one line
            raise unsupported_op(e, load_onnx(model, check=False), "onnxruntime", str(model)) from e

    def load_runner(self, manifest: dict[str, Any], path: Path, name: str) -> "BaseRunner":
        """An OnnxrtRunner over the verified engine file, with the session settings it was built with."""
        from polygraphy.backend.onnxrt import OnnxrtRunner

        return OnnxrtRunner(SessionFromEngine(path, manifest["settings"]), name=name)

    def evaluation_runner(self, onnx: Path, spec: BuildSpec, folder: Path, name: str) -> "BaseRunner":
        """A session on ``onnx`` with the engine's settings, optimized in memory at the configured level: what
        the precision stage judges a graph with."""
        from polygraphy.backend.onnxrt import OnnxrtRunner

        settings = with_tensorrt_options(resolve_settings(spec.settings), spec)
        level = settings["graph_optimization_level"]
        if set(settings["providers"]) & set(GPU_PROVIDERS) and level in ("extended", "all"):
            level = "basic"  # as build: higher levels bake in CPU-only layouts
        quiet_polygraphy()
        return OnnxrtRunner(lambda: self._session(onnx, settings, level), name=name)

    def baseline_runner(self, onnx: Path, name: str) -> "BaseRunner":
        """A default CPU InferenceSession on ``onnx``: ONNX Runtime's own defaults, nothing tuned."""
        return default_session_runner(onnx, name)

    def triton(self, manifest: Mapping[str, Any]) -> TritonModel:
        """Triton's onnxruntime backend on the offline-optimized engine file (``onnxruntime.triton``)."""
        return triton_model(manifest)

    def runtime_errors(self) -> tuple[type[Exception], ...]:
        """This project's and Polygraphy's one-line errors, and ONNX Runtime's own exception types."""
        return (*super().runtime_errors(), *ort_errors())

    def describe(self, runner: "BaseRunner") -> dict[str, Any]:
        """What the activated runner's session runs with: providers, optimization level, threads (0: ONNX
        Runtime's choice)."""
        options = runner.sess.get_session_options()
        return {
            "graph_optimization_level": options.graph_optimization_level.name,
            "intra_op_num_threads": options.intra_op_num_threads,
            "providers": runner.sess.get_providers(),
        }

    def timed_call(self, runner: "BaseRunner", feed: dict[str, np.ndarray], settings: Mapping[str, Any]) -> TimedCall:
        """IO-bound ``run_with_iobinding``: inputs and preallocated outputs are bound once, outside the timing."""
        return bound_session(runner.sess, feed)


def default_session_runner(onnx: str | os.PathLike[str], name: str) -> Any:
    """An OnnxrtRunner over a default InferenceSession (CPU, ONNX Runtime's own defaults) on ``onnx``."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    quiet_polygraphy()
    return OnnxrtRunner(SessionFromOnnx(str(onnx), providers=["CPUExecutionProvider"]), name=name)
