"""build stage: paths.precise/ (one graph per candidate) + env.json -> paths.engine/ (engine + manifest.json).

One candidate (``backend=<name>``, one precision): its backend builds it. Several (``backend=auto`` on a machine
with more than one runtime, ``precision=auto``): the race (stages/select/race.py) builds each, gates each on an
eval sample, times each at the benchmark's batch sizes and ships the fastest that passes; the manifest records the
race. A backend's settings come from env.json (its own section, written by the env stage), not from the ``backend``
config group, so a key of a backend that is not a candidate rebuilds nothing. The manifest records the engine's
full key: ONNX sha256, precision, backend settings, backend version and the machine fingerprint; every later load
checks it (stages/runtime/manifest.py).
"""

import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stages.core import precisions
from stages.core.artifacts import atomic_path, read_json
from stages.core.batches import batch_ranges, served_batches, within
from stages.core.data import LABELS, load_dataset
from stages.core.errors import PipelineError
from stages.core.gate import tolerances
from stages.core.reference import read_reference
from stages.core.run import run_stage
from stages.runtime import registry
from stages.runtime.records import host_facts, read_candidates
from stages.select.candidate import Candidate, build_spec
from stages.select.dispatch import OBJECTIVES, assemble, served_line
from stages.select.race import Entry, Heat
from stages.select.race import run as race


def entries(cfg: DictConfig, env: dict[str, Any], batches: list[int], span: tuple[int, int], share: int) -> list[Entry]:
    """Each candidate graph precision.json lists, with its backend's env.json record and its build spec for one
    heat: ``batches`` timed, the batch range ``span`` served, the tuning budget split ``share`` ways."""
    found = read_candidates(env, cfg.paths.env)
    graphs = read_json(cfg.paths.precision_report)["candidates"]
    result = []
    for graph in graphs:
        if graph["backend"] not in found:  # precision.json predates env.json (a stage run by hand)
            raise PipelineError(f"{cfg.paths.precision_report} is stale ({graph['backend']} is no longer a candidate)")
        record = found[graph["backend"]]
        chosen = Candidate(registry.get(graph["backend"]), graph["precision"], record)
        supported = chosen.capabilities.supports(chosen.precision)
        if not supported.ok:
            raise PipelineError(f"precision={chosen.precision} on {chosen.backend.name}: {supported.reason}")
        tune_s = (record.get("tuning") or {"tune_s": 0.0})["tune_s"] / (len(graphs) * share)
        spec = build_spec(cfg.model, chosen.precision, batches, record, Path(cfg.paths.timing_cache), tune_s, span)
        result.append((chosen, Path(cfg.paths.precise) / graph["file"], spec))
    return result


def judge(cfg: DictConfig, samples: int, span: tuple[int, int]) -> dict[str, Any]:
    """What the race's gates need: each precision's option, the model, the eval sample (in batches of
    ``compare.batch_size``, within the heat's batch range ``span``), and the reference stage's outputs on it with
    float32's floors (``core.reference``: the run compare reads too, never repeated here)."""
    data = load_dataset(cfg.model, "test")
    run = read_reference(cfg.paths.reference)
    batches, reference = run.judged(cfg.model, data, within(int(cfg.compare.batch_size), span), samples, span[0])
    options = precisions.options(cfg.precision)
    for option in options.values():  # a tolerance naming no output is the user's one line, here, not a candidate's
        tolerances(option, list(run.outputs))
    return {
        "options": options,
        "model": cfg.model,
        "reference": reference,
        "batches": batches,
        "labels": data.get(LABELS),
        "scales": run.scales,
    }


def heats(cfg: DictConfig, env: dict[str, Any], settings: dict[str, Any]) -> list[Heat]:
    """The races to run: ``objective=per_batch`` with several served batch sizes, one per size (its batch range,
    its builds tuned and timed there); else one over every size, chosen at the smallest (``latency``), the largest
    (``throughput``) or all of them (one served size)."""
    served = sorted(served_batches(cfg.model, cfg.benchmark.batch_sizes))
    objective = settings["objective"]
    if objective == "per_batch" and len(served) > 1:
        spans = batch_ranges(served, cfg.model.max_batch)
        return [
            Heat(span, (b,), (b,), entries(cfg, env, [b], span, len(served)), judge(cfg, settings["samples"], span))
            for b, span in zip(served, spans, strict=True)
        ]
    scored = {"latency": served[:1], "throughput": served[-1:]}.get(objective, served)
    span = (1, max(cfg.model.max_batch, served[-1]))
    found = entries(cfg, env, served, span, 1)
    return [Heat(span, tuple(served), tuple(scored), found, judge(cfg, settings["samples"], span))]


def race_settings(race: DictConfig, bench: DictConfig) -> dict[str, Any]:
    """``backend.race`` checked: a whole number of samples (0: all), of rounds (at least 1) and of iterations, a
    positive duration, a known objective; with the benchmark group's GPU timing switches."""
    for key, least in (("samples", 0), ("rounds", 1), ("min_iterations", 1), ("warmup_ms", 0)):
        value = race[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise PipelineError(f"backend.race.{key}: {value!r} must be a whole number of at least {least}")
    duration = race.duration_s
    if isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0:
        raise PipelineError(f"backend.race.duration_s: {duration!r} must be a positive number of seconds")
    if race.objective not in OBJECTIVES:
        raise PipelineError(f"backend.race.objective: {race.objective!r} is not one of {', '.join(OBJECTIVES)}")
    return {str(k): v for k, v in race.items()} | {"duration_s": float(duration), "benchmark": bench}


def main(cfg: DictConfig) -> str:
    """Build the engine for the candidate graphs in ``paths.precise``: race them, per heat (``heats``), when
    there are several; the engine folder holds each heat's winner (``dispatch.assemble``)."""
    env, target = read_json(cfg.paths.env), next(iter(cfg.fleet.targets))  # the one target this stage runs for
    settings = race_settings(cfg.backend.race, cfg.benchmark)
    races = heats(cfg, env, settings)
    out = Path(cfg.paths.engine)
    with tempfile.TemporaryDirectory(prefix="engineforge-build-") as tmp:
        winners, record = [], []
        for heat in races:
            (_, folder, _), entries_ = race(heat, settings, cfg.model.name, target, Path(tmp) / heat.name)
            winners.append((heat.span, folder))
            record += entries_
        raced = len(races[0].entries) > 1
        with atomic_path(out, directory=True) as final:
            manifest = assemble(winners, record if raced else None, final)
    return f"{served_line(manifest, out)}{race_line(record, races) if raced else ''} -> {out}/"


def race_line(record: list[dict[str, Any]], races: list[Heat]) -> str:
    """``, the fastest of N candidates that passed their gates (of M)``; with several heats, the count over all
    of them (each heat's winner is the fastest of its own)."""
    passed = sum(1 for e in record if e.get("gate", {}).get("passed"))
    total = sum(len(h.entries) for h in races)
    if len(races) == 1:
        return f", the fastest of {passed} candidates that passed their gates (of {total})"
    return (
        f", in each of {len(races)} batch ranges the fastest of the candidates that passed ({passed} of {total} builds)"
    )


if __name__ == "__main__":
    run_stage("build", main, facts=host_facts)
