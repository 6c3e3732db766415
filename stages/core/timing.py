"""trtexec-style timing of one call: warm-up by time, then back-to-back runs for a duration and a minimum count;
latency percentiles from the individual timings, throughput from the wall time (the benchmark stage and
``engineforge.int8_variants`` measure with it); ``TimedCall`` is the one kind of call every backend hands it."""

import csv
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from stages.core.artifacts import atomic_path

CURVE = [*range(0, 90, 5), 90, 95, 99, 99.9, 100]  # percentiles written for `dvc plots`


class TimedCall:
    """One inference of an activated runner with inputs and outputs bound beforehand: what a benchmark times.

    ``take()`` returns the device time of each phase since the last take (a GPU call; None on CPUs), ``notes()``
    what it runs with, and ``close()`` frees what the call holds: every call has all three, so no caller asks which
    kind it has.
    """

    def __init__(self, run: Callable[[], object]) -> None:
        self._run = run

    def __call__(self) -> object:
        """Run one inference and return when its results are ready."""
        return self._run()

    def take(self) -> dict[str, np.ndarray] | None:
        """Device times per phase (ms) since the last take; None where the runtime has no device clock."""
        return None

    def notes(self) -> dict[str, Any]:
        """What the call runs with, for the benchmark's record (a GPU call: its CUDA graph); empty by default."""
        return {}

    def close(self) -> None:
        """Free the call's buffers (nothing on CPUs)."""


def measure(
    call: TimedCall, warmup_s: float, duration_s: float, min_iterations: int, max_iterations: int | None = None
) -> dict[str, Any]:
    """Time ``call`` trtexec-style: warm up for ``warmup_s``, then run back to back for at least ``duration_s``
    and at least ``min_iterations`` calls (and at most ``max_iterations``, which tuning uses to stop early).

    Args:
        call: one inference; its ``take()`` gives a GPU call's device times per phase since the last take.
        warmup_s: seconds of untimed calls first (at least one call).
        duration_s: the least time measured.
        min_iterations: the fewest calls measured.
        max_iterations: the most calls measured, even before ``duration_s`` is up (None: no limit).

    Returns:
        dict: ``latency_ms`` (one float per call), ``wall_s`` (the measured run's wall time) and, for a GPU call,
        ``device_ms`` (phase -> times).
    """
    end = time.perf_counter() + warmup_s
    call()
    while time.perf_counter() < end:
        call()
    call.take()  # drop the warm-up's device times (a GPU call's H2D, compute, D2H; None elsewhere)
    samples: list[int] = []
    start = time.perf_counter_ns()
    deadline = start + int(duration_s * 1e9)
    now = start
    while (now < deadline or len(samples) < min_iterations) and (
        max_iterations is None or len(samples) < max_iterations
    ):
        before = time.perf_counter_ns()
        call()
        now = time.perf_counter_ns()
        samples.append(now - before)
    run = {"latency_ms": np.asarray(samples, dtype=np.float64) / 1e6, "wall_s": (now - start) / 1e9}
    device = call.take()
    return run | ({"device_ms": device} if device is not None else {})


def distribution(values: np.ndarray) -> dict[str, float]:
    """min, mean, p50/p90/p95/p99 and max, rounded to 10 ns.

    Args:
        values: latencies in ms.

    Returns:
        dict[str, float]: statistic name -> value.
    """
    stats = {"min": values.min(), "mean": values.mean(), "max": values.max()}
    stats |= {f"p{p}": float(np.percentile(values, p)) for p in (50, 90, 95, 99)}
    return {k: round(float(v), 5) for k, v in stats.items()}


def pool(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several ``measure`` runs of one call (the benchmark's interleaved rounds) as one run.

    Args:
        parts: what ``measure`` returned, per round.

    Returns:
        dict: ``latency_ms`` concatenated, ``wall_s`` summed and, for a GPU call, ``device_ms`` per phase.
    """
    pooled = {"latency_ms": np.concatenate([p["latency_ms"] for p in parts]), "wall_s": sum(p["wall_s"] for p in parts)}
    if "device_ms" in parts[0]:
        pooled["device_ms"] = {k: np.concatenate([p["device_ms"][k] for p in parts]) for k in parts[0]["device_ms"]}
    return pooled


def summarize(run: dict[str, Any], batch: int) -> dict[str, Any]:
    """Host latency statistics (for a GPU engine also the GPU time of each phase, as trtexec reports them),
    inferences/s and samples/s of one measured run.

    Args:
        run: what ``measure`` returned (or several runs pooled).
        batch: samples per inference.

    Returns:
        dict: ``latency_ms`` (``distribution``), ``qps``, ``samples_per_s``, ``iterations`` and maybe ``gpu_ms``.
    """
    lat = run["latency_ms"]
    qps = len(lat) / run["wall_s"]
    summary = {
        "latency_ms": distribution(lat),
        "qps": round(qps, 2),
        "samples_per_s": round(qps * batch, 2),
        "iterations": len(lat),
    }
    if "device_ms" in run:  # trtexec: H2D latency, GPU compute time, D2H latency
        summary["gpu_ms"] = {phase: distribution(v) for phase, v in run["device_ms"].items() if len(v)}
    return summary


def write_curves(folder: str, curves: dict[int, dict[str, np.ndarray]]) -> None:
    """One CSV per batch size for `dvc plots`: latency (ms) at each percentile, a row per runtime and percentile
    (``percentile,runtime,latency_ms``), so the plot's template (.dvc/plots/latency.json) draws a line per runtime
    without naming any."""
    with atomic_path(folder, directory=True) as tmp:
        for batch, by_runtime in curves.items():
            with open(tmp / f"bs{batch}.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["percentile", "runtime", "latency_ms"])
                for runtime, values in by_runtime.items():
                    writer.writerows([p, runtime, round(float(np.percentile(values, p)), 5)] for p in CURVE)
