"""What the benchmark records about the engine beside its timings: the cold start an application waits through, the
precisions its engines ship (one per batch range's engine), and whether the race's timing of the shipped engine
agrees with the benchmark's."""

import time
from typing import Any

import numpy as np

from stages.core.metrics import ENGINE
from stages.runtime import registry
from stages.runtime.engine import Engine

AGREE = 0.10  # the race's and the benchmark's p50 of the shipped engine differ by more than this: the report says so


def cold_start(folder: str, manifest: dict[str, Any], feed: dict[str, np.ndarray]) -> dict[str, Any]:
    """What an application waits for before its first answer, as benchmark_app reports it ("compile model took",
    "first inference took"): the build (once, from the manifest: a restore from the cache skips it), then
    ``Engine.open`` (hash check, load with the certified settings) and the first inference, in milliseconds.

    Args:
        folder: the engine folder.
        manifest: its manifest.
        feed: the first batch size's inputs.

    Returns:
        dict: ``build_s``, ``open_ms``, ``first_inference_ms`` and the ``batch`` of that first inference.
    """
    registry.get(manifest["backend"]).availability()  # the runtime imported beforehand: an application's start
    started = time.perf_counter()
    with Engine.open(folder) as engine:
        opened = time.perf_counter()
        engine(feed)
        answered = time.perf_counter()
    return {
        "build_s": manifest.get("build_s"),
        "open_ms": round(1e3 * (opened - started), 2),
        "first_inference_ms": round(1e3 * (answered - opened), 2),
        "batch": len(next(iter(feed.values()))),
    }


def shipped_precisions(manifest: dict[str, Any]) -> list[str]:
    """The precision of each engine the folder holds, in batch-range order (one for a single engine).

    Args:
        manifest: the top manifest.

    Returns:
        list[str]: distinct precisions.
    """
    return list(dict.fromkeys(p["precision"] for p in manifest.get("dispatch") or [manifest]))


def race_agreement(manifest: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """At each batch size, the race's p50 of the candidate that ships there beside the benchmark's p50 of the engine.

    Args:
        manifest: the top manifest (its race's record).
        results: the benchmark's runtime -> ``bs<N>`` -> statistics.

    Returns:
        dict: ``bs<N>`` -> ``candidate``, ``race_ms``, ``benchmark_ms``, ``ratio`` (benchmark / race) and ``agrees``
        (within ``AGREE``); empty where nothing raced.
    """
    found: dict[str, dict[str, Any]] = {}
    for key, stats in results[ENGINE].items():
        batch = int(key[2:])
        shipped = [
            e
            for e in manifest.get("race") or []
            if e["result"] == "shipped" and key in e.get("p50_ms", {}) and e["serves"][0] <= batch <= e["serves"][1]
        ]
        if shipped:
            race_ms, bench_ms = shipped[0]["p50_ms"][key], stats["latency_ms"]["p50"]
            ratio = bench_ms / race_ms
            found[key] = {
                "candidate": shipped[0]["candidate"],
                "race_ms": race_ms,
                "benchmark_ms": bench_ms,
                "ratio": round(ratio, 3),
                "agrees": abs(ratio - 1.0) <= AGREE,
            }
    return found


def serving(manifest: dict[str, Any], batches: list[int]) -> dict[str, dict[str, str]]:
    """``bs<N>`` -> the backend and precision of the engine that serves batch N (a folder's per-range engines).

    Args:
        manifest: the top manifest.
        batches: the benchmark's batch sizes.

    Returns:
        dict: per batch size, ``backend`` and ``precision``.
    """
    parts = manifest.get("dispatch") or [manifest | {"serves": [1, max(batches)]}]
    return {
        f"bs{b}": {"backend": p["backend"], "precision": p["precision"]}
        for b in batches
        for p in parts
        if p["serves"][0] <= b <= p["serves"][1]
    }
