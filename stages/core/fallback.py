"""Accuracy-driven INT8 fallback: keep the most sensitive quantized nodes in float until the task budget holds.

Every candidate graph is judged on the runtime that will run it (``outputs``: OpenVINO compiled in memory, ONNX
Runtime with the engine's session settings, a TensorRT plan), never on a proxy: the same Q/DQ graph can be accurate
on one runtime and off by several logits on another (docs/openvino.md). A round passes when the gate's rule holds (every output within the int8 tolerances, the task metric within
its budget). Sensitivity of a node = the normalised squared error of the task output (against the float reference) when that
node alone is quantized. Rounds move the ``step`` next most sensitive nodes to float and re-encode with the same
calibration (the ranges are measured on the float graph, so excluding a node does not change them), until the
task metric is within the task budget or ``max_nodes`` nodes are excluded (never all of them: a model
with no quantized node is not int8); if the budget never holds, the most accurate round is kept, and compare's
gate reports the miss. The search stops at ``budget_s`` seconds (the nodes not yet ranked rank last). Every round
is recorded.
"""

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core.data import LABELS
from stages.core.gate import gate_check
from stages.core.onnx_io import load_onnx
from stages.core.progress import Progress
from stages.core.quantize import check_int8, quantized_nodes
from stages.core.reference import ReferenceRun

# encode(out, exclude=[...], only=[...]) writes a Q/DQ model to ``out``.
Encoder = Callable[..., None]
# (graph, batches) -> output name -> every batch's output, concatenated: the runtime a candidate is judged on.
Outputs = Callable[[Path, Sequence[dict[str, np.ndarray]]], dict[str, np.ndarray]]


class Reference:
    """The eval split in batches and the reference run's outputs and floors on them (``core.reference``, written
    once by the reference stage): shared by every candidate's judge."""

    def __init__(self, model: DictConfig, batch_size: int, run: ReferenceRun, data: dict[str, np.ndarray]) -> None:
        """Args:
        model: the model's section (``cfg.model``): inputs, task output and metric.
        batch_size: samples per evaluation batch.
        run: the reference stage's run (its samples bound the split used here).
        data: the eval split.
        """
        self.model = model
        self.batches, self.outputs = run.judged(model, data, batch_size)
        self.labels = data.get(LABELS)
        self.scales = run.scales
        self.output = model.task.output if model.task.output in self.outputs else next(iter(self.outputs))


class Evaluator:
    """The gate on a candidate model over the eval data, against the float reference's outputs."""

    ROUND = ("metric", "reference", "candidate", "delta", "budget", "agreement", "samples", "passed", "failure")

    def __init__(self, reference: Reference, option: DictConfig, outputs: Outputs) -> None:
        """Args:
        reference: the eval batches and the float model's outputs on them.
        option: the int8 option: the gate's tolerances and task budget, which every round must meet.
        outputs: runs a candidate graph on the runtime that will run the engine.
        """
        self.model, self.option, self.outputs = reference.model, option, outputs
        self.batches, self.labels, self.output = reference.batches, reference.labels, reference.output
        self.references, self.scales = reference.outputs, reference.scales
        self.reference = self.references[self.output]

    def verdict(self, candidate: Path) -> dict[str, Any]:
        """The gate (``gate.gate_check``, float32 floors included) on ``candidate``'s outputs over the eval split."""
        got = self.outputs(candidate, self.batches)
        return gate_check(self.model, self.option, self.references, got, self.labels, self.scales)

    def __call__(self, candidate: Path) -> dict[str, Any]:
        """A round's record: the gate's verdict on ``candidate`` (task metric, passed, first failure, max abs)."""
        verdict = self.verdict(candidate)
        return {k: verdict[k] for k in self.ROUND} | {"max_abs": verdict["max_abs"]}

    def error(self, candidate: Path, count: int) -> float:
        """Normalised squared error of the task output over the first ``count`` samples (sensitivity)."""
        sizes = np.cumsum([len(next(iter(b.values()))) for b in self.batches])
        batches = self.batches[: int(np.searchsorted(sizes, count)) + 1]  # the fewest batches holding ``count``
        got = self.outputs(candidate, batches)[self.output].astype(np.float64)
        want = self.reference[: len(got)].astype(np.float64)
        return float(np.mean((got - want) ** 2)) / max(float(np.mean(want**2)), 1e-30)


