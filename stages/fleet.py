"""fleet stage: every target's row (its ``paths.fleet_row``, written by its report stage) ->
reports/fleet.md, the one page over the fleet: model x precision x target with the gate, the shipped engine, p50 at
each batch size, the speed-up over each baseline, build time and engine size, each target's summary linked.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stages.core.artifacts import read_json, write_text
from stages.core.errors import PipelineError
from stages.core.fleet import retarget
from stages.core.markdown import table
from stages.core.run import plain, run_stage


def cells(row: Mapping[str, Any], batches: list[str], baselines: list[str], link_from: Path) -> list[str]:
    """One table row: what a target ships and how it runs.

    Args:
        row: a target's fleet.json.
        batches: the batch sizes (``bs1``...) the columns show.
        baselines: the baselines the speed-up columns show.
        link_from: the fleet report's folder (the summary link is relative to it).

    Returns:
        list[str]: the row's cells.
    """
    p50 = [f"{row['p50_ms'][b]:.3f}" if b in row["p50_ms"] else "—" for b in batches]
    ups = [
        "could not run"
        if name in row.get("could_not_run", {})
        else " / ".join(
            f"{row['speedups'][name][b]:.2f}×" if b in row["speedups"].get(name, {}) else "—" for b in batches
        )
        for name in baselines
    ]
    size = f"{row['engine_bytes'] / 2**20:.1f} MiB" if row.get("engine_bytes") else "—"
    built = f"{row['build_s']:.1f}" if isinstance(row.get("build_s"), int | float) else "—"
    link = Path(row["summary"]).relative_to(link_from).as_posix() if row.get("summary") else ""
    return [
        f"[{row['target']}]({link})",
        row["machine"],
        row["model"],
        row["requested"],
        "pass" if row["gate"] else "FAIL",
        row["engine"],
        *p50,
        *ups,
        built,
        size,
    ]


def fleet_page(title: str, rows: list[Mapping[str, Any]], missing: list[str], link_from: Path) -> str:
    """The fleet report's Markdown.

    Args:
        title: ``<model> · <precision>``.
        rows: each built target's fleet.json.
        missing: the targets with no row yet (their stages have not run).
        link_from: the report's folder.

    Returns:
        str: the page.
    """
    batches = sorted({b for r in rows for b in r["p50_ms"]}, key=lambda b: int(b[2:]))
    baselines = sorted({n for r in rows for n in [*r["speedups"], *r.get("could_not_run", {})]})
    header = ["target", "machine", "model", "precision", "gate", "engine"]
    header += [f"p50 ms {b}" for b in batches] + [f"vs {n} ({' / '.join(batches)})" for n in baselines]
    body = table([*header, "build s (race)", "engine size"], [cells(r, batches, baselines, link_from) for r in rows])
    absent = f"\nNot built yet: {', '.join(missing)} (run their stages on their runners; docs/fleet.md).\n"
    return (
        f"# Fleet · {title}\n\nOne engine per target, each built, gated and timed on a machine of its kind; "
        f"speed-up = baseline p50 / engine p50 on that machine; the engine column names each batch range's engine.\n\n{body}\n{absent if missing else ''}"
    )


def main(cfg: DictConfig) -> str:
    """Write ``paths.fleet_report`` from every target's row (``paths.fleet_row``, each target's own).

    Args:
        cfg: the stage's params (``fleet``, ``model.name``, ``precision.name``, its paths).

    Returns:
        str: how many targets have a row, for the stage's log line.
    """
    tree, rows, missing = plain(cfg), [], []
    for name in cfg.fleet.targets:
        path = Path(retarget(tree, name)["paths"]["fleet_row"])
        row = read_json(path) if path.is_file() else {}
        if (row.get("model"), row.get("requested")) == (cfg.model.name, cfg.precision.name):
            rows.append(row)
        else:  # never built, or built for another model or precision: not this page's
            missing.append(str(name))
    if not rows:
        raise PipelineError(
            f"no target of fleet.targets has a row ({cfg.paths.fleet_row} for the default): run `dvc repro`"
        )
    out = Path(cfg.paths.fleet_report)
    write_text(out, fleet_page(f"{cfg.model.name} · {cfg.precision.name}", rows, missing, out.parent))
    return f"{len(rows)} of {len(cfg.fleet.targets)} targets -> {out}"


if __name__ == "__main__":
    run_stage("fleet", main)
