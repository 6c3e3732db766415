"""The race at build, TensorRT's tactic selection one level up: every candidate (a backend at a precision) is built
by its backend, gated on an eval sample against the fp32 reference with its own precision's tolerances, and timed
with the benchmark's method (warm-up, interleaved rounds, a least number of iterations); the fastest that passes
ships. With ``backend.race.objective=per_batch`` each served batch size is a heat of its own (its batch range, its
builds tuned for it), and the engine holds each heat's winner. Every candidate, its gate, its timings and why it
lost go into the shipped engine's manifest, which a restore brings back with the engine."""

import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import PipelineError, first_line
from stages.core.gate import gate_check, verdict_record
from stages.core.progress import Progress
from stages.core.timing import measure
from stages.core.tuning import score
from stages.runtime.base import BuildSpec
from stages.runtime.engine import Engine
from stages.select.candidate import Candidate
from stages.select.isolated import CandidateFailed, build_and_run

Entry = tuple[Candidate, Path, BuildSpec]  # a candidate, its graph and its build spec


@dataclass(frozen=True)
class Heat:
    """One race: the candidates built for one batch range, timed at ``batches``, chosen on ``scored``."""

    span: tuple[int, int]  # the (first, last) batch its winner serves
    batches: tuple[int, ...]  # the batch sizes its candidates are timed at
    scored: tuple[int, ...]  # the batch sizes the choice is made on (the objective)
    entries: Sequence[Entry]
    judge: Mapping[str, Any]  # the gate's eval sample, in batches the span holds

    @property
    def name(self) -> str:
        """``bs<first>-<last>``: its folder and its name in records."""
        return f"bs{self.span[0]}-{self.span[1]}"


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
    return verdict_record(gate_check(judge["model"], option, judge["reference"], got, judge["labels"], judge["scales"]))


def separated(samples: Mapping[str, Sequence[np.ndarray]]) -> bool:
    """Whether the fastest candidate is clearly ahead: its upper quartile below every other's lower quartile.

    Args:
        samples: candidate -> its latencies so far, one array per round.

    Returns:
        bool: True when more rounds would not change the ranking.
    """
    spans = {k: np.percentile(np.concatenate(v), [25, 50, 75]) for k, v in samples.items()}
    if len(spans) < 2:
        return True
    best = min(spans, key=lambda k: spans[k][1])
    return all(spans[best][2] < q[0] for k, q in spans.items() if k != best)