def sensitivities(
    nodes: list[str], encode: Encoder, evaluate: Evaluator, count: int, deadline: float = float("inf")
) -> dict[str, float]:
    """Node -> error of the task output when only that node is quantized, most sensitive first.

    Args:
        nodes: the quantized nodes to rank.
        encode: writes a Q/DQ model (``only=[node]`` quantizes one node).
        evaluate: the task metric and error against the float reference.
        count: eval samples each error is measured on.
        deadline: ``time.perf_counter()`` after which no node is measured (the rest are left out).

    Returns:
        dict[str, float]: node -> normalised squared error, descending.
    """
    scores = {}
    with (
        tempfile.TemporaryDirectory(prefix="engineforge-sensitivity-") as tmp,
        Progress("precision", len(nodes), "nodes ranked by sensitivity") as progress,
    ):
        for node in nodes:
            if time.perf_counter() > deadline:
                break
            path = Path(tmp) / "one.onnx"
            encode(path, only=[node])
            scores[node] = evaluate.error(path, count)
            progress.step(node)
    return dict(sorted(scores.items(), key=lambda item: -item[1]))


def run(
    out: Path, encode: Encoder, evaluate: Evaluator, enabled: bool, settings: DictConfig, op_types: list[str]
) -> dict[str, Any]:
    """Encode into ``out`` with nothing excluded; while the budget is missed and ``enabled``, exclude the next
    ``settings.step`` most sensitive nodes (of ``op_types``, the quantized types) and encode again, up to
    ``settings.max_nodes``.

    Args:
        out: where the chosen Q/DQ model is written.
        encode: writes a Q/DQ model, with ``exclude=[...]`` nodes kept in float.
        evaluate: the task metric against the float reference.
        enabled: whether to search at all (``precision.int8.fallback``).
        settings: the search's settings (``step``, ``max_nodes``, ``sensitivity_samples``, ``budget_s``).
        op_types: the quantized op types.

    Returns:
        dict: enabled, rounds (excluded count + task metric of each), kept (the index of the round written to
        ``out``), the excluded nodes, every ranked node's sensitivity, the budget and whether it ran out (no
        seconds: the record is part of precision.json, whose bytes must not depend on the machine's load).
    """
    started = time.perf_counter()
    deadline = started + float(settings.budget_s)
    encode(out)
    check_int8(load_onnx(out))
    rounds = [{"excluded": 0, **evaluate(out)}]
    record: dict[str, Any] = {"enabled": enabled, "rounds": rounds, "excluded": [], "kept": 0, "sensitivity": {}}
    record |= {"budget_s": float(settings.budget_s), "out_of_budget": False}
    if rounds[-1]["passed"] or not enabled:
        return record
    nodes = quantized_nodes(load_onnx(out), op_types)
    ranking = sensitivities(nodes, encode, evaluate, settings.sensitivity_samples, deadline)
    order = list(ranking) + [n for n in nodes if n not in ranking]  # unranked (out of budget) nodes last
    limit = min(settings.max_nodes, len(nodes) - 1)  # one node at least stays int8
    record["sensitivity"] = {node: round(score, 8) for node, score in ranking.items()}
    excluded: list[str] = []
    with Progress("precision", limit, "nodes kept in float") as progress:
        while not rounds[-1]["passed"] and len(excluded) < limit and time.perf_counter() <= deadline:
            excluded = order[: min(len(excluded) + settings.step, limit)]
            encode(out, exclude=excluded)
            rounds.append({"excluded": len(excluded), **evaluate(out)})
            progress.step(f"{rounds[-1]['metric']} {rounds[-1]['candidate']:.4f}", settings.step)
    kept = len(rounds) - 1
    if not rounds[-1]["passed"]:  # the budget never held: keep the most accurate round (fewest exclusions on ties)
        kept = max(range(len(rounds)), key=lambda i: (rounds[i]["candidate"], -rounds[i]["excluded"]))
        if kept != len(rounds) - 1:
            excluded = order[: rounds[kept]["excluded"]]
            encode(out, exclude=excluded)
    record["excluded"], record["kept"] = excluded, kept
    record["next"] = [] if rounds[kept]["passed"] else order[len(excluded) : len(excluded) + 3]  # it would try
    record["out_of_budget"] = time.perf_counter() > deadline and not rounds[kept]["passed"]
    return record
