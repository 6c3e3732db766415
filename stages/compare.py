"""compare stage: engine + model.sim.onnx + eval data -> reports/accuracy.json; non-zero exit when the gate fails.

Polygraphy's Comparator runs the reference (ONNX Runtime FP32 on model.sim.onnx) and the engine's runner on real
eval samples; SimpleCompareFunc checks each output against the shipped precision's ``tolerance`` (the race's
winner's, for precision=auto); the task metric (top-1, or argmax agreement for unlabelled data) must not drop by
more than its ``task_budget``. The engine is also
run at the min and max shapes of every profile its manifest records. For int8 the report
also carries the precision stage's fallback rounds (nodes kept in float and the accuracy of each round).
"""

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.backends import registry
from stages.backends.base import Backend
from stages.backends.engine import Engine
from stages.backends.engine_runner import EngineRunner
from stages.backends.manifest import MANIFEST
from stages.core import precisions
from stages.core.artifacts import read_json, write_json
from stages.core.batches import batch_of, feeds
from stages.core.data import LABELS, data_source, is_synthetic, load_dataset
from stages.core.errors import PipelineError, summary
from stages.core.floor import softmax_floors
from stages.core.metrics import task_metric, tolerances
from stages.core.profiles import random_feed
from stages.core.run import run_stage
from stages.core.specs import input_specs, output_names, task_output

REFERENCE, CANDIDATE = "reference", "engine"


def output_stats(per_iteration: list[dict[str, Any]], atol: dict, rtol: dict) -> dict[str, dict[str, Any]]:
    """Fold Polygraphy's per-iteration OutputCompareResults into one record per output."""
    stats = {}
    for name in per_iteration[0]:
        results = [iteration[name] for iteration in per_iteration]
        stats[name] = {
            "max_abs": float(max(r.max_absdiff for r in results)),
            "max_rel": float(max(r.max_reldiff for r in results)),
            "mean_abs": float(np.mean([r.mean_absdiff for r in results])),
            "atol": atol.get(name, atol[""]),
            "rtol": rtol.get(name, rtol[""]),
            "passed": all(bool(r) for r in results),
        }
    return stats


def edge_checks(
    cfg: DictConfig, backend: Backend, runners: list, data: dict[str, np.ndarray], compare_func: Any
) -> dict:
    """Run reference and engine at the min and max shapes of every profile in the engine's manifest.

    Shapes the eval data has (other than batch) use real samples, tiled to the batch, and the usual tolerances;
    other shapes (e.g. sequence length 1) use seeded inputs and must give finite outputs of the right batch. A
    shape a runner cannot run is a failure naming it and the keys that set it.
    """
    from polygraphy.comparator import IterationResult
    from polygraphy.logger import G_LOGGER

    profiles = read_json(Path(cfg.paths.engine) / MANIFEST).get("profiles", [])
    dtypes = {spec.name: spec.dtype for spec in input_specs(cfg.model)}
    checked, failures = [], []
    keys = "model.dims" + (f" or backend.{backend.name}.profiles" if backend.capabilities.uses_profiles else "")
    with ExitStack() as active:  # each runner (an engine load for TensorRT) is activated once for every edge
        for runner in runners:
            active.enter_context(runner)
        for index, profile in enumerate(profiles):
            for edge in ("min", "max"):
                shapes = {name: edges[edge] for name, edges in profile.items()}
                real = all(list(data[n].shape[1:]) == s[1:] for n, s in shapes.items())
                batch = next(iter(shapes.values()))[0]
                feed = batch_of(cfg.model, data, batch) if real else random_feed(shapes, dtypes)
                outputs = {}
                runners[1].engine.use_profile(index)  # this profile's edges on this profile
                where = f"profile {index} {edge} shapes {shapes}"
                try:
                    for runner in runners:
                        outputs[runner.name] = IterationResult(runner.infer(feed), runner_name=runner.name)
                except Exception as e:  # each runtime raises its own type for a shape the graph cannot take
                    failures.append(
                        f"{where}: {runner.name} cannot run them ({summary(e, 160)}); set {keys} to "
                        "shapes the model takes"
                    )
                    checked.append({"profile": index, "edge": edge, "shapes": shapes, "data": "failed"})
                    continue
                for name, value in outputs[CANDIDATE].items():
                    if not np.isfinite(value).all() or value.shape[0] != batch:
                        failures.append(f"{where}: output {name!r} is not finite or not of batch {batch}")
                if real:
                    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
                        result = compare_func(outputs[REFERENCE], outputs[CANDIDATE])
                    failures += [f"{where}: output {n!r} exceeds tolerance" for n, r in result.items() if not bool(r)]
                checked.append({"profile": index, "edge": edge, "shapes": shapes, "data": "eval" if real else "seeded"})
    runners[1].engine.use_profile(None)
    return {"checked": checked, "failures": failures}


