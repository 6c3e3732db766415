"""GPU check: what the first TensorRT run needs, one line per item, before `dvc exp run -S backend=tensorrt`::

    python -m engineforge.gpu_check

Each line is PASS (with what was found), FAIL (with the fix) or SKIP (with why it does not apply). The engine items
build a tiny model through the pipeline's own code (the TensorRT plan and Polygraphy loader chain, the s8s8
quantizer, ONNX Runtime's session options), so a PASS means the pipeline's path ran, not a sample's. Exit 0 unless an
item that applies failed; on a machine without an NVIDIA GPU the GPU items are SKIPs, and the exit is 0.
"""

import ctypes
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engineforge.tiny import PROFILE, ROOT, cpu_reference, feed, s8s8_model, tiny_model, worst
from stages.backends.onnxruntime.session import open_session, session_options, tensorrt_options
from stages.backends.tensorrt import cuda
from stages.backends.tensorrt import versions as trt_versions
from stages.backends.tensorrt.backend import INSTALL
from stages.core.errors import PipelineError, first_line
from stages.core.run import compose, plain, quiet_libraries
from stages.runtime import cuda_setup, registry
from stages.select.candidate import build_spec

INT8_ATOL = 0.25  # the tiny s8s8 model on ONNX Runtime's CPU is 0.01..0.1 off float32 (tests/test_gpu_check.py)


class Skip(Exception):
    """The item does not apply here; the message says why."""


