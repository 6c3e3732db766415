"""Model coverage: every model of ``examples/zoo.py`` and ``examples/families.py`` at every precision, through the
real stages -> docs/coverage.md.

    python -m engineforge.coverage                       # all models, fp32 fp16 int8 (about 15 min on 2 cores)
    python -m engineforge.coverage bert vit --no-write   # some, printed only

Artifacts and reports go to a temporary folder (``paths.build``, ``paths.reports``): for each model, env, export
and simplify once, then per precision precision, build, compare and a short benchmark at batch 1, each stage's
``main`` with exactly the params it declares, as `dvc repro` would run them. A stage that stops with a user error
is a row with its one line; a crash is a bug and propagates.
"""

import argparse
import importlib
import json
import platform
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from stages.core.artifacts import read_json, write_text
from stages.core.device import cpu_fingerprint, cpu_label
from stages.core.errors import PipelineError
from stages.core.run import compose, plain, quiet_libraries, quiet_onnxruntime, stage_config
from stages.runtime import registry

PRECISIONS = ("fp32", "fp16", "int8")
TABLE = "docs/coverage.md"
# Short enough for a 33-run table, long enough for a stable p50 at batch 1.
QUICK = (
    "benchmark.batch_sizes=[1]",
    "benchmark.duration_s=1.0",
    "benchmark.warmup_ms=100",
    "benchmark.rounds=4",
    "compare.max_samples=64",
)
BUILT_IN = ("digits", "textenc", "resnet18")  # model options that may be named too (not in the default table)
# int8 on 64 calibration samples, its fallback within 20 s per backend (a survey: `dvc exp run` gets the defaults)
BY_PRECISION = {
    "int8": ("precision.int8.calibration.samples=64", "precision.int8.fallback_search.budget_s=20"),
    "auto": (
        "precision.candidates.int8.int8.calibration.samples=64",
        "precision.candidates.int8.int8.fallback_search.budget_s=20",
    ),
}
GATE = "compare"  # the stage whose user error is a failed gate: its row goes on to the benchmark


def overrides(name: str, option: str, keys: dict[str, Any]) -> list[str]:
    """The `-S` overrides that make ``name`` (an ``examples.zoo`` entry) the model: usable with `dvc exp run`."""
    if option == name:  # a model option of conf/model/ as it is
        return [f"model={name}"]
    found = [f"model={option}", f"model.name={name}"]
    for key, value in keys.items():  # a mapping merges key by key (``++`` adds or overrides)
        items = value.items() if isinstance(value, dict) else [(None, value)]
        found += [f"{'++' if k else ''}model.{key}{'.' + k if k else ''}={hydra_value(v)}" for k, v in items]
    return found


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (strings quoted, so ``:`` and ``/`` stay literal)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if value is None:
        return "null"
    return f"'{value}'" if isinstance(value, str) else str(value)


def call_stage(module: ModuleType, cfg: Any) -> str:
    """Run a stage module's ``main`` with only the params it declares in dvc.yaml, as ``python -m`` would."""
    return module.main(stage_config(module.__name__.rsplit(".", 1)[1], plain(cfg)))


REPORTS = ("report", "fleet")  # the pipeline's pages: coverage writes its own


def stage_plan(dvc_file: str = "dvc.yaml") -> tuple[list[str], list[str]]:
    """dvc.yaml's stages in its order, in two lists: those a model runs once, and those every precision reruns
    (a stage that declares a ``precision`` param or reads what such a stage writes). ``REPORTS`` are left out:
    coverage writes its own table. dvc.yaml is the one place that knows the DAG.

    Args:
        dvc_file: the pipeline file.

    Returns:
        tuple: (once, per precision), each in dvc.yaml's order.
    """
    import yaml

    stages = yaml.safe_load(Path(dvc_file).read_text(encoding="utf-8"))["stages"]
    per: list[str] = []
    written: set[str] = set()  # what the per-precision stages so far write
    for name, definition in stages.items():
        stage = definition.get("do", definition)  # a stage run once per fleet target: its foreach body
        params = [p for p in stage.get("params", []) if isinstance(p, str)]
        if any(p.split(".")[0] == "precision" for p in params) or set(stage.get("deps", [])) & written:
            per.append(name)
            for out in [*stage.get("outs", []), *stage.get("metrics", [])]:
                written.add(out if isinstance(out, str) else next(iter(out)))
    once = [name for name in stages if name not in per]
    return [name for name in once if name not in REPORTS], [name for name in per if name not in REPORTS]