def timings(calls: dict[str, dict[int, Any]], settings: Mapping[str, Any]) -> dict[str, dict[int, dict[str, float]]]:
    """Candidate -> batch -> p50 and p90 ms and iterations (``stats``), timed as the benchmark times (warm-up, then
    rounds that alternate between the candidates, each at least its share of ``duration_s`` and of
    ``min_iterations``); from the third round on, timing stops at a batch size once every candidate has
    ``min_iterations`` calls and its fastest is clearly ahead (``separated``).

    Args:
        calls: candidate -> batch -> its timed call.
        settings: the race's ``duration_s``, ``rounds``, ``warmup_ms`` and ``min_iterations``.

    Returns:
        dict: candidate -> batch -> ``p50_ms``, ``p90_ms`` and ``iterations``.
    """
    rounds, warmup_s = int(settings["rounds"]), float(settings["warmup_ms"]) / 1e3
    least = int(settings["min_iterations"])
    share = (float(settings["duration_s"]) / rounds, -(-least // rounds))
    batches = sorted({b for c in calls.values() for b in c})
    samples: dict[str, dict[int, list[np.ndarray]]] = {k: {b: [] for b in c} for k, c in calls.items()}
    for batch in batches:
        timed = {k: c[batch] for k, c in calls.items() if batch in c}
        for index in range(rounds):
            for key, call in timed.items():
                samples[key][batch].append(measure(call, warmup_s if index == 0 else 0.0, *share)["latency_ms"])
            counts = [sum(len(r) for r in samples[k][batch]) for k in timed]
            if index >= 2 and min(counts) >= least and separated({k: samples[k][batch] for k in timed}):
                break
    return {k: {b: stats(np.concatenate(v)) for b, v in s.items()} for k, s in samples.items()}


def stats(latencies: np.ndarray) -> dict[str, float]:
    """p50, p90 (ms) and the count of one candidate's timed calls at one batch size."""
    p50, p90 = np.percentile(latencies, [50, 90])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "iterations": len(latencies)}


def run(
    heat: Heat, settings: Mapping[str, Any], model: str, target: str, folder: Path
) -> tuple[Entry, list[dict[str, Any]]]:
    """Build, gate and time every candidate of ``heat`` into ``folder``; return the winner and the record.

    Args:
        heat: the candidates, the batch range their engines serve, the sizes timed and scored, and the gate's sample.
        settings: the race's settings (``duration_s``, ``rounds``, ``warmup_ms``, ``min_iterations``) and the
            ``benchmark`` group's GPU switches.
        model: ``model.name``.
        target: the fleet target it is built for.
        folder: an empty folder, one engine folder per candidate.

    Returns:
        tuple: the winner (its candidate, engine folder and spec), and one record per candidate (its gate, p50 per
        batch, score, result). A heat of one candidate is gated, not timed.
    """
    record, built = build_and_gate(heat, model, target, folder)
    passing = [e["candidate"] for e in record if e.get("gate", {}).get("passed")]
    if not passing:  # never ship a candidate that failed the gate compare applies
        raise PipelineError(refusal(heat, record, bool(built)))
    if len(heat.entries) == 1:
        record[0]["result"] = "shipped"
        return built[passing[0]], record
    timed = time_engines({key: built[key] for key in passing}, settings)
    p50 = {k: {b: t["p50_ms"] for b, t in v.items()} for k, v in timed.items()}
    best = {b: min(t[b] for t in p50.values()) for b in heat.scored}
    for entry in record:
        if entry["candidate"] in p50:
            per_batch = timed[entry["candidate"]].items()
            entry["p50_ms"] = {f"bs{b}": round(t["p50_ms"], 4) for b, t in per_batch}
            entry["p90_ms"] = {f"bs{b}": round(t["p90_ms"], 4) for b, t in per_batch}
            entry["iterations"] = {f"bs{b}": t["iterations"] for b, t in per_batch}
            entry["score"] = round(score(p50[entry["candidate"]], best), 4)  # 1.0: the fastest where it counts
    winner = min(passing, key=lambda k: score(p50[k], best))
    for entry in record:
        if entry["candidate"] == winner:
            entry["result"] = "shipped"
        elif entry["candidate"] in p50:  # the geometric mean over the scored sizes of its p50 / the winner's
            scored = {b: p50[winner][b] for b in heat.scored}
            entry["result"] = f"{score(p50[entry['candidate']], scored):.2f}× slower than {winner}"
        elif "result" not in entry:
            entry["result"] = f"failed its gate: {entry['gate']['failure']}"
    return built[winner], record


def refusal(heat: Heat, record: Sequence[Mapping[str, Any]], built: bool) -> str:
    """The one line of a heat where nothing passed: a lone candidate's own failure, or each candidate's."""
    if len(record) == 1:
        entry = record[0]
        if "gate" not in entry:
            return str(entry["result"])
        verdict = entry["gate"]
        return (
            f"the {entry['candidate']} engine failed its accuracy gate on {verdict['samples']} eval samples "
            f"({verdict['failure']}): nothing ships"
        )
    why = "; ".join(f"{e['candidate']} {e.get('result') or 'failed its gate: ' + e['gate']['failure']}" for e in record)
    return f"no candidate {'passed its accuracy gate' if built else 'built'}: {why}"


def build_and_gate(heat: Heat, model: str, target: str, folder: Path) -> tuple[list[dict[str, Any]], dict[str, Entry]]:
    """Build each candidate of ``heat`` into ``folder`` and gate it (``run``'s arguments); its record, and key ->
    (candidate, engine folder, spec) of those that built. A candidate its backend cannot build is a record."""
    record: list[dict[str, Any]] = []
    built: dict[str, Entry] = {}
    judge = heat.judge
    with Progress("build", len(heat.entries), f"candidates built and gated ({heat.name})") as progress:
        for chosen, graph, spec in heat.entries:
            entry: dict[str, Any] = {"candidate": chosen.key, "backend": chosen.backend.name, "precision": ""}
            started = time.perf_counter()
            out = folder / chosen.key
            try:  # in a process of its own: a native crash is this candidate's record, not the stage's end
                got = build_and_run(chosen, graph, spec, (model, target, out), judge["batches"])
            except CandidateFailed as e:  # its runtime's refusal or its crash is its record; a bug of ours is not
                entry["result"] = (
                    str(e) if e.crashed or len(heat.entries) == 1 else f"did not build: {first_line(e, 200)}"
                )
            else:
                entry["gate"] = gate(judge, chosen.precision, got)
                built[chosen.key] = (chosen, out, spec)
            entry |= {"precision": chosen.precision, "serves": list(heat.span)}
            record.append(entry | {"build_s": round(time.perf_counter() - started, 2)})
            progress.step(chosen.key)
    return record, built


def time_engines(engines: Mapping[str, Entry], settings: Mapping[str, Any]) -> dict[str, dict[int, dict[str, float]]]:
    """Key -> batch -> p50 and p90 ms and iterations of each built engine (key -> (candidate, engine folder, spec)), every
    runner active at once and timed in interleaved rounds (``timings``)."""
    with ExitStack() as stack:
        calls: dict[str, dict[int, Any]] = {}
        for key, (_, out, spec) in engines.items():
            engine = stack.enter_context(Engine.open(out, name=key))
            calls[key] = {}
            gpu = settings["benchmark"]
            for batch in spec.batch_sizes:
                calls[key][batch] = engine.timed_call(spec.feed(batch), gpu["cuda_graph"], gpu["no_data_transfers"])
                stack.callback(calls[key][batch].close)
        return timings(calls, settings)
