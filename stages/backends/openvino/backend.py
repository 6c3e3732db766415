"""OpenVINO backend: the CPU engine compiler. Build compiles the precision stage's ONNX for this CPU (after timing
a few runtime settings) and exports the compiled model (``engine.blob``); a load imports the blob, never the ONNX.

The blob holds kernels chosen for this CPU's instruction set by this OpenVINO version, like a TensorRT plan for its
GPU: both are in the fingerprint. Precision follows the graph: OpenVINO's CPU plugin runs float32 graphs in bf16 on
AMX and AVX512_BF16 CPUs by default, so every build pins ``INFERENCE_PRECISION_HINT`` and records what ran.
"""

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from polygraphy.backend.base import BaseRunner

from stages.backends.openvino.runner import (
    DEVICE,
    OpenVinoRunner,
    bound_request,
    compiled_precision,
    compiled_settings,
    graph_names,
    properties,
)
from stages.backends.openvino.triton import triton_model
from stages.core.device import cpu_fingerprint, cpu_label
from stages.core.errors import PipelineError, first_line
from stages.core.nncf_quantize import NNCF
from stages.core.triton import TritonModel
from stages.core.tuning import distinct, thread_counts, tune
from stages.runtime.base import Availability, Backend, Bf16, BuildSpec, Capabilities, TimedCall, quiet_polygraphy

NAME = "openvino"
ENGINE_FILE = "engine.blob"
# the precision stage's graph -> the element type OpenVINO computes its float parts in
EXECUTION = {"fp32": "f32", "int8": "f32", "fp16": "f16", "bf16": "bf16"}
HINTS = ("LATENCY", "THROUGHPUT")


def _ov() -> Any:
    import openvino

    return openvino


def execution_precision(precision: str, configured: str) -> str:
    """The element type to pin: ``backend.openvino.inference_precision``, or (``auto``) what the graph says; a
    float16 graph runs in f32 where OpenVINO does not compile f16 (asked for f16 there, it falls back to its
    default, which is bf16 on AVX512_BF16 CPUs: a silent loss the pin prevents)."""
    if configured != "auto":
        if configured not in ("f32", "bf16", "f16"):
            raise PipelineError(f"backend.openvino.inference_precision: {configured!r} is not auto, f32, bf16 or f16")
        return configured
    wanted = EXECUTION.get(precision, "f32")
    return "f32" if wanted == "f16" and compiled_precision("f16") != "f16" else wanted


def candidates(settings: Mapping[str, Any], cores: int) -> list[dict[str, Any]]:
    """The configured settings first, then the thread counts and the throughput hint worth timing."""
    if settings["performance_hint"] not in HINTS:
        raise PipelineError(
            f"backend.openvino.performance_hint: {settings['performance_hint']!r} is not one of {HINTS}"
        )
    first = {k: settings[k] for k in ("performance_hint", "inference_num_threads", "num_streams")}
    first["inference_num_threads"] = first["inference_num_threads"] or cores
    options = [first]
    options += [
        {"performance_hint": "LATENCY", "inference_num_threads": t, "num_streams": 1} for t in thread_counts(cores)
    ]
    options.append({"performance_hint": "THROUGHPUT", "inference_num_threads": cores, "num_streams": 0})
    return distinct(options)


