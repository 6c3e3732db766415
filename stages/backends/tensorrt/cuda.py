"""CUDA through cuda-python (installed with the ``tensorrt`` extra): the GPU facts in a TensorRT fingerprint, and
trtexec's timing of one inference — CUDA events around the H2D copies, the enqueue and the D2H copies on a stream.

Nothing here runs on a machine without an NVIDIA GPU; imports are lazy so the CPU pipeline never needs cuda-python.
"""

import functools
import os
import re
from pathlib import Path
from typing import Any

from stages.core.errors import PipelineError
from stages.runtime.cuda_setup import cuda_version, driver_problem, tensorrt_cuda_major


def cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime`` since 12.6, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def check(result: tuple) -> Any:
    """Unwrap cuda-python's ``(error, *values)``; a CUDA error becomes one line naming it."""
    err, *values = result
    if int(err) != 0:
        raise PipelineError(f"CUDA error {error_name(err)}")
    return values[0] if len(values) == 1 else tuple(values) or None


def error_name(err: Any) -> str:
    """CUDA's name for an error code (cudaErrorInsufficientDriver...)."""
    name = cudart().cudaGetErrorName(err)[1]
    return name.decode() if isinstance(name, bytes) else str(name)


def driver_version() -> str:
    """The NVIDIA kernel driver's version (e.g. 550.54.15): NVML when nvidia-ml-py is installed, else /proc."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML: read the kernel module's banner
        text = Path("/proc/driver/nvidia/version").read_text() if Path("/proc/driver/nvidia/version").exists() else ""
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", text)
        return found.group(1) if found else "unknown"


def device_count() -> int:
    """How many CUDA devices this process sees (0 when cuda-python or the driver is missing)."""
    try:
        return int(check(cudart().cudaGetDeviceCount()))
    except (ImportError, PipelineError, OSError, RuntimeError):
        return 0


def cuda_mismatch() -> str | None:
    """One line when the driver is older than a CUDA major installed here (cuda-python's runtime, or the one
    TensorRT's libraries were built for), else None. Needs cuda-python."""
    rt = cudart()
    driver = int(check(rt.cudaDriverGetVersion()))
    trt_major = tensorrt_cuda_major()
    installed = (("cuda-python", int(check(rt.cudaRuntimeGetVersion()))), ("TensorRT", int(trt_major or 0) * 1000))
    for what, version in installed:
        if problem := driver_problem(driver, version):
            return f"{what}: {problem}"
    return None


def why_no_device() -> str:
    """One line saying why CUDA sees no device: cuda-python missing, no driver, a driver older than the CUDA major
    installed (cuda-python's runtime or TensorRT's libraries), or the error cudaGetDeviceCount returned."""
    try:
        rt = cudart()
    except ImportError as e:
        return f"cuda-python does not import ({e})"
    if int(check(rt.cudaDriverGetVersion())) == 0:
        return "no NVIDIA driver is loaded (cudaDriverGetVersion returns 0): needs an NVIDIA GPU and its driver"
    if problem := cuda_mismatch():
        return problem
    err = rt.cudaGetDeviceCount()[0]
    if int(err) != 0:
        return f"cudaGetDeviceCount failed with {error_name(err)}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"no CUDA device visible (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "no CUDA device"


def device_facts(index: int = 0) -> dict[str, str]:
    """GPU name and compute capability, CUDA runtime and driver-API versions, and the kernel driver version."""
    rt = cudart()
    props = check(rt.cudaGetDeviceProperties(index))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda_driver_api": cuda_version(check(rt.cudaDriverGetVersion())),
        "cuda_python_runtime": cuda_version(check(rt.cudaRuntimeGetVersion())),
        "driver": driver_version(),
        "gpu": name.rstrip("\0").strip(),
    }


@functools.cache
def compute_capability(index: int = 0) -> str | None:
    """The device's compute capability (``8.9``), or None when CUDA sees no device; read once per process."""
    return device_facts(index)["compute_capability"] if device_count() > index else None
