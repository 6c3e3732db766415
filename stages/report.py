"""report stage: reports/accuracy.json + benchmark.json + env.json + engine manifest -> summary.md, latency.png."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stages.core.artifacts import atomic_path, read_json, write_text
from stages.core.markdown import table
from stages.core.metrics import ENGINE
from stages.core.report_accuracy import accuracy_gate, accuracy_table
from stages.core.report_parts import (
    cold_start,
    device_line,
    exported,
    gpu_times,
    race_table,
    slower,
    speedups,
)
from stages.core.run import run_stage
from stages.runtime import registry
from stages.runtime.manifest import MANIFEST


def failed_baselines(bench: dict[str, Any]) -> str:
    """A line naming each baseline whose runtime could not load or run the model (not timed), or "".

    Args:
        bench: benchmark.json's content.

    Returns:
        str: the line's Markdown (a quote and a blank line), or "".
    """
    failed = {n: v["failed"] for n, v in bench.get("baselines", {}).items() if "failed" in v}
    if not failed:
        return ""
    return (
        "> **Not timed:** " + "; ".join(f"{n} could not run the model ({why})" for n, why in failed.items()) + ".\n\n"
    )


def latency_table(bench: dict[str, Any]) -> str:
    """A row per runtime and batch size (latency percentiles, throughput, the engine's speed-up over each
    baseline), then a GPU engine's phase times.

    Args:
        bench: benchmark.json's content.

    Returns:
        str: the table's Markdown, with ``gpu_times``' paragraph for a GPU engine.
    """
    ups = speedups(bench)
    rows = []
    for name, runs in bench["runtimes"].items():
        for b, r in runs.items():
            lat = r["latency_ms"]
            rows.append(
                [
                    name,
                    b[2:],
                    f"{lat['p50']:.3f}",
                    f"{lat['p99']:.3f}",
                    f"{lat['mean']:.3f}",
                    f"{r['samples_per_s']:,.0f}",
                ]
                + [f"{ups[base][b]:.2f}×" if name == ENGINE else "" for base in ups]
            )
    latency = table(
        ["runtime", "batch", "p50 ms", "p99 ms", "mean ms", "samples/s", *(f"engine vs {b}" for b in ups)], rows
    )
    return latency + gpu_times(bench)


def summary(env: dict, acc: dict, bench: dict, manifest: dict, export: dict, deploy: str) -> str:
    """The one page a person reads first.

    Args:
        env: env.json's content.
        acc: accuracy.json's content.
        bench: benchmark.json's content.
        manifest: the engine's manifest.
        export: export.json's content.
        deploy: the deploy folder's path.

    Returns:
        str: summary.md's Markdown.
    """
    fp = manifest["fingerprint"]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(bench["versions"].items()))
    settings = ", ".join(f"{k}={v}" for k, v in sorted(manifest["settings"].items()))
    asked = acc.get("requested_precision", acc["precision"])
    chose = f"{asked} → {acc['precision']}" if asked != acc["precision"] else acc["precision"]
    how, note = exported(export)
    return f"""# {acc["model"]} · {chose} · {manifest["backend"]}

{slower(bench)}{failed_baselines(bench)}{note}{accuracy_gate(acc)}

## Accuracy (engine vs ONNX Runtime FP32 on model.sim.onnx)

{accuracy_table(acc)}

## Latency ({bench["threads"]} threads; warm-up {bench["settings"]["warmup_ms"]} ms, \
≥ {bench["settings"]["duration_s"]} s and ≥ {bench["settings"]["min_iterations"]} iterations per row)

{latency_table(bench)}

Speed-up = baseline p50 / engine p50, measured in the same run. ![latency](latency.png)

{cold_start(bench, deploy)}## Race (build: every candidate gated on eval samples, timed, the fastest that passed shipped)

{race_table(manifest)}

## Engine

- backend: {manifest["backend"]} {fp.get("version", "")} — {env["reason"]}
- settings: {settings}
- export: {how}
- ONNX: `{manifest["onnx"]["path"]}` sha256 `{manifest["onnx"]["sha256"][:16]}…`; engine sha256 \
`{manifest["engine_sha256"][:16]}…`
{device_line(fp)}
- versions: {versions}
"""


def plot(bench: dict[str, Any], path: str, colours: dict[str, str]) -> None:
    """p50 latency per runtime, one panel per batch size, with p99 whiskers.

    Args:
        bench: benchmark.json's content.
        path: the PNG to write.
        colours: runtime name -> colour (``registry.palette``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runtimes = list(bench["runtimes"])
    batches = list(bench["runtimes"][ENGINE])
    fig, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 3.4), squeeze=False)
    for ax, b in zip(axes[0], batches, strict=True):
        p50 = [bench["runtimes"][r][b]["latency_ms"]["p50"] for r in runtimes]
        p99 = [bench["runtimes"][r][b]["latency_ms"]["p99"] for r in runtimes]
        ax.bar(
            runtimes,
            p50,
            yerr=[[0] * len(p50), [q - p for p, q in zip(p50, p99, strict=True)]],
            color=[colours.get(r, "#999") for r in runtimes],
            capsize=4,
        )
        ax.set_title(f"batch {b[2:]}")
        ax.set_ylabel("latency ms (p50, whisker p99)")
        ax.tick_params(axis="x", labelrotation=15)
    fig.suptitle(f"{bench['model']} · {bench['precision']} · {bench['backend']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def main(cfg: DictConfig) -> str:
    """Write ``paths.summary`` and ``paths.latency_plot``.

    Args:
        cfg: the stage's config (its ``paths``).

    Returns:
        str: the two files written, for the stage's log line.
    """
    env, acc, bench = read_json(cfg.paths.env), read_json(cfg.paths.accuracy), read_json(cfg.paths.benchmark)
    manifest, export = read_json(Path(cfg.paths.engine) / MANIFEST), read_json(cfg.paths.export_report)
    write_text(cfg.paths.summary, summary(env, acc, bench, manifest, export, cfg.paths.deploy))
    plot(bench, cfg.paths.latency_plot, registry.palette(read_json(cfg.paths.runtimes)))
    return f"{cfg.paths.summary}, {cfg.paths.latency_plot}"


if __name__ == "__main__":
    run_stage("report", main)
