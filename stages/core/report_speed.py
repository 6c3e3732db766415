"""The report's speed verdicts, from benchmark.json: the engine's speed-up over each baseline, the first lines that
say where a baseline ran faster (split by the baseline's own gate verdict: an accurate baseline that is faster is a
real loss; one that fails the engine's gate is not an alternative) and where the race's timing of the shipped engine
disagrees with the benchmark's."""

from typing import Any

from stages.core.metrics import ENGINE

SAME = 0.95  # the engine at this fraction of a baseline's speed or more is the same speed within the timing's noise


def speedups(bench: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Baseline -> batch -> baseline p50 latency / engine p50 latency.

    Args:
        bench: benchmark.json's content.

    Returns:
        dict: each baseline's speed-up of the engine over it, per batch size (``bs1``...).
    """
    engine = bench["runtimes"][ENGINE]
    return {
        name: {b: runs[b]["latency_ms"]["p50"] / engine[b]["latency_ms"]["p50"] for b in engine}
        for name, runs in bench["runtimes"].items()
        if name != ENGINE
    }


def serving(bench: dict[str, Any], batch: str) -> dict[str, str]:
    """The backend and precision of the engine that serves ``batch`` (``bs<N>``): one of a folder's per-range
    engines, or the one engine."""
    return bench.get("serving", {}).get(batch) or {"backend": bench["backend"], "precision": bench["precision"]}


def baseline_gate(bench: dict[str, Any], name: str, batch: str) -> dict[str, Any] | None:
    """Baseline ``name``'s gate verdict under the precision of the engine serving ``batch``; None where the
    benchmark predates the baselines' gate."""
    gates = bench.get("baselines", {}).get(name, {}).get("gate")
    if gates is None:
        return None
    if "failed" in gates:
        return {"passed": False, "failure": f"its runtime could not run the eval samples ({gates['failed']})"}
    return gates.get(serving(bench, batch)["precision"])


def slower(bench: dict[str, Any]) -> str:
    """The report's first warnings: each baseline that ran faster than the engine in the same run, with the ratio
    (below ``SAME``: within 5 % is the same speed, as the engine serving a size on the baseline's own runtime runs)
    at each batch size where it did, split into those that pass the engine's gate (a real loss) and those
    that fail it (with the gate's line: by how much); empty when none ran faster.

    Args:
        bench: benchmark.json's content.

    Returns:
        str: the warnings' Markdown (quotes, each with a blank line), or "".
    """
    p50 = {(n, b): r[b]["latency_ms"]["p50"] for n, r in bench["runtimes"].items() for b in r}
    accurate, inaccurate = [], []
    for name, per_batch in speedups(bench).items():
        for b, ratio in per_batch.items():
            if ratio >= SAME:
                continue
            engine = serving(bench, b)
            said = (
                f"{ratio:.2f}× {name} at batch {b[2:]} ({p50[ENGINE, b]:.3f} ms vs {p50[name, b]:.3f} ms p50, "
                f"{engine['backend']} {engine['precision']})"
            )
            verdict = baseline_gate(bench, name, b)
            if verdict is None or verdict["passed"]:
                accurate.append(said)
            else:
                ran = bench.get("baselines", {}).get(name, {}).get("inference_precision")
                how = f"it ran in {ran}; " if ran else ""
                inaccurate.append(f"{said}: {how}it fails the engine's gate ({verdict['failure']})")
    lines = ""
    if accurate:
        lines += "> **Slower than a baseline that passes the engine's gate:** the engine ran " + "; ".join(accurate)
        lines += ".\n\n"
    if inaccurate:
        lines += "> **Faster, but not accurate:** the engine ran " + "; ".join(inaccurate) + ".\n\n"
    return lines


def disagreement(bench: dict[str, Any]) -> str:
    """A warning where the race's p50 of the candidate that ships at a batch size and the benchmark's p50 of the
    engine there differ by more than 10 % (the race may have ranked close candidates within noise), else "".

    Args:
        bench: benchmark.json's content.

    Returns:
        str: the warning's Markdown, or "".
    """
    off = [
        f"batch {b[2:]}: race {a['race_ms']:.3f} ms ({a['candidate']}), benchmark {a['benchmark_ms']:.3f} ms "
        f"({a['ratio']:.2f}×)"
        for b, a in bench.get("race_agreement", {}).items()
        if not a["agrees"]
    ]
    if not off:
        return ""
    return "> **The race's and the benchmark's timings disagree by more than 10 %:** " + "; ".join(off) + ".\n\n"


def agreement_line(bench: dict[str, Any]) -> str:
    """The race's p50 of what shipped beside the benchmark's, per batch size, under the race table ("" without)."""
    found = bench.get("race_agreement", {})
    if not found:
        return ""
    shown = "; ".join(
        f"batch {b[2:]} {a['race_ms']:.3f} / {a['benchmark_ms']:.3f} ms ({a['ratio']:.2f}×)" for b, a in found.items()
    )
    return f"\n\nThe shipped engine's p50, race / benchmark: {shown}."
