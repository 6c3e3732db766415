"""Precision sweep table: ``dvc exp show --json`` -> reports/precision.md and reports/precision.png.

Not a DVC stage: a command to run after a sweep, e.g.::

    dvc exp run --queue -S 'precision=fp32,fp16,int8'
    dvc queue start && dvc queue status      # until every task is Success
    python -m engineforge.sweep

Every experiment DVC knows (the workspace, its commit, queued and finished experiments) that has both metrics
files becomes a row; when the same (model, precision, backend) appears more than once the newest run wins. The
page shows, per model, each precision's accuracy, p50/p99 latency per batch size, speed-up over the FP32 engine
(from the FP32 row of the same model) and over the same run's ONNX Runtime FP32 baseline, and the engine's size.
"""

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from stages.core.artifacts import atomic_path, write_text
from stages.core.errors import PipelineError
from stages.core.markdown import table
from stages.runtime import registry

ORDER = {"fp32": 0, "fp16": 1, "int8": 2}
REFERENCE_BASELINE = registry.get(registry.REFERENCE).baseline  # ONNX Runtime fp32: the speed-up column


def experiments(show: list[dict]) -> Iterator[dict]:
    """Every record of ``dvc exp show --json`` output (baselines and their experiments) that holds data."""
    for record in show:
        if isinstance(record.get("data"), dict):
            yield record
        for exp in record.get("experiments") or []:
            yield from experiments(exp.get("revs") or [])


def rows(show: list[dict], accuracy: str, benchmark: str) -> list[dict[str, Any]]:
    """One row per (model, precision, backend), newest first wins, sorted by model then precision."""
    found: dict[tuple, dict[str, Any]] = {}
    for record in experiments(show):
        metrics = record["data"].get("metrics") or {}
        acc, bench = (metrics.get(p, {}).get("data") for p in (accuracy, benchmark))
        if not acc or not bench or acc.get("model") != bench.get("model"):
            continue
        row = {
            "name": record.get("name") or record.get("rev"),
            "timestamp": record["data"].get("timestamp") or "",
            "model": acc["model"],
            "precision": acc["precision"],
            "backend": acc["backend"],
            "passed": acc["passed"],
            "task": acc["task"],
            "runtimes": bench["runtimes"],
            "engine_bytes": bench.get("engine_bytes"),
        }
        key = (row["model"], row["precision"], row["backend"])
        if key not in found or row["timestamp"] > found[key]["timestamp"]:
            found[key] = row
    return sorted(found.values(), key=lambda r: (r["model"], ORDER.get(r["precision"], 9), r["backend"]))


def markdown(found: list[dict[str, Any]]) -> str:
    """The page: a table per model, a row per precision and batch size."""
    lines = ["# Precision sweep", "", "Made by `python -m engineforge.sweep` from `dvc exp show --json`.", ""]
    for model in sorted({r["model"] for r in found}):
        mine = [r for r in found if r["model"] == model]
        fp32 = next((r for r in mine if r["precision"] == "fp32"), None)
        body = []
        for r in mine:
            task = r["task"]
            for batch, run in r["runtimes"]["engine"].items():
                p50 = run["latency_ms"]["p50"]
                base = (fp32 or {}).get("runtimes", {}).get("engine", {}).get(batch)
                ort = r["runtimes"].get(REFERENCE_BASELINE, {}).get(batch)
                body.append(
                    [
                        r["precision"],
                        r["backend"],
                        "pass" if r["passed"] else "FAIL",
                        f"{task['metric']} {100 * task['candidate']:.2f}% ({-100 * task['delta']:+.2f} pt, "
                        f"budget {100 * task['budget']:.1f})",
                        batch[2:],
                        f"{p50:.3f}",
                        f"{run['latency_ms']['p99']:.3f}",
                        f"{base['latency_ms']['p50'] / p50:.2f}×" if base else "–",
                        f"{ort['latency_ms']['p50'] / p50:.2f}×" if ort else "–",
                        f"{r['engine_bytes'] / 1024:.0f} KiB" if r["engine_bytes"] else "–",
                        r["name"],
                    ]
                )
        header = ["precision", "backend", "gate", "accuracy vs FP32 reference", "batch", "p50 ms", "p99 ms"]
        header += ["vs fp32 engine", "vs ORT fp32 (same run)", "engine size", "experiment"]
        lines += [f"## {model}", "", table(header, body), ""]
    return "\n".join(lines)


def plot(found: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against p50 latency at the largest batch size, a point per (model, precision)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in found})
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        mine = [r for r in found if r["model"] == model]
        for i, r in enumerate(mine):
            batch = max(r["runtimes"]["engine"], key=lambda b: int(b[2:]))
            point = (r["runtimes"]["engine"][batch]["latency_ms"]["p50"], 100 * r["task"]["candidate"])
            ax.scatter(*point, s=40)
            label = f"{r['precision']} ({batch})"
            ax.annotate(label, point, xytext=(5, 5 - 12 * i), textcoords="offset points", fontsize=8)
        ax.margins(0.25)
        ax.set(title=model, xlabel="p50 latency (ms), largest batch", ylabel=f"{mine[0]['task']['metric']} (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Read the experiments, write the page and the plot (paths from params.yaml); print one line."""
    parser = argparse.ArgumentParser(prog="python -m engineforge.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="read this `dvc exp show --json` output instead of running it")
    args = parser.parse_args(argv)
    try:
        paths = OmegaConf.load("params.yaml").paths
        if args.json:
            show = json.loads(args.json.read_text(encoding="utf-8"))
        else:
            proc = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True, check=False)
            if proc.returncode:
                raise PipelineError(f"`dvc exp show --json` failed: {proc.stderr.strip().splitlines()[-1]}")
            show = json.loads(proc.stdout)
        found = rows(show, paths.accuracy, paths.benchmark)
        if not found:
            raise PipelineError("no experiment has both metrics files yet: run `dvc exp run` (or a sweep) first")
        write_text(paths.precision_table, markdown(found))
        plot(found, Path(paths.precision_plot))
    except PipelineError as e:
        print(f"engineforge sweep: error: {e}", file=sys.stderr)
        return 1
    print(f"engineforge sweep: {len(found)} runs -> {paths.precision_table}, {paths.precision_plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
