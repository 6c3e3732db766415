"""The ONNX project's own test models (the ``onnx`` wheel's ``backend/test/data``: ``pytorch-converted``,
``simple``, ``pytorch-operator``), each through the pipeline as ``model=onnx`` at fp32, the shipped engine checked
against *their* expected outputs on *their* inputs -> a table in docs/coverage.md.

    python -m engineforge.conformance                     # every model (about 140; tens of minutes on 2 cores)
    python -m engineforge.conformance test_Conv2d --no-write

A model the pipeline stops on is a row with the stage's one line; a crash is a bug and propagates.
"""

import argparse
import importlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.artifacts import read_json, write_text
from stages.core.device import cpu_fingerprint, cpu_label
from stages.core.errors import PipelineError
from stages.core.run import compose, quiet_libraries, quiet_onnxruntime

SUITES = ("pytorch-converted", "simple", "pytorch-operator")
STAGES = ("env", "export", "simplify", "reference", "precision", "build", "compare")
TABLE = "docs/coverage.md"
RTOL, ATOL = 1e-3, 1e-5  # onnx's backend tests compare with rtol 1e-3; atol for float32 kernels' summation order
# The race and the tuning timed briefly: which engine ships may differ from a full run's, what it computes may not.
QUICK = (
    "backend.tune_s=0.5",
    "backend.race.duration_s=0.1",
    "backend.race.rounds=1",
    "backend.race.warmup_ms=5",
    "backend.race.min_iterations=2",
)


def cases() -> dict[str, Path]:
    """Every test model of the suites.

    Returns:
        dict: model name -> its folder (``model.onnx`` and ``test_data_set_0``), sorted by suite and name.
    """
    import onnx

    data = Path(onnx.__file__).parent / "backend/test/data"
    return {f.name: f for suite in SUITES for f in sorted((data / suite).iterdir()) if (f / "model.onnx").is_file()}


def tensors(folder: Path, kind: str) -> list[np.ndarray]:
    """The ``<kind>_<i>.pb`` tensors of a test data set, in order.

    Args:
        folder: ``test_data_set_0``.
        kind: ``input`` or ``output``.

    Returns:
        list[np.ndarray]: the arrays.
    """
    import onnx
    from onnx import numpy_helper

    found = sorted(folder.glob(f"{kind}_*.pb"), key=lambda p: int(p.stem.split("_")[-1]))
    return [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in found]


def run_case(name: str, folder: Path, out: Path) -> dict[str, Any]:
    """One model through the stages at fp32, its engine on the test's inputs: the row.

    Args:
        name: the test's name.
        folder: its folder.
        out: an empty working folder (the model copy, its data, ``paths.build``, ``paths.reports``).

    Returns:
        dict: ``model``, ``result`` (pass, or the stage and its line), ``backend``, ``max_abs`` vs expected.
    """
    import onnx

    from stages.runtime.engine import Engine

    graph = onnx.load(str(folder / "model.onnx"))
    weights = {t.name for t in graph.graph.initializer}
    names = [i.name for i in graph.graph.input if i.name not in weights]
    inputs, expected = tensors(folder / "test_data_set_0", "input"), tensors(folder / "test_data_set_0", "output")
    np.savez(out / "eval.npz", **dict(zip(names, inputs, strict=True)))
    (out / "model.onnx").write_bytes((folder / "model.onnx").read_bytes())
    sets = [f"model.path={out / 'model.onnx'}", f"model.data.eval={out / 'eval.npz'}", "model.name=conformance"]
    paths = (f"paths.build={out}/build", f"paths.reports={out}/reports")
    cfg = compose("model=onnx", *sets, *paths, "precision=fp32", *QUICK)
    row: dict[str, Any] = {"model": name, "opset": max((o.version for o in graph.opset_import), default=0)}
    for stage in STAGES:
        try:
            call_stage(importlib.import_module(f"stages.{stage}"), cfg)
        except PipelineError as e:
            return row | {"result": f"{stage}: {e}"}
    row["notes"] = notes(cfg)
    with Engine.open(Path(cfg.paths.engine)) as engine:
        got = list(engine(dict(zip(names, inputs, strict=True))).values())
        row["backend"] = engine.backend.name
    worst = max(
        float(np.max(np.abs(g.astype(np.float64) - e), initial=0.0)) for g, e in zip(got, expected, strict=True)
    )
    close = all(np.allclose(g, e, rtol=RTOL, atol=ATOL) for g, e in zip(got, expected, strict=True))
    return row | {"max_abs": worst, "result": "pass" if close else f"differs from the expected outputs by {worst:.3g}"}


def notes(cfg: Any) -> list[str]:
    """What the pipeline did to take the file: an opset upgrade, a skipped simplification, a fixed batch.

    Args:
        cfg: the run's config (its export and simplify reports).

    Returns:
        list[str]: a few words each.
    """
    export, simplify = read_json(cfg.paths.export_report), read_json(cfg.paths.simplify_report)
    found = []
    if export["check"].get("opset_upgraded_from"):
        found.append(f"opset {export['check']['opset_upgraded_from']} → {export['opset']}")
    if simplify["skipped"]:
        found.append("not simplified")
    if export["fixed_batch"] is not None:
        found.append(f"batch {export['fixed_batch']}")
    return found


def call_stage(module: Any, cfg: Any) -> str:
    """A stage's ``main`` with only the params it declares (``engineforge.coverage.call_stage``)."""
    from engineforge.coverage import call_stage as call

    return call(module, cfg)


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table: a row per model, and the count that passed.

    Args:
        rows: ``run_case``'s rows.

    Returns:
        str: Markdown.
    """
    lines = [
        "| model | opset | taken as | engine | max \\|engine − expected\\| | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        worst = f"{r['max_abs']:.2g}" if "max_abs" in r else ""
        result = r["result"].replace("|", "\\|")[:220]
        taken = ", ".join(r.get("notes", []))
        lines.append(f"| {r['model']} | {r['opset']} | {taken} | {r.get('backend', '')} | {worst} | {result} |")
    passed = sum(r["result"] == "pass" for r in rows)
    return (
        f"{passed} of {len(rows)} match their expected outputs (rtol {RTOL:g}, atol {ATOL:g}).\n\n"
        + "\n".join(lines)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the chosen cases (default: all) and write (or print) the table."""
    known = cases()
    parser = argparse.ArgumentParser(prog="python -m engineforge.conformance", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="test names (default: every one)")
    parser.add_argument("--no-write", action="store_true", help=f"print the table, do not write {TABLE}")
    args = parser.parse_args(argv)
    quiet_libraries()
    quiet_onnxruntime()
    rows = []
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown test model {unknown[0]!r} (the folders of onnx/backend/test/data/{'|'.join(SUITES)})")
    for name in args.names or list(known):
        with tempfile.TemporaryDirectory(prefix="engineforge-conformance-") as tmp:
            rows.append(run_case(name, known[name], Path(tmp)))
        print(f"{name}: {rows[-1]['result'][:160]}", file=sys.stderr, flush=True)
    cpu = cpu_fingerprint()
    text = f"Measured on {cpu_label(cpu)}, {cpu['cores']} cores: " + table(rows)
    print(text)
    page = Path(TABLE).read_text(encoding="utf-8")
    start, end = "<!-- conformance:start -->", "<!-- conformance:end -->"
    if not args.no_write and start in page and end in page:
        write_text(TABLE, page[: page.index(start) + len(start)] + f"\n{text}" + page[page.index(end) :])
    return 0


if __name__ == "__main__":
    sys.exit(main())