def run_model(
    name: str,
    option: str,
    keys: dict[str, Any],
    precisions: tuple[str, ...],
    out: Path,
    extra: tuple[str, ...] = (),
    by_precision: dict[str, tuple[str, ...]] | None = None,
) -> list[dict[str, Any]]:
    """One row per precision: gate result, task delta, engine vs ONNX Runtime fp32 at batch 1, or the error.
    Every artifact and report goes below ``out`` (``paths.build``, ``paths.reports``); ``extra`` overrides every
    precision's config, ``by_precision`` one precision's (its own keys: fp32 has no ``precision.int8``)."""
    once, per = stage_plan()
    module = {stage: importlib.import_module(f"stages.{stage}") for stage in [*once, *per]}
    base = [*overrides(name, option, keys), f"paths.build={out}/build", f"paths.reports={out}/reports", *QUICK]

    def at(chosen: str) -> Any:
        own = (*BY_PRECISION.get(chosen, ()), *(by_precision or {}).get(chosen, ()))
        return compose(*base, f"precision={chosen}", *own, *extra)

    try:
        cfg = at(precisions[0])
        for stage in once:
            call_stage(module[stage], cfg)
    except PipelineError as e:
        return [{"model": name, "precision": p, "result": f"stopped: {e}"} for p in precisions]
    rows = []
    for chosen in precisions:
        cfg = at(chosen)
        row = {"model": name, "precision": chosen}
        try:
            for stage in per:  # env too: auto may choose another backend for another precision
                try:
                    call_stage(module[stage], cfg)
                except PipelineError as e:
                    if stage != GATE:
                        raise
                    row["result"] = f"gate failed: {e}"  # a failed gate still wrote accuracy.json
                if stage == "build":  # the race's winner (and, for precision=auto, its precision)
                    manifest = read_json(Path(cfg.paths.engine) / "manifest.json")
                    row["backend"] = manifest["backend"]
                    if chosen == "auto":
                        row["precision"] = f"auto → {manifest['precision']}"
            accuracy = read_json(cfg.paths.accuracy)
        except PipelineError as e:
            rows.append(row | {"result": f"stopped: {e}"})
            continue
        speed = read_json(cfg.paths.benchmark)["runtimes"]
        every = {runtime: {bs: s["latency_ms"]["p50"] for bs, s in stats.items()} for runtime, stats in speed.items()}
        p50 = {runtime: next(iter(by_batch.values())) for runtime, by_batch in every.items()}  # the first batch
        rows.append(
            {"result": "pass"}
            | row
            | {
                "metric": accuracy["task"]["metric"],
                "delta_pt": 100 * accuracy["task"]["delta"],
                "engine_ms": p50["engine"],
                "speedup": {b: p50[b] / p50["engine"] for b in p50 if b != "engine"},
                "p50_ms": every,
            }
        )
    return rows


def short(result: str) -> str:
    """A gate failure without its pointer to the (temporary) accuracy.json."""
    return re.sub(r"^gate failed: accuracy gate failed: (.*?) \(.*$", r"gate failed: \1", result)


BASELINES = sorted(registry.runtimes()[1:])  # every baseline a benchmark can measure (eager PyTorch, each backend's)


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of ``rows``: the engine's p50 at batch 1 and its speed-up over each baseline."""
    lines = [
        "| model | precision | backend | gate | task metric drop (pt) | engine p50 bs1 (ms) | "
        + " | ".join(f"vs {b}" for b in BASELINES)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(BASELINES),
    ]
    for r in rows:
        r = r | {"result": short(r["result"])}
        if "metric" not in r:
            lines.append(
                f"| {r['model']} | {r['precision']} | {r.get('backend', '')} | {r['result']} | | |"
                + " |" * len(BASELINES)
            )
            continue
        ratios = " | ".join(f"{r['speedup'][b]:.2f}×" if b in r["speedup"] else "" for b in BASELINES)
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['backend']} | {r['result']} | {r['delta_pt']:.2f} ({r['metric']}) | "
            f"{r['engine_ms']:.3f} | {ratios} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the corpus and write (or print) the table."""
    from examples import families, zoo

    corpus = (
        zoo.models()
        | families.models()
        | {p.stem: (p.stem, {}) for p in Path("conf/model").glob("*.yaml") if p.stem in BUILT_IN}
    )
    parser = argparse.ArgumentParser(prog="python -m engineforge.coverage", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"models (default: the corpus; any of {', '.join(corpus)})")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=(*PRECISIONS, "bf16", "auto"))
    parser.add_argument("--no-write", action="store_true", help=f"print the table, do not write {TABLE}")
    parser.add_argument("-S", "--set", action="append", default=[], help="a config override for every run")
    parser.add_argument("--json", action="store_true", help="also print every row as JSON (p50 per batch size)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in corpus]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}: choose from {', '.join(corpus)}")
    quiet_libraries()
    quiet_onnxruntime()
    root = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="engineforge-coverage-") as tmp:
        chosen = args.names or [n for n in corpus if n not in BUILT_IN]
        rows = [r for n in chosen for r in run_model(n, *corpus[n], tuple(args.precisions), Path(tmp), tuple(args.set))]
    cpu = cpu_fingerprint()
    text = table(rows)
    head = f"Measured on {cpu_label(cpu)}, {cpu['cores']} cores, Python {platform.python_version()}"
    print(f"{head}\n\n{text}")
    if args.json:
        print(json.dumps(rows, indent=1))
    if not args.no_write:
        page = (root / TABLE).read_text(encoding="utf-8") if (root / TABLE).is_file() else ""
        start, end = "<!-- coverage:start -->", "<!-- coverage:end -->"
        if start in page and end in page:
            page = page[: page.index(start) + len(start)] + f"\n{head}.\n\n{text}" + page[page.index(end) :]
            write_text(root / TABLE, page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
