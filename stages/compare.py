"""compare stage: engine + the reference run + eval data -> paths.accuracy; non-zero exit when the gate fails.

The engine runs the eval samples the reference stage ran ONNX Runtime FP32 on (``paths.reference``, never rerun
here), and the one gate (``core.gate.gate_check``, the rule the race and the int8 fallback judge by) checks each
output against the shipped precision's ``tolerance`` (the race's winner's, for precision=auto) and the task metric
(top-1, or argmax agreement for unlabelled data) against its ``task_budget``. The engine is also run at the min and
max shapes of every profile its manifest records, beside the reference runtime. For int8 the report also carries the
precision stage's fallback rounds (nodes kept in float and the accuracy of each round).
"""

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core import precisions
from stages.core.artifacts import read_json, write_json
from stages.core.batches import batch_of, within
from stages.core.data import LABELS, data_source, is_synthetic, load_dataset
from stages.core.errors import PipelineError, summary
from stages.core.gate import gate_check, output_check, run_batches
from stages.core.profiles import random_feed
from stages.core.reference import ReferenceRun, Scales, read_reference
from stages.core.run import run_stage
from stages.core.specs import input_specs
from stages.runtime import registry
from stages.runtime.engine import Engine
from stages.runtime.manifest import read_manifest
from stages.runtime.records import host_facts

REFERENCE, CANDIDATE = "reference", "engine"
TASK = ("metric", "reference", "candidate", "delta", "budget", "passed", "agreement", "samples")


def edge_checks(
    cfg: DictConfig, engine: Engine, option: DictConfig, scales: Scales, data: dict[str, np.ndarray]
) -> dict:
    """Run the reference runtime and the engine at the min and max shapes of every profile in the engine's
    manifest.

    Shapes the eval data has (other than batch) use real samples, tiled to the batch, and the gate's elementwise
    rule (``gate.output_check``); other shapes (e.g. sequence length 1) use seeded inputs and must give finite
    outputs of the right batch. A shape a runtime cannot run is a failure naming it and the keys that set it.
    """
    reference = registry.get(registry.REFERENCE)
    errors = (*reference.runtime_errors(), *engine.backend.runtime_errors())
    dtypes = {spec.name: spec.dtype for spec in input_specs(cfg.model)}
    keys = "model.dims" + (
        f" or backend.{engine.backend.name}.profiles" if engine.manifest["capabilities"]["uses_profiles"] else ""
    )
    checked, failures = [], []
    with reference.baseline_runner(Path(cfg.paths.simplified), REFERENCE) as runner:
        for index, profile in enumerate(engine.profiles):
            for edge in ("min", "max"):
                shapes = {name: edges[edge] for name, edges in profile.items()}
                real = all(list(data[n].shape[1:]) == s[1:] for n, s in shapes.items())
                batch = next(iter(shapes.values()))[0]
                feed = batch_of(cfg.model, data, batch) if real else random_feed(shapes, dtypes)
                where = f"profile {index} {edge} shapes {shapes}"
                engine.use_profile(index)  # this profile's edges on this profile
                found: dict[str, Any] = {}
                try:
                    for who, call in ((REFERENCE, runner.infer), (CANDIDATE, engine)):
                        found[who] = call(feed)
                except errors as e:  # each runtime raises its own type for a shape the graph cannot take
                    why = f"{who} cannot run them ({summary(e, 160)}); set {keys} to shapes the model takes"
                    failures.append(f"{where}: {why}")
                    checked.append({"profile": index, "edge": edge, "shapes": shapes, "data": "failed"})
                    continue
                want, got = found[REFERENCE], found[CANDIDATE]
                bad = [n for n, v in got.items() if not np.isfinite(v).all() or v.shape[0] != batch]
                failures += [f"{where}: output {n!r} is not finite or not of batch {batch}" for n in bad]
                if real and not bad:  # the same outputs at the right shape: the gate's elementwise rule
                    failures += [f"{where}: {line}" for line in output_check(option, dict(want), got, scales)[1]]
                checked.append({"profile": index, "edge": edge, "shapes": shapes, "data": "eval" if real else "seeded"})
    engine.use_profile(None)
    return {"checked": checked, "failures": failures}


