"""CUDA through cuda-python (installed with the ``tensorrt`` extra): the GPU facts in a TensorRT fingerprint, and
trtexec's timing of one inference — CUDA events around the H2D copies, the enqueue and the D2H copies on a stream.

Nothing here runs on a machine without an NVIDIA GPU; imports are lazy so the CPU pipeline never needs cuda-python.
"""

import ctypes
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from stages.backends.cuda_setup import cuda_version, driver_problem, tensorrt_cuda_major
from stages.core.errors import PipelineError
from stages.core.timing import TimedCall

PHASES = ("h2d", "compute", "d2h")  # timed on the GPU between consecutive events


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


def host_dtype(trt_dtype: Any) -> np.dtype:
    """The numpy type of a TensorRT tensor type; bfloat16 (which ``tensorrt.nptype`` refuses) is ml_dtypes'."""
    import tensorrt as trt

    if trt_dtype == trt.bfloat16:
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(trt.nptype(trt_dtype))


class TimedInference(TimedCall):
    """One inference of a TensorRT engine per call, timed the way trtexec does: events around the H2D copies (from
    pinned memory), the enqueue (or a captured CUDA graph) and the D2H copies, then the host waits for the stream,
    so the caller's clock is the host latency and ``take()`` returns the GPU times of each phase in ms.

    ``no_data_transfers`` copies the inputs once and never the outputs (trtexec --noDataTransfers).
    """

    def __init__(
        self, engine: Any, feed: dict[str, np.ndarray], profile: int, cuda_graph: bool, no_data_transfers: bool
    ):
        import tensorrt as trt

        rt = cudart()
        self.rt, self.no_data_transfers, self.graph = rt, no_data_transfers, None
        self.stream = check(rt.cudaStreamCreate())
        self.events = [check(rt.cudaEventCreate()) for _ in range(4)]
        self.context = engine.create_execution_context()
        self.context.set_optimization_profile_async(profile, int(self.stream))
        self.device: list[Any] = []  # device pointers (cudaMalloc), freed by close()
        self.pinned: list[Any] = []  # pinned host pointers (cudaMallocHost)
        self.copies_in: list[tuple[Any, np.ndarray]] = []
        self.copies_out: list[tuple[Any, np.ndarray]] = []
        for name, array in feed.items():  # buffers take the engine's tensor types, whatever the feed's are
            self.context.set_input_shape(name, array.shape)
            host = self._buffer(name, array.shape, host_dtype(engine.get_tensor_dtype(name)))
            host[...] = array
            self.copies_in.append((self.device[-1], host))
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                dtype = host_dtype(engine.get_tensor_dtype(name))
                host = self._buffer(name, tuple(self.context.get_tensor_shape(name)), dtype)
                self.copies_out.append((self.device[-1], host))
        self._copy(self.copies_in, to_device=True)
        if not self.context.execute_async_v3(int(self.stream)):
            raise PipelineError("TensorRT could not enqueue the engine (execute_async_v3 returned False)")
        check(rt.cudaStreamSynchronize(self.stream))
        if cuda_graph:  # trtexec --useCudaGraph: capture the enqueue once, replay it
            check(rt.cudaStreamBeginCapture(self.stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
            self.context.execute_async_v3(int(self.stream))
            graph = check(rt.cudaStreamEndCapture(self.stream))
            self.graph = check(rt.cudaGraphInstantiate(graph, 0))
            check(rt.cudaGraphDestroy(graph))  # the executable graph holds what it needs; the captured one leaks
        self.samples: dict[str, list[float]] = {phase: [] for phase in PHASES}

    def _buffer(self, name: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        device = check(self.rt.cudaMalloc(max(nbytes, 1)))
        pinned = check(self.rt.cudaMallocHost(max(nbytes, 1)))
        self.device.append(device)
        self.pinned.append(pinned)
        self.context.set_tensor_address(name, int(device))
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(int(pinned))
        return np.frombuffer(memoryview(raw), dtype=dtype, count=nbytes // dtype.itemsize).reshape(shape)

    def _copy(self, pairs: list, to_device: bool) -> None:
        kinds = self.rt.cudaMemcpyKind
        kind = kinds.cudaMemcpyHostToDevice if to_device else kinds.cudaMemcpyDeviceToHost
        for device, host in pairs:
            dst, src = (device, host.ctypes.data) if to_device else (host.ctypes.data, device)
            check(self.rt.cudaMemcpyAsync(dst, src, host.nbytes, kind, self.stream))

    def __call__(self) -> None:
        rt, stream, events = self.rt, self.stream, self.events
        check(rt.cudaEventRecord(events[0], stream))
        if not self.no_data_transfers:
            self._copy(self.copies_in, to_device=True)
        check(rt.cudaEventRecord(events[1], stream))
        if self.graph is not None:
            check(rt.cudaGraphLaunch(self.graph, stream))
        else:
            self.context.execute_async_v3(int(stream))
        check(rt.cudaEventRecord(events[2], stream))
        if not self.no_data_transfers:
            self._copy(self.copies_out, to_device=False)
        check(rt.cudaEventRecord(events[3], stream))
        check(rt.cudaStreamSynchronize(stream))
        for phase, start, end in zip(PHASES, events, events[1:], strict=True):
            self.samples[phase].append(float(check(rt.cudaEventElapsedTime(start, end))))

    def take(self) -> dict[str, np.ndarray]:
        """The GPU times (ms) per phase since the last ``take()``, and start afresh."""
        taken = {phase: np.asarray(values, dtype=np.float64) for phase, values in self.samples.items()}
        self.samples = {phase: [] for phase in PHASES}
        return taken

    def close(self) -> None:
        """Free the buffers, events, graph and stream."""
        for ptr in self.device:
            check(self.rt.cudaFree(ptr))
        for ptr in self.pinned:
            check(self.rt.cudaFreeHost(ptr))
        for event in self.events:
            check(self.rt.cudaEventDestroy(event))
        if self.graph is not None:
            check(self.rt.cudaGraphExecDestroy(self.graph))
        check(self.rt.cudaStreamDestroy(self.stream))
