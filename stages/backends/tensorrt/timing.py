"""trtexec's timing of a TensorRT engine on its GPU: pinned host buffers in the engine's tensor types, events
around the H2D copies, the enqueue (or a captured CUDA graph) and the D2H copies (``TimedInference``, the
``TimedCall`` the TensorRT backend hands the benchmark)."""

import ctypes
from collections.abc import Callable
from typing import Any

import numpy as np

from stages.backends.tensorrt.cuda import check, cudart
from stages.core.errors import PipelineError
from stages.core.timing import TimedCall

PHASES = ("h2d", "compute", "d2h")  # timed on the GPU between consecutive events


def host_dtype(trt_dtype: Any) -> np.dtype:
    """The numpy type of a TensorRT tensor type; bfloat16 (which ``tensorrt.nptype`` refuses) is ml_dtypes'."""
    import tensorrt as trt

    if trt_dtype == trt.bfloat16:
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(trt.nptype(trt_dtype))


def capture_graph(rt: Any, stream: Any, enqueue: Callable[[], bool]) -> Any | None:
    """trtexec's --useCudaGraph: capture one ``enqueue`` on ``stream`` and instantiate it. Where the enqueue fails
    under capture (an engine with operations CUDA graphs do not allow), None, as trtexec then ignores the flag and
    enqueues plainly: the half-made graph is destroyed and the CUDA error cleared.

    Args:
        rt: cuda-python's runtime module.
        stream: the stream the enqueue runs on (already run once: initialization is not captured).
        enqueue: ``execute_async_v3`` on ``stream``; False when TensorRT could not enqueue.

    Returns:
        The executable graph, or None.
    """
    check(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    if enqueue():
        graph = check(rt.cudaStreamEndCapture(stream))
        executable = check(rt.cudaGraphInstantiate(graph, 0))
        check(rt.cudaGraphDestroy(graph))  # the executable graph holds what it needs
        return executable
    err, graph = rt.cudaStreamEndCapture(stream)  # trtexec's endCaptureOnError
    if int(err) != int(rt.cudaError_t.cudaErrorStreamCaptureInvalidated):
        check((err,))
        check(rt.cudaGraphDestroy(graph))
    rt.cudaGetLastError()
    return None


class TimedInference(TimedCall):
    """One inference of a TensorRT engine per call, timed with trtexec's GPU events around the H2D copies (from
    pinned memory), the enqueue (or a captured CUDA graph) and the D2H copies: ``take()`` returns the GPU times of
    each phase in ms. The host then waits for the stream, so the caller's clock is the wall time of about twenty
    cuda-python calls plus the wait: not trtexec's host latency, which it derives from events too.

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
        self._enqueue()
        check(rt.cudaStreamSynchronize(self.stream))
        if cuda_graph:  # trtexec --useCudaGraph: capture the enqueue once, replay it
            self.graph = capture_graph(rt, self.stream, lambda: self.context.execute_async_v3(int(self.stream)))
        self.cuda_graph = ("captured" if self.graph is not None else "ignored: not capturable") if cuda_graph else "off"
        self.samples: dict[str, list[float]] = {phase: [] for phase in PHASES}

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(int(self.stream)):
            raise PipelineError("TensorRT could not enqueue the engine (execute_async_v3 returned False)")

    def notes(self) -> dict[str, Any]:
        """Whether the enqueue replays a CUDA graph: ``captured``, ``ignored: not capturable`` or ``off``."""
        return {"cuda_graph": self.cuda_graph}

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
            self._enqueue()
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
