"""The race at build, TensorRT's tactic selection one level up: every candidate (a backend at a precision) is built
by its backend, gated on an eval sample against the fp32 reference with its own precision's tolerances, and timed
at the benchmark's batch sizes in interleaved rounds; the fastest that passes ships. Every candidate, its gate, its
timings and why it lost go into the shipped engine's manifest, which a restore brings back with the engine."""

import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import PipelineError, first_line
from stages.core.gate import gate_check
from stages.core.progress import Progress
from stages.core.timing import measure
from stages.core.tuning import score
from stages.runtime.base import BuildSpec
from stages.runtime.engine import Engine
from stages.select.candidate import Candidate
from stages.select.isolated import CandidateFailed, build_and_run

Entry = tuple[Candidate, Path, BuildSpec]  # a candidate, its graph and its build spec


def gate(judge: Mapping[str, Any], precision: str, got: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A candidate's accuracy on the race's eval sample, by the gate (``gate.gate_check``, compare's rule too).

    Args:
        judge: ``options`` (precision -> option), ``model`` (cfg.model), ``reference`` (the reference run's
            outputs on ``batches``), ``batches``, ``labels`` and ``scales`` (the reference run's float32 floors and output spreads).
        precision: the candidate's precision (its option's tolerances and task budget).
        got: output name -> the candidate's outputs on ``judge["batches"]`` (``gate.run_batches``).

    Returns:
        dict: ``passed``, ``failure`` (the first, one line, or None), the task metric and each output's max abs.
    """
    option = judge["options"][precision]
    checked = gate_check(judge["model"], option, judge["reference"], got, judge["labels"], judge["scales"])
    keep = ("passed", "failure", "max_abs", "metric", "reference", "candidate", "samples")
    return {k: checked[k] for k in keep}


def timings(calls: dict[str, dict[int, Any]], duration_s: float, rounds: int) -> dict[str, dict[int, float]]:
    """Candidate -> batch -> p50 ms, timed in ``rounds`` slices that alternate between the candidates (a shared
    machine's drift favours none of them).

    Args:
        calls: candidate -> batch -> its timed call.
        duration_s: measuring time per candidate and batch, over all rounds.
        rounds: the slices.

    Returns:
        dict: candidate -> batch -> median latency in ms.
    """
    samples: dict[str, dict[int, list[np.ndarray]]] = {k: {b: [] for b in c} for k, c in calls.items()}
    for index in range(rounds):
        for key, per_batch in calls.items():
            for batch, call in per_batch.items():
                run = measure(call, 0.1 if index == 0 else 0.0, duration_s / rounds, 3)
                samples[key][batch].append(run["latency_ms"])
    return {k: {b: float(np.median(np.concatenate(v))) for b, v in s.items()} for k, s in samples.items()}


def run(
    entries: Sequence[Entry],
    judge: Mapping[str, Any],
    settings: Mapping[str, Any],
    model: str,
    target: str | None,
    folder: Path,
) -> tuple[Path, list[dict[str, Any]]]:
    """Build, gate and time every candidate into ``folder``; return the shipped engine's folder and the record.

    Args:
        entries: the candidates with their graphs and build specs.
        judge: ``options`` (precision -> option), ``model`` (cfg.model), ``reference`` (outputs), ``batches`` and
            ``labels``: the eval sample and what each gate needs.
        settings: the race's settings (``duration_s``, ``rounds``) and the ``benchmark`` group's GPU switches.
        model: ``model.name``.
        target: the deployment-target label.
        folder: an empty folder, one engine folder per candidate.

    Returns:
        tuple: the winner's engine folder, and one record per candidate (its gate, p50 per batch, score, result).
    """
    record, built = build_and_gate(entries, judge, model, target, folder)
    passing = [e["candidate"] for e in record if e.get("gate", {}).get("passed")]
    if not passing:  # never ship a candidate that failed the gate compare applies
        why = "; ".join(
            f"{e['candidate']} {e.get('result') or 'failed its gate: ' + e['gate']['failure']}" for e in record
        )
        raise PipelineError(f"no candidate {'passed its accuracy gate' if built else 'built'}: {why}")
    p50 = time_engines({key: built[key] for key in passing}, settings)
    best = {b: min(t[b] for t in p50.values()) for b in next(iter(p50.values()), {})}
    for entry in record:
        if entry["candidate"] in p50:
            entry["p50_ms"] = {f"bs{b}": round(v, 4) for b, v in p50[entry["candidate"]].items()}
            entry["score"] = round(score(p50[entry["candidate"]], best), 4)  # 1.0: the fastest at every batch
    winner = min(passing, key=lambda k: score(p50[k], best))
    for entry in record:
        if entry["candidate"] == winner:
            entry["result"] = "shipped"
        elif entry["candidate"] in p50:  # the geometric mean over batch sizes of its p50 / the winner's
            entry["result"] = f"{score(p50[entry['candidate']], p50[winner]):.2f}× slower than {winner}"
        elif "result" not in entry:
            entry["result"] = f"failed its gate: {entry['gate']['failure']}"
    return built[winner][1], record


def build_and_gate(
    entries: Sequence[Entry], judge: Mapping[str, Any], model: str, target: str | None, folder: Path
) -> tuple[list[dict[str, Any]], dict[str, Entry]]:
    """Build each candidate into ``folder`` and gate it (``run``'s arguments); its record, and key -> (candidate,
    engine folder, spec) of those that built. A candidate its backend cannot build is a record, not a stop."""
    record: list[dict[str, Any]] = []
    built: dict[str, Entry] = {}
    with Progress("build", len(entries), "candidates built and gated") as progress:
        for chosen, graph, spec in entries:
            entry: dict[str, Any] = {"candidate": chosen.key, "backend": chosen.backend.name, "precision": ""}
            started = time.perf_counter()
            out = folder / chosen.key
            try:  # in a process of its own: a native crash is this candidate's record, not the stage's end
                got = build_and_run(chosen, graph, spec, (model, target, out), judge["batches"])
            except CandidateFailed as e:  # its runtime's refusal or its crash is its record; a bug of ours is not
                entry["result"] = str(e) if e.crashed else f"did not build: {first_line(e, 200)}"
            else:
                entry["gate"] = gate(judge, chosen.precision, got)
                built[chosen.key] = (chosen, out, spec)
            entry["precision"] = chosen.precision
            record.append(entry | {"build_s": round(time.perf_counter() - started, 2)})
            progress.step(chosen.key)
    return record, built


def time_engines(engines: Mapping[str, Entry], settings: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    """Key -> batch -> p50 ms of each built engine (key -> (candidate, engine folder, spec)), every runner active
    at once and timed in interleaved rounds (``timings``)."""
    if not engines:
        return {}
    with ExitStack() as stack:
        calls: dict[str, dict[int, Any]] = {}
        for key, (_, out, spec) in engines.items():
            engine = stack.enter_context(Engine.open(out, name=key))
            calls[key] = {}
            gpu = settings["benchmark"]
            for batch in spec.batch_sizes:
                calls[key][batch] = engine.timed_call(spec.feed(batch), gpu["cuda_graph"], gpu["no_data_transfers"])
                stack.callback(calls[key][batch].close)
        return timings(calls, float(settings["duration_s"]), int(settings["rounds"]))
