"""report stage: accuracy.json + benchmark.json + env.json + engine manifest -> summary.md, latency.png and the
target's row of the fleet report (fleet.json), in the target's reports folder."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stages.core.artifacts import read_json, to_json, write_text
from stages.core.markdown import table
from stages.core.metrics import ENGINE
from stages.core.report_accuracy import accuracy_gate, accuracy_table
from stages.core.report_fleet import engines, fleet_row
from stages.core.report_parts import cold_start, device_line, exported, gpu_times, race_table
from stages.core.report_plot import plot
from stages.core.report_speed import agreement_line, baseline_gate, disagreement, slower, speedups
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
            verdict = baseline_gate(bench, name, b) if name != ENGINE else {"passed": True}
            rows.append(
                [
                    name,
                    b[2:],
                    "—" if verdict is None else ("pass" if verdict["passed"] else "FAIL"),
                    f"{lat['p50']:.3f}",
                    f"{lat['p99']:.3f}",
                    f"{lat['mean']:.3f}",
                    f"{r['samples_per_s']:,.0f}",
                ]
                + [f"{ups[base][b]:.2f}×" if name == ENGINE else "" for base in ups]
            )
    latency = table(
        ["runtime", "batch", "gate", "p50 ms", "p99 ms", "mean ms", "samples/s", *(f"engine vs {b}" for b in ups)],
        rows,
    )
    return latency + gpu_times(bench)


def dispatch_lines(manifest: dict[str, Any]) -> str:
    """The Engine list's lines on a folder holding one engine per batch range (which serves which, and with
    what), or ""."""
    lines = [
        f"- batch {p['serves'][0]}-{p['serves'][1]}: {p['precision']}.{p['backend']} in `{p['folder']}/` ("
        + ", ".join(f"{k}={v}" for k, v in sorted(p["settings"].items()))
        + ")\n"
        for p in manifest.get("dispatch") or []
    ]
    return "".join(lines)


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
    chose = f"{asked} → {acc['precision']}" if asked != acc["precision"] and not manifest.get("dispatch") else asked
    how, note = exported(export)
    return f"""# {acc["model"]} · {chose} · {engines(manifest)}

{slower(bench)}{disagreement(bench)}{failed_baselines(bench)}{note}{accuracy_gate(acc)}

## Accuracy (engine vs ONNX Runtime FP32 on model.sim.onnx)

{accuracy_table(acc)}

## Latency ({bench["threads"]} threads; warm-up {bench["settings"]["warmup_ms"]} ms, \
≥ {bench["settings"]["duration_s"]} s and ≥ {bench["settings"]["min_iterations"]} iterations per row)

{latency_table(bench)}

Speed-up = baseline p50 / engine p50, measured in the same run; gate = the baseline's outputs on the eval samples \
under the engine's gate (its precision's tolerances). ![latency](latency.png)

{cold_start(bench, deploy)}## Race (build: every candidate gated on eval samples, timed, the fastest that passed shipped)

{race_table(manifest)}{agreement_line(bench)}

## Engine

- backend: {manifest["backend"]} {fp.get("version", "")} — {env["reason"]}
{dispatch_lines(manifest)}- settings: {settings}
- export: {how}
- ONNX: `{manifest["onnx"]["path"]}` sha256 `{manifest["onnx"]["sha256"][:16]}…`; engine sha256 \
`{manifest["engine_sha256"][:16]}…`
{device_line(fp)}
- versions: {versions}
"""


def main(cfg: DictConfig) -> str:
    """Write ``paths.summary``, ``paths.latency_plot`` and the target's fleet row ``paths.fleet_row``.

    Args:
        cfg: the stage's config (its ``paths``).

    Returns:
        str: the two files written, for the stage's log line.
    """
    env, acc, bench = read_json(cfg.paths.env), read_json(cfg.paths.accuracy), read_json(cfg.paths.benchmark)
    manifest, export = read_json(Path(cfg.paths.engine) / MANIFEST), read_json(cfg.paths.export_report)
    write_text(cfg.paths.summary, summary(env, acc, bench, manifest, export, cfg.paths.deploy))
    runtimes = read_json(cfg.paths.runtimes)
    colours = registry.palette(runtimes) | {name: r["colour"] for name, r in runtimes.items()}  # + race candidates
    plot(bench, manifest, cfg.paths.latency_plot, colours)
    target = next(iter(cfg.fleet.targets))
    write_text(cfg.paths.fleet_row, to_json(fleet_row(target, acc, bench, manifest, cfg.paths.summary)))
    return f"{cfg.paths.summary}, {cfg.paths.latency_plot}, {cfg.paths.fleet_row}"


if __name__ == "__main__":
    run_stage("report", main)