class GpuCheck:
    """The items, in order; each returns its PASS detail or raises Skip / PipelineError (FAIL)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.passed = tmp, set[str]()
        self.driver_found = cuda.driver_version()

    def needs(self, *items: str) -> None:
        missing = [i for i in items if i not in self.passed]
        if missing:
            raise Skip(f"needs {', '.join(missing)}")

    def gpu_only(self, what: str) -> None:
        if self.driver_found == "unknown":
            raise Skip(f"no NVIDIA driver here (no NVML, no /proc/driver/nvidia/version): {what} only matters on a GPU")

    def onnxruntime(self) -> str:
        if problem := cuda_setup.onnxruntime_conflict():
            raise PipelineError(problem)
        import onnxruntime as ort

        name = next(iter(cuda_setup.installed("onnxruntime-gpu", "onnxruntime")))
        return f"{name} {ort.__version__}: {', '.join(ort.get_available_providers())}"

    def driver(self) -> str:
        self.gpu_only("the driver")
        detail = f"NVIDIA driver {self.driver_found}"
        try:
            rt = cuda.cudart()
        except ImportError:
            return f"{detail} (its CUDA version is read once cuda-python is installed)"
        if problem := cuda.cuda_mismatch():
            raise PipelineError(problem)
        supported, trt_major = int(cuda.check(rt.cudaDriverGetVersion())), cuda_setup.tensorrt_cuda_major()
        built = f"; TensorRT's libraries are for CUDA {trt_major}" if trt_major else ""
        return f"{detail} supports CUDA {cuda_setup.cuda_version(supported)}{built}"

    def tensorrt(self) -> str:
        try:
            import tensorrt as trt
        except ImportError as e:
            self.gpu_only("TensorRT")
            raise PipelineError(f"tensorrt does not import ({e}): {INSTALL}") from e
        found = f"TensorRT {trt.__version__} (libraries for CUDA {cuda_setup.tensorrt_cuda_major() or 'unknown'})"
        self.gpu_only(f"{found}, installed,")
        if problem := trt_versions.too_old(trt.__version__):
            raise PipelineError(problem)
        note = trt_versions.unchecked(trt.__version__)
        return f"{found}; note: {note}" if note else found

    def cuda_python(self) -> str:
        try:
            rt = cuda.cudart()
        except ImportError as e:
            self.gpu_only("cuda-python")
            raise PipelineError(f"cuda-python does not import ({e}): {INSTALL}") from e
        dists = cuda_setup.installed("cuda-python", "cuda-bindings")  # a CUDA torch brings cuda-bindings alone
        found = ", ".join(f"{name} {version}" for name, version in dists.items()) or "cuda.bindings"
        self.gpu_only(f"{found}, installed,")
        return f"{found}, runtime CUDA {cuda_setup.cuda_version(cuda.check(rt.cudaRuntimeGetVersion()))}"

    def libcudart(self) -> str:
        found = cuda_setup.expose_cudart()
        if found is None:
            self.gpu_only("libcudart")
            raise PipelineError(
                "no libcudart.so* for Polygraphy: pip install nvidia-cuda-runtime-cu12 (CUDA 12) "
                "or nvidia-cuda-runtime (CUDA 13), or put the toolkit's lib64 on LD_LIBRARY_PATH"
            )
        try:
            ctypes.CDLL(str(found))
        except OSError as e:
            raise PipelineError(f"{found} does not load: {first_line(e)}") from e
        return f"{found} loads, where Polygraphy's CUDA wrapper looks"

    def device(self) -> str:
        self.gpu_only("a CUDA device")
        self.needs("cuda-python")
        if cuda.device_count() == 0:
            raise PipelineError(cuda.why_no_device())
        facts = cuda.device_facts()
        return f"{facts['gpu']}, compute capability {facts['compute_capability']}"

    def build(self, onnx: Path, cache_dir: Path | None = None, *overrides: str) -> tuple[Any, str | None]:
        """``onnx`` built by the TensorRT backend's own build (the pipeline's plan, loaders and timing cache, with
        ``overrides`` of backend.tensorrt) and deserialized; the timing cache file it used."""
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes

        cfg = compose("backend=tensorrt", "model=onnx", f"model.path={onnx}", *overrides, config_dir=ROOT / "conf")
        record = {"backend": "tensorrt", "settings": plain(cfg.backend.tensorrt) | {"profiles": PROFILE}}
        spec = build_spec(cfg.model, "fp32", (1, 8), record, cache_dir)  # as build makes a candidate's
        out = Path(tempfile.mkdtemp(prefix="engine-", dir=self.tmp))
        built = registry.get("tensorrt").build(onnx, spec, out)
        engine = EngineFromBytes(BytesFromPath(str(out / built["engine"])))()
        return engine, (built["timing_cache"] or {}).get("path")

    def engine(self) -> str:
        self.needs("tensorrt", "libcudart", "device")
        from polygraphy.backend.trt import TrtRunner

        onnx = tiny_model(self.tmp / "tiny.onnx")
        engine, _ = self.build(onnx)
        with TrtRunner(engine) as runner:
            got = runner.infer(feed())["y"]
        error = worst(got, cpu_reference(onnx, feed()))
        if error > 1e-2:
            raise PipelineError(f"the engine's output differs from ONNX Runtime's by {error:.3g} (atol 1e-2)")
        return f"strongly typed fp32 engine built, serialized, deserialized and run: max |diff| {error:.2e}"

    def int8(self) -> str:
        self.needs("engine")
        model = s8s8_model(tiny_model(self.tmp / "tiny.onnx"), self.tmp / "tiny.s8s8.onnx")
        self.build(model)
        return "the precision stage's s8s8 Q/DQ model parses and builds strongly typed"

    def ort_tensorrt(self) -> str:
        import onnxruntime as ort

        if "TensorrtExecutionProvider" not in ort.get_available_providers():
            raise Skip("this onnxruntime has no TensorRT provider (optional: onnxruntime-gpu, docs/gpu.md)")
        if problem := cuda_setup.provider_tensorrt_problem():  # the provider is optional: backend=tensorrt is not
            raise Skip(problem)
        self.needs("device")
        fp32 = tiny_model(self.tmp / "tiny.onnx")
        int8 = s8s8_model(fp32, self.tmp / "tiny.s8s8.onnx")  # the precision stage's form for this provider
        providers = [*cuda_setup.GPU_PROVIDERS, "CPUExecutionProvider"]
        errors = {}
        for precision, onnx, atol in (("fp32", fp32, 1e-2), ("int8", int8, INT8_ATOL)):
            options = tensorrt_options(precision, PROFILE[0], self.tmp / "ort-trt")  # as the backend's build
            session = open_session(onnx, session_options(0, "basic"), providers, options)  # refuses a CPU fallback
            errors[precision] = worst(session.run(None, feed())[0], cpu_reference(fp32, feed()))
            if errors[precision] > atol:
                raise PipelineError(
                    f"TensorRT's provider runs the {precision} model {errors[precision]:.3g} off ONNX Runtime's CPU "
                    f"float32 (atol {atol})"
                )
        diffs = ", ".join(f"{p} {e:.2e}" for p, e in errors.items())
        return (
            f"ONNX Runtime {ort.__version__} runs fp32 and s8s8 int8 on TensorrtExecutionProvider: max |diff| {diffs}"
        )

    def timing_cache(self) -> str:
        self.needs("engine")
        onnx = tiny_model(self.tmp / "tiny.onnx")
        folder = self.tmp / "timing" / "cache"  # not there yet, as on a first `dvc repro`: the plan makes it
        start = time.perf_counter()
        _, cache = self.build(onnx, folder)
        first = time.perf_counter() - start
        if cache is None or not Path(cache).is_file():
            raise PipelineError(f"the build wrote no timing cache in {folder}")
        start = time.perf_counter()
        try:  # TensorRT fails this build on any tactic it would time that the cache does not hold
            self.build(onnx, folder, "backend.tensorrt.error_on_timing_cache_miss=true")
        except PipelineError as e:
            raise PipelineError(f"TensorRT did not take every timing from {Path(cache).name}: {e}") from e
        took = time.perf_counter() - start
        return (
            f"{Path(cache).name} written ({Path(cache).stat().st_size} B); a second build with "
            f"ERROR_ON_TIMING_CACHE_MISS took every timing from it: {first:.1f} s, then {took:.1f} s"
        )


def run_checks(out: Callable[[str], None] = print) -> int:
    """Run every item, print one line each; 1 when an item that applies failed, else 0."""
    failed = False
    quiet_libraries()  # the quantizer's advice and TensorRT's log would break the one line per item
    with tempfile.TemporaryDirectory(prefix="engineforge-gpu-check-") as tmp:
        check = GpuCheck(Path(tmp))
        items = {
            "onnxruntime": check.onnxruntime, "driver": check.driver, "tensorrt": check.tensorrt,
            "cuda-python": check.cuda_python, "libcudart": check.libcudart, "device": check.device,
            "engine": check.engine, "int8": check.int8, "ort-tensorrt": check.ort_tensorrt,
            "timing-cache": check.timing_cache,
        }  # fmt: skip
        for name, item in items.items():
            try:
                status, detail = "PASS", item()
                check.passed.add(name)
            except Skip as e:
                status, detail = "SKIP", str(e)
            except Exception as e:  # a FAIL line names the cause and the fix; the next item still runs
                status, detail, failed = "FAIL", first_line(e), True
            out(f"{status} {name:<13}{detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_checks())
