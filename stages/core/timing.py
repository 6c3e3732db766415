"""trtexec-style timing of one call: warm-up by time, then back-to-back runs for a duration and a minimum count;
latency percentiles from the individual timings, throughput from the wall time (the benchmark stage and
``engineforge.int8_variants`` measure with it)."""

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def measure(call: Callable[[], object], warmup_s: float, duration_s: float, min_iterations: int) -> dict[str, Any]:
    """Time ``call`` trtexec-style: warm up for ``warmup_s``, then run back to back for at least ``duration_s``
    and at least ``min_iterations`` calls.

    Args:
        call: one inference; a GPU call may also have ``take()`` (device times per phase since the last take).
        warmup_s: seconds of untimed calls first (at least one call).
        duration_s: the least time measured.
        min_iterations: the fewest calls measured.

    Returns:
        dict: ``latency_ms`` (one float per call), ``wall_s`` (the measured run's wall time) and, for a GPU call,
        ``device_ms`` (phase -> times).
    """
    end = time.perf_counter() + warmup_s
    call()
    while time.perf_counter() < end:
        call()
    take = getattr(call, "take", None)  # GPU backends: device times per phase (H2D, compute, D2H)
    if take:
        take()  # drop the warm-up's
    samples: list[int] = []
    start = time.perf_counter_ns()
    deadline = start + int(duration_s * 1e9)
    now = start
    while now < deadline or len(samples) < min_iterations:
        before = time.perf_counter_ns()
        call()
        now = time.perf_counter_ns()
        samples.append(now - before)
    run = {"latency_ms": np.asarray(samples, dtype=np.float64) / 1e6, "wall_s": (now - start) / 1e9}
    return run | ({"device_ms": take()} if take else {})


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