class OpenVinoBackend(Backend):
    """OpenVINO's CPU plugin."""

    name = NAME
    rank = 1
    baseline = "openvino_default"
    colour = "#c73"

    @property
    def capabilities(self) -> Capabilities:
        """CPU; int8 as NNCF writes it (measured on resnet18: 1.4-1.8x faster on OpenVINO than ONNX Runtime's Q/DQ
        in any of its encodings); bf16 in the runtime where OpenVINO compiles bf16 on this CPU (asked, not
        assumed), else the reason."""
        ran = compiled_precision("bf16")
        how = f"compiles bf16 as {ran}" if ran else "cannot compile bf16"
        return Capabilities(
            device="cpu",
            int8_encoding=NNCF,
            bf16=Bf16.RUNTIME if ran == "bf16" else Bf16.NONE,
            bf16_reason=""
            if ran == "bf16"
            else (f"OpenVINO {how} on this CPU (it runs bf16 on AVX-512 CPUs): use precision=fp32 or fp16"),
            baseline=self.baseline,
            tunes=True,  # threads, streams and the hint, timed at build within backend.tune_s
        )

    def availability(self) -> Availability:
        """OpenVINO imports and its CPU plugin is there."""
        try:
            ov = _ov()
            devices = ov.Core().available_devices
        except Exception as e:  # ImportError, or the plugin failing to load its libraries
            return Availability(False, f"openvino does not load ({first_line(e, 120)}): pip install openvino")
        if DEVICE not in devices:
            return Availability(False, f"OpenVINO {ov.__version__} has no CPU device (devices: {devices})")
        return Availability(True, f"OpenVINO {ov.__version__} CPU plugin")

    def fingerprint(self) -> dict[str, Any]:
        """OpenVINO's full version, its CPU plugin's architecture, and the CPU with its ISA flags."""
        ov = _ov()
        core = ov.Core()
        cpu = cpu_fingerprint()
        plugin = {"architecture": str(core.get_property(DEVICE, "DEVICE_ARCHITECTURE"))}
        return {"backend": NAME, "device": {"cpu": cpu, "plugin": plugin}, "version": ov.get_version()}

    def build(self, onnx: Path, spec: BuildSpec, out: Path) -> dict[str, Any]:
        """Compile ``onnx`` with the fastest tuned settings and the graph's execution precision; export the blob."""
        ov = _ov()
        core = ov.Core()
        try:
            model = core.read_model(str(onnx))
        except RuntimeError as e:  # OpenVINO's exceptions are RuntimeErrors: a graph its ONNX frontend refuses
            raise PipelineError(f"OpenVINO cannot read {onnx}: {first_line(e, 200)}") from e
        settings = dict(spec.settings)
        wanted = execution_precision(spec.precision, settings.get("inference_precision", "auto"))
        options = candidates(settings, cpu_fingerprint()["cores"])
        compiled: dict[str, Any] = {}

        def compile_with(option: Mapping[str, Any]) -> Any:
            key = repr(sorted(option.items()))
            if key not in compiled:
                try:
                    compiled[key] = core.compile_model(
                        model, DEVICE, properties({**option, "inference_precision": wanted})
                    )
                except RuntimeError as e:  # OpenVINO's own exception types (every one a RuntimeError)
                    raise PipelineError(f"OpenVINO cannot compile {onnx}: {first_line(e, 200)}") from e
            return compiled[key]

        def open_call(option: dict[str, Any], batch: int) -> TimedCall:
            return bound_request(compile_with(option), spec.feed(batch), list(spec.dtypes))

        tuning = tune(options, open_call, spec.batch_sizes, spec.tune_s) if spec.tune else None
        engine = compile_with(tuning["chosen"] if tuning else options[0])
        ran = compiled_settings(engine)
        if ran["inference_precision"] != wanted:
            raise PipelineError(
                f"precision={spec.precision}: OpenVINO compiled it in {ran['inference_precision']}, not {wanted} "
                f"({self.capabilities.bf16_reason if wanted == 'bf16' else cpu_label(cpu_fingerprint())})"
            )
        stream = io.BytesIO()
        engine.export_model(stream)
        (out / ENGINE_FILE).write_bytes(stream.getvalue())
        built: dict[str, Any] = {"engine": ENGINE_FILE, "profiles": spec.profiles, "settings": ran}
        if spec.precision == "fp16" and wanted == "f32" and settings.get("inference_precision", "auto") == "auto":
            built["note"] = "OpenVINO does not compile f16 on this CPU: the float16 graph's weights run in f32"
        return built | {"tuning": tuning}

    def evaluation_runner(self, onnx: Path, spec: BuildSpec, folder: Path, name: str) -> "BaseRunner":
        """``onnx`` compiled in memory as build compiles it (its execution precision, the configured settings
        untuned): what the precision stage judges a graph with."""
        settings = dict(spec.settings)
        wanted = execution_precision(spec.precision, settings.get("inference_precision", "auto"))
        option = candidates(settings, cpu_fingerprint()["cores"])[0] | {"inference_precision": wanted}
        quiet_polygraphy()
        return OpenVinoRunner(
            lambda: _ov().Core().compile_model(str(onnx), DEVICE, properties(option)), name, graph_names(onnx)
        )

    def load_runner(self, manifest: dict[str, Any], path: Path, name: str) -> "BaseRunner":
        """A runner that imports the verified blob (no compile from ONNX) with the settings it was built with."""

        def load() -> Any:
            stream = io.BytesIO(path.read_bytes())
            return _ov().Core().import_model(stream, DEVICE, properties(manifest["settings"]))

        ports = manifest["io"]["inputs"] + manifest["io"]["outputs"]
        return OpenVinoRunner(load, name, [t["name"] for t in ports])

    def baseline_runner(self, onnx: Path, name: str) -> "BaseRunner":
        """OpenVINO's untuned defaults on ``onnx`` (on AMX CPUs that means bf16: the runner describes it)."""
        quiet_polygraphy()
        return OpenVinoRunner(lambda: _ov().Core().compile_model(str(onnx), DEVICE), name, graph_names(onnx))

    def triton(self, manifest: Mapping[str, Any]) -> TritonModel:
        """Triton's openvino backend on the engine's precision graph, with what it can carry (``openvino.triton``)."""
        return triton_model(manifest)

    def runtime_errors(self) -> tuple[type[Exception], ...]:
        """This project's and Polygraphy's one-line errors, and OpenVINO's (every one a ``RuntimeError``)."""
        return (*super().runtime_errors(), RuntimeError)

    def describe(self, runner: "BaseRunner") -> dict[str, Any]:
        """What the activated runner's compiled model runs with (precision, hint, threads, streams)."""
        return compiled_settings(runner.compiled)

    def timed_call(self, runner: "BaseRunner", feed: dict[str, np.ndarray], settings: Mapping[str, Any]) -> TimedCall:
        """A synchronous infer request with the inputs set once (shared memory, no copy per call)."""
        return bound_request(runner.compiled, feed, runner.names)