def verdict(
    engine: Engine,
    model: DictConfig,
    option: DictConfig,
    reference: dict[str, np.ndarray],
    scales: Scales,
    batches: list[dict[str, np.ndarray]],
    labels: np.ndarray | None,
) -> dict[str, Any]:
    """The gate on the engine's outputs over ``batches`` against the reference run's on the same samples.

    Args:
        engine: the shipped engine, opened.
        model: ``cfg.model``.
        option: the shipped precision's option.
        reference: output name -> the reference run's outputs on ``batches`` (``ReferenceRun.judged``).
        scales: the reference run's float32 floors and output spreads.
        batches: compare's eval feeds.
        labels: the eval labels, or None.

    Returns:
        dict: ``gate.gate_check``'s verdict.
    """
    return gate_check(model, option, reference, run_batches(engine, batches), labels, scales)


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


def gate_part(
    cfg: DictConfig, engine: Engine, span: tuple[int, int] | None, run: ReferenceRun, data: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The gate and the profile edges of one engine of the folder, with its own precision's option, on eval batches
    its batch range ``span`` holds (None: the one engine, at ``compare.batch_size``).

    Args:
        cfg: the stage's config.
        engine: the part's engine (it runs the batches it is given: no routing).
        span: the batches it serves.
        run: the reference run.
        data: the eval split.

    Returns:
        dict: ``verdict`` (``gate.gate_check``'s), ``edges`` and ``failures``, each named by the part's range.
    """
    option = precisions.options(cfg.precision)[engine.manifest["precision"]]
    size, least = within(cfg.compare.batch_size, span), span[0] if span else 1
    batches, reference = run.judged(cfg.model, data, size, cfg.compare.max_samples, least)
    found = verdict(engine, cfg.model, option, reference, run.scales, batches, data.get(LABELS))
    edges = edge_checks(cfg, engine, option, run.scales, data)
    named = (
        "" if span is None else f"batch {span[0]}-{span[1]} ({engine.manifest['precision']}.{engine.backend.name}): "
    )
    return {"verdict": found, "edges": edges, "failures": [named + f for f in found["failures"] + edges["failures"]]}


def main(cfg: DictConfig) -> str:
    """Gate the engine (each engine of a folder that holds one per batch range) against the reference run and
    write ``paths.accuracy``; the top-level verdict is the top engine's, ``parts`` each range's."""
    model = cfg.model
    manifest = read_manifest(Path(cfg.paths.engine))  # the race's winner: its backend and precision
    data = load_dataset(model, "test")
    run = read_reference(cfg.paths.reference)
    with Engine.open(cfg.paths.engine, name=CANDIDATE) as engine:
        parts = [(span, part.manifest, gate_part(cfg, part, span, run, data)) for span, part in engine.parts]
    found, edges = parts[-1][2]["verdict"], parts[-1][2]["edges"]  # the top engine serves the last range
    failures = [line for *_, part in parts for line in part["failures"]]
    task = {k: found[k] for k in TASK}
    report = {
        "passed": not failures,
        "failures": failures,
        "model": model.name,
        "precision": manifest["precision"],
        "requested_precision": cfg.precision.name,
        "backend": manifest["backend"],
        "engine_sha256": manifest["engine_sha256"],  # deploy ships only the engine this gate passed
        "outputs": found["outputs"],
        "task": task,
        "profile_edges": edges["checked"],
        "float32_floors": run.floors,
        "data": {"eval": data_source(model, "test"), "synthetic": is_synthetic(model, "test")},
        "parts": [part_record(span, shipped, part) for span, shipped, part in parts] if len(parts) > 1 else None,
    }
    if int8 := next(filter(None, (int8_record(cfg.paths.precision_report, m) for _, m, _ in parts)), None):
        report["int8"] = int8
    write_json(cfg.paths.accuracy, report)  # no time or memory here: deploy reads this file (it would always rerun)
    said = f"{task['metric']} {task['candidate']:.4f} vs reference {task['reference']:.4f} on {task['samples']}"
    if failures:
        raise PipelineError(f"accuracy gate failed: {failures[0]} ({said}; see {cfg.paths.accuracy})")
    return f"gate passed{' for every batch range' if len(parts) > 1 else ''}: {said} samples -> {cfg.paths.accuracy}"


def part_record(span: tuple[int, int] | None, manifest: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """accuracy.json's record of one engine of a folder that holds one per batch range."""
    found = part["verdict"]
    return {
        "serves": list(span or ()),
        "backend": manifest["backend"],
        "precision": manifest["precision"],
        "engine_sha256": manifest["engine_sha256"],
        "passed": not part["failures"],
        "failures": part["failures"],
        "outputs": found["outputs"],
        "task": {k: found[k] for k in TASK},
        "profile_edges": part["edges"]["checked"],
    }


if __name__ == "__main__":
    run_stage("compare", main, facts=host_facts)
