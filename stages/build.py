"""build stage: paths.precise/ (one graph per candidate) + env.json -> build/<model>/engine/ (engine + manifest.json).

One candidate (``backend=<name>``, one precision): its backend builds it. Several (``backend=auto`` on a machine
with more than one runtime, ``precision=auto``): the race (stages/select/race.py) builds each, gates each on an
eval sample, times each at the benchmark's batch sizes and ships the fastest that passes; the manifest records the
race. A backend's settings come from env.json (its own section, written by the env stage), not from the ``backend``
config group, so a key of a backend that is not a candidate rebuilds nothing. The manifest records the engine's
full key: ONNX sha256, precision, backend settings, backend version and the machine fingerprint; every later load
checks it (stages/runtime/manifest.py).
"""

import shutil
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stages.core import precisions
from stages.core.artifacts import atomic_path, read_json, write_json
from stages.core.batches import served_batches
from stages.core.data import LABELS, load_dataset
from stages.core.errors import PipelineError
from stages.core.gate import tolerances
from stages.core.graph_files import files_bytes
from stages.core.reference import read_reference
from stages.core.run import run_stage
from stages.runtime import registry
from stages.runtime.manifest import MANIFEST
from stages.runtime.records import read_candidates
from stages.select.candidate import Candidate, build_spec
from stages.select.isolated import CandidateFailed, build_and_run
from stages.select.race import Entry, gate
from stages.select.race import run as race


def entries(cfg: DictConfig, env: dict[str, Any]) -> list[Entry]:
    """Each candidate graph precision.json lists, with its backend's env.json record and its build spec (the
    tuning budget split between the candidates)."""
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
        tune_s = (record.get("tuning") or {"tune_s": 0.0})["tune_s"] / len(graphs)
        spec = build_spec(
            cfg.model,
            chosen.precision,
            served_batches(cfg.model, cfg.benchmark.batch_sizes),
            record,
            Path(cfg.paths.timing_cache),
            tune_s,
        )
        result.append((chosen, Path(cfg.paths.precise) / graph["file"], spec))
    return result


def judge(cfg: DictConfig, samples: int) -> dict[str, Any]:
    """What the race's gates need: each precision's option, the model, the eval sample, and the reference stage's
    outputs on it with float32's floors (``core.reference``: the run compare reads too, never repeated here)."""
    data = load_dataset(cfg.model, "test")
    run = read_reference(cfg.paths.reference)
    batches, reference = run.judged(cfg.model, data, cfg.compare.batch_size, samples)
    labels = data.get(LABELS)
    options = precisions.options(cfg.precision)
    for option in options.values():  # a tolerance naming no output is the user's one line, here, not a candidate's
        tolerances(option, list(run.outputs))
    return {
        "options": options,
        "model": cfg.model,
        "reference": reference,
        "batches": batches,
        "labels": labels,
        "scales": run.scales,
    }


def race_settings(race: DictConfig) -> dict[str, Any]:
    """``backend.race`` checked: a whole number of samples (0: all) and of rounds (at least 1), a positive duration."""
    samples, rounds, duration = race.samples, race.rounds, race.duration_s
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise PipelineError(f"backend.race.samples: {samples!r} must be a whole number of eval samples (0 = all)")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise PipelineError(f"backend.race.rounds: {rounds!r} must be a whole number of at least 1")
    if isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0:
        raise PipelineError(f"backend.race.duration_s: {duration!r} must be a positive number of seconds")
    return {"samples": samples, "rounds": rounds, "duration_s": float(duration)}


def ship(cfg: DictConfig, candidates: list[Entry], target: str | None, folder: Path) -> tuple[Path, dict[str, Any]]:
    """Build into ``folder`` the engine that ships: one candidate built and gated alone, several raced. A candidate
    that fails the gate never ships: build stops in one line.

    Args:
        cfg: the stage's config.
        candidates: the candidate graphs with their build specs.
        target: the deployment-target label.
        folder: an empty folder.

    Returns:
        tuple: the shipped engine's folder and its manifest (with the race's record, where there was one).
    """
    settings = race_settings(cfg.backend.race) | {"benchmark": cfg.benchmark}
    judged = judge(cfg, int(settings["samples"]))
    if len(candidates) > 1:
        winner, record = race(candidates, judged, settings, cfg.model.name, target, folder)
        manifest = read_json(winner / MANIFEST) | {"race": record}
        write_json(winner / MANIFEST, manifest)
        return winner, manifest
    chosen, graph, spec = candidates[0]
    out = folder / chosen.key
    try:  # in a process of its own, as a raced candidate: a native crash is a line, not a silent exit
        got = build_and_run(chosen, graph, spec, (cfg.model.name, target, out), judged["batches"])
    except CandidateFailed as e:  # its refusal is the user's one line
        raise PipelineError(str(e)) from e
    manifest = read_json(out / MANIFEST)
    verdict = gate(judged, chosen.precision, got)
    if not verdict["passed"]:
        raise PipelineError(
            f"the {chosen.key} engine failed its accuracy gate on {verdict['samples']} eval samples "
            f"({verdict['failure']}): nothing ships"
        )
    return out, manifest


def main(cfg: DictConfig) -> str:
    """Build the engine for the candidate graphs in ``paths.precise``; race them when there are several."""
    env, target = read_json(cfg.paths.env), cfg.target
    if target is not None and (not isinstance(target, str) or not target.strip()):
        raise PipelineError(f"target: {target!r} is not a label; use a non-empty string (e.g. target=edge-a)")
    candidates = entries(cfg, env)
    out = Path(cfg.paths.engine)
    with tempfile.TemporaryDirectory(prefix="engineforge-build-") as tmp:
        winner, manifest = ship(cfg, candidates, target, Path(tmp))
        with atomic_path(out, directory=True) as final:
            shutil.copytree(winner, final, dirs_exist_ok=True)
    size = files_bytes(out / manifest["engine"])  # with its sidecar
    passed = sum(1 for e in manifest["race"] or [] if e.get("gate", {}).get("passed"))
    raced = (
        f", the fastest of {passed} candidates that passed their gates (of {len(candidates)})"
        if manifest["race"]
        else ""
    )
    shown = f"{size / 2**20:.0f} MiB" if size >= 2**24 else f"{size / 1024:.0f} KiB"
    return f"{manifest['backend']} {manifest['precision']} engine ({shown}{raced}) -> {out}/"


if __name__ == "__main__":
    run_stage("build", main)
