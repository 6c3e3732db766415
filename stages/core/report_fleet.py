"""A target's row of the fleet report (reports/targets/<target>/fleet.json, rendered by the fleet stage) and the
words the report and the row use for an engine folder and its machine."""

from typing import Any

from stages.core.device import cpu_class
from stages.core.metrics import ENGINE
from stages.core.report_parts import device_line
from stages.core.report_speed import speedups


def engines(manifest: dict[str, Any]) -> str:
    """The title's engine: its backend, or each batch range's where the folder holds one engine per range."""
    parts = manifest.get("dispatch")
    if not parts:
        return str(manifest["backend"])
    return ", ".join(f"{p['backend']} {p['precision']} (batch {p['serves'][0]}-{p['serves'][1]})" for p in parts)


def machine(fingerprint: dict[str, Any]) -> str:
    """The machine an engine was built for, in a few words: its CPU's class (with oneDNN's cap), or its GPU."""
    cpu = fingerprint["device"].get("cpu")
    return cpu_class(cpu) if cpu else device_line(fingerprint).removeprefix("- device: ")


def fleet_row(target: str, acc: dict, bench: dict, manifest: dict, summary_path: str) -> dict[str, Any]:
    """The target's row of the fleet report (``stages/fleet.py``): what it ships, how fast, how large.

    Args:
        target: the fleet target's name.
        acc: its accuracy.json.
        bench: its benchmark.json.
        manifest: its engine's manifest.
        summary_path: its summary page.

    Returns:
        dict: model, precision, target, machine, gate, engine, p50 per batch size, speed-ups (and the baselines
        that could not run), build s (the race's, every candidate), bytes.
    """
    engine, race = bench["runtimes"][ENGINE], manifest.get("race") or []
    return {
        "build_s": sum(e.get("build_s") or 0 for e in race) if race else manifest.get("build_s"),  # every candidate
        "could_not_run": {n: v["failed"] for n, v in bench.get("baselines", {}).items() if "failed" in v},
        "engine": engines(manifest),
        "engine_bytes": bench.get("engine_bytes"),
        "gate": bool(acc["passed"]),
        "machine": machine(manifest["fingerprint"]),
        "model": acc["model"],
        "p50_ms": {b: r["latency_ms"]["p50"] for b, r in engine.items()},
        "precision": acc["precision"],
        "requested": acc.get("requested_precision", acc["precision"]),
        "speedups": speedups(bench),
        "summary": summary_path,
        "target": target,
    }