def gate_failures(stats: dict[str, dict[str, Any]], edges: list[str], task: dict[str, Any]) -> list[str]:
    """One line per output beyond its tolerances, the profile edges' failures, and one line where the task metric
    dropped beyond its budget, in that order.

    Args:
        stats: ``output_stats``.
        edges: ``edge_checks``'s failures.
        task: ``metrics.task_metric``.

    Returns:
        list[str]: the failures.
    """
    failures = [
        f"output {n!r} differs by up to {s['max_abs']:.3g} (atol {s['atol']:g}, rtol {s['rtol']:g})"
        for n, s in stats.items()
        if not s["passed"]
    ]
    failures += edges
    if task["delta"] > task["budget"]:
        failures.append(
            f"{task['metric']} dropped {100 * task['delta']:.2f} pt (budget {100 * task['budget']:.2f} pt, "
            "precision.task_budget)"
        )
    return failures


def int8_record(path: str, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The precision stage's record of the shipped graph where it is int8: its encoding, the fallback's rounds (on
    the engine's runtime, same eval data) and the calibration's provenance; None for other precisions.

    Args:
        path: ``paths.precision_report``.
        manifest: the shipped engine's manifest (its backend and precision).

    Returns:
        dict | None: accuracy.json's ``int8`` record.
    """
    precision_report = read_json(path)
    shipped = (manifest["backend"], manifest["precision"])
    graph = next((g for g in precision_report["candidates"] if (g["backend"], g["precision"]) == shipped), None)
    if graph is None:  # precision.json rewritten after the build (a stage run by hand)
        raise PipelineError(f"{path} has no {shipped[1]} graph for {shipped[0]}: run `dvc repro`")
    if "fallback" not in graph:
        return None
    keys = ("enabled", "excluded", "kept", "rounds", "judged_on", "budget_s", "out_of_budget")
    drawn = precision_report["calibration"]["provenance"]
    return {
        "encoding": graph["encoding"],
        "fallback": {k: graph["fallback"].get(k) for k in keys},
        "calibration": {k: drawn[k] for k in ("samples", "asked", "data") if k in drawn},
    }


def main(cfg: DictConfig) -> str:
    """Compare the engine with the reference and write ``paths.accuracy``."""
    from polygraphy.comparator import Comparator, SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    model = cfg.model
    manifest = read_json(Path(cfg.paths.engine) / MANIFEST)  # the race's winner: its backend and precision
    backend = registry.get(manifest["backend"])
    precision = precisions.options(cfg.precision)[manifest["precision"]]
    data = load_dataset(model, "test")
    batches = feeds(model, data, cfg.compare.batch_size, limit=cfg.compare.max_samples)
    with Engine.open(cfg.paths.engine, name=CANDIDATE) as engine:
        runners = [registry.reference_runner(Path(cfg.paths.simplified), REFERENCE), EngineRunner(engine)]
        results = Comparator.run(runners, data_loader=batches)
        outputs = output_names(model, cfg.paths.simplified)
        floors = softmax_floors(Path(cfg.paths.simplified), batches)  # where float32 itself cannot do better
        atol, rtol = tolerances(precision, outputs, floors)
        compare_func = SimpleCompareFunc(atol=atol, rtol=rtol, check_error_stat="elemwise")
        edges = edge_checks(cfg, backend, runners, data, compare_func)
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # its [E] lines per output: the stats go to accuracy.json
        accuracy = Comparator.compare_accuracy(results, compare_func=compare_func)[0]
    stats = output_stats(accuracy[(REFERENCE, CANDIDATE)], atol, rtol)
    failures = [
        f"output {name!r} of {runner_name} has NaN or Inf"
        for runner_name, iterations in results
        for name in outputs
        if not all(np.isfinite(it[name]).all() for it in iterations)
    ]
    joined = {r: np.concatenate([it[task_output(model, cfg.paths.simplified)] for it in its]) for r, its in results}
    labels = data.get(LABELS)
    labels = None if labels is None else labels[: len(joined[REFERENCE])]
    task = task_metric(model, joined[REFERENCE], joined[CANDIDATE], labels, precision.task_budget)
    failures += gate_failures(stats, edges["failures"], task)
    report = {
        "passed": not failures,
        "failures": failures,
        "model": model.name,
        "precision": manifest["precision"],
        "requested_precision": cfg.precision.name,
        "backend": backend.name,
        "engine_sha256": manifest["engine_sha256"],  # deploy ships only the engine this gate passed
        "outputs": stats,
        "task": task,
        "profile_edges": edges["checked"],
        "float32_floors": floors,
        "data": {"eval": data_source(model, "test"), "synthetic": is_synthetic(model, "test")},
    }
    if int8 := int8_record(cfg.paths.precision_report, manifest):
        report["int8"] = int8
    write_json(cfg.paths.accuracy, report)
    summary = f"{task['metric']} {task['candidate']:.4f} vs reference {task['reference']:.4f} on {task['samples']}"
    if failures:
        raise PipelineError(f"accuracy gate failed: {failures[0]} ({summary}; see {cfg.paths.accuracy})")
    return f"gate passed: {summary} samples -> {cfg.paths.accuracy}"


if __name__ == "__main__":
    run_stage("compare", main)
