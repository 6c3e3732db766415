"""Tuning at build, like TensorRT's tactic selection: time a few runtime settings on seeded inputs at the
benchmark's batch sizes, within a time budget, and keep the fastest; the choice and every timing go into the
engine's manifest, so a report can say why the engine runs the way it does."""

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from stages.core.timing import TimedCall, measure

Settings = dict[str, Any]
Opener = Callable[[Settings, int], TimedCall]  # (candidate settings, batch) -> one timed inference
# Timed calls per candidate and batch size: at least LOW, and up to SAMPLES when its time slice allows (enough for a
# steady median), so a small model is timed in milliseconds and a large one within its slice.
LOW, SAMPLES = 3, 50


def score(p50: Mapping[int, float], best: Mapping[int, float]) -> float:
    """How far a candidate is from the best at each batch size: the geometric mean of its p50 / the best p50
    (1.0 = fastest everywhere), so every batch size counts alike whatever its absolute latency.

    Args:
        p50: batch size -> the candidate's median latency.
        best: batch size -> the best median latency of any candidate.

    Returns:
        float: 1.0 or more.
    """
    return float(np.exp(np.mean([np.log(p50[b] / best[b]) for b in best])))


def tune(candidates: Sequence[Settings], open_call: Opener, batch_sizes: Sequence[int], budget_s: float) -> dict:
    """Time every candidate at every batch size within ``budget_s`` seconds and choose the fastest.

    Candidates are tried in order; the first is the configured default, so when the budget runs out early the
    default still has a timing. Opening a candidate (a compile, a session) counts against the budget.

    Args:
        candidates: settings to try, the configured default first.
        open_call: makes the timed call of one candidate at one batch size.
        batch_sizes: the benchmark's batch sizes.
        budget_s: the whole tuning's time budget.

    Returns:
        dict: ``chosen`` (the winning settings), ``timings`` (per candidate: settings, p50 ms per batch, score),
        ``budget_s``, ``spent_s`` and ``skipped`` (candidates the budget left untimed).
    """
    started = time.perf_counter()
    slice_s = budget_s / (2 * max(1, len(candidates) * len(batch_sizes)))  # half the budget times, half opens
    timings: list[dict[str, Any]] = []
    skipped: list[Settings] = []
    for candidate in candidates:
        if timings and time.perf_counter() - started > budget_s:
            skipped.append(dict(candidate))
            continue
        p50 = {
            b: float(np.median(measure(open_call(candidate, b), 0.0, slice_s, LOW, SAMPLES)["latency_ms"]))
            for b in batch_sizes
        }
        timings.append({"settings": dict(candidate), "p50_ms": p50})
    best = {b: min(t["p50_ms"][b] for t in timings) for b in batch_sizes}
    for entry in timings:
        entry["score"] = round(score(entry["p50_ms"], best), 4)
        entry["p50_ms"] = {f"bs{b}": round(v, 4) for b, v in entry["p50_ms"].items()}
    chosen = min(timings, key=lambda t: t["score"])["settings"]
    spent = round(time.perf_counter() - started, 2)
    return {"chosen": chosen, "timings": timings, "budget_s": budget_s, "spent_s": spent, "skipped": skipped}


def thread_counts(cores: int) -> list[int]:
    """Thread counts worth timing on ``cores`` cores: all of them, and half (memory-bound graphs often win).

    Args:
        cores: the cores this process may use.

    Returns:
        list[int]: distinct counts, largest first.
    """
    return sorted({cores, max(1, cores // 2)}, reverse=True)


def distinct(options: Sequence[Settings]) -> list[Settings]:
    """``options`` without repeats, in order (the configured settings stay first).

    Args:
        options: candidate settings.

    Returns:
        list: each distinct candidate once.
    """
    return [o for i, o in enumerate(options) if o not in options[:i]]
