"""The accuracy gate: the one rule that decides whether a candidate's outputs may ship, used by the int8
fallback's rounds (``fallback.Evaluator``), the build's race (``race.gate``) and compare, so the three never
disagree on the same outputs.

An output passes where every element is finite and within atol *or* rtol x |reference| (Polygraphy's elementwise
rule, with the relative part scaled by the reference, not by the candidate as Polygraphy's ``SimpleCompareFunc``
does); atol is raised to float32's own floor where a Softmax makes it unreachable (``core.floor``) and, for a
precision whose ``tolerance.spread`` is set (int8, bf16), to that fraction of the output's spread over the eval split (an
int8 error scales with the output's range: logits a model spreads 4x wider move 4x further under the same
quantization); the task metric must not drop by more than the option's ``task_budget``.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core.errors import PipelineError
from stages.core.metrics import task_metric
from stages.core.onnx_io import compare_outputs
from stages.core.reference import Scales


def tolerances(
    precision: DictConfig, outputs: list[str], scales: Scales | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-output atol and rtol dicts in Polygraphy's form ("" = default).

    Args:
        precision: a precision option (``tolerance.atol``, ``tolerance.rtol``, ``tolerance.spread``,
            ``tolerance.outputs``).
        outputs: the graph's output names.
        scales: the reference run's ``Scales``: an atol below an output's float32 floor (``floor.floors_of``), or
            below ``tolerance.spread`` times the output's spread, is raised to it.

    Returns:
        tuple: atol and rtol, output name -> value, ``""`` the default.
    """
    atol, rtol = {"": precision.tolerance.atol}, {"": precision.tolerance.rtol}
    for name, tol in precision.tolerance.outputs.items():
        if name not in outputs:
            raise PipelineError(f"precision.tolerance.outputs: {name!r} is not an output ({', '.join(outputs)})")
        atol[name], rtol[name] = tol.get("atol", atol[""]), tol.get("rtol", rtol[""])
    spread = float(precision.tolerance.spread)
    for name in outputs:
        least = max((scales.floors.get(name, 0.0), spread * scales.spreads.get(name, 0.0)) if scales else (0.0,))
        if least > atol.get(name, atol[""]):
            atol[name] = least
    return atol, rtol


def output_check(
    option: DictConfig,
    reference: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    scales: Scales | None = None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The gate's elementwise part: each output against the reference within the option's tolerances.

    Args:
        option: the precision's option (tolerances).
        reference: output name -> the fp32 reference's outputs.
        got: output name -> the candidate's outputs on the same inputs.
        scales: the reference run's floors and spreads (``tolerances``).

    Returns:
        tuple: output name -> max_abs, max_rel, mean_abs, atol, rtol and passed; and one line per failing output.
    """
    atol, rtol = tolerances(option, list(reference), scales)
    stats: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for name, want in reference.items():
        a, r = atol.get(name, atol[""]), rtol.get(name, rtol[""])
        found = compare_outputs({name: want}, {name: got[name]}, a, r)[name]
        stats[name] = {k: found[k] for k in ("max_abs", "max_rel")} | spread(want, got[name]) | {"atol": a, "rtol": r}
        stats[name]["passed"] = found["passed"]
        finite = bool(np.isfinite(want).all()), bool(np.isfinite(got[name]).all())
        if not finite[0]:
            failures.append(f"output {name!r} of the fp32 reference has NaN or Inf")
        if not finite[1]:
            failures.append(f"output {name!r} has NaN or Inf")
        elif all(finite) and not found["passed"]:
            failures.append(f"output {name!r} differs by up to {found['max_abs']:.3g} (atol {a:g}, rtol {r:g})")
    return stats, failures


def spread(want: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Error statistics beside the gate's maximum: the mean and the 99th percentile of |error|, the error's
    L2 norm relative to the reference's (scale-free: the same for logits of any spread) and the reference's
    standard deviation (the scale its model gives the output).

    Args:
        want: the reference's output.
        got: the candidate's.

    Returns:
        dict: ``mean_abs``, ``p99_abs``, ``rel_l2``, ``ref_std`` (zeros for an empty output).
    """
    if not want.size:
        return {"mean_abs": 0.0, "p99_abs": 0.0, "rel_l2": 0.0, "ref_std": 0.0}
    want64 = want.astype(np.float64)
    diff = np.abs(got.astype(np.float64) - want64)
    norm = float(np.linalg.norm(want64))
    return {
        "mean_abs": float(np.mean(diff)),
        "p99_abs": float(np.percentile(diff, 99)),
        "rel_l2": float(np.linalg.norm(diff) / norm) if norm else float(np.linalg.norm(diff)),
        "ref_std": float(np.std(want64)),
    }


def gate_check(
    model: DictConfig,
    option: DictConfig,
    reference: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    scales: Scales | None = None,
) -> dict[str, Any]:
    """The gate on one set of outputs: every output passes ``output_check`` and the task metric stays within the
    option's budget.

    Args:
        model: ``cfg.model`` (task output and metric).
        option: the precision's option (tolerances, task budget).
        reference: output name -> the fp32 reference's outputs.
        got: output name -> the candidate's outputs on the same inputs.
        labels: the samples' labels, or None.
        scales: the reference run's floors and spreads (``tolerances``).

    Returns:
        dict: the task metric's fields, ``passed``, ``failures`` (one line each: outputs, then the task metric),
        ``failure`` (the first, or None), ``outputs`` (``output_check``'s stats) and ``max_abs`` per output.
    """
    stats, failures = output_check(option, reference, got, scales)
    output = model.task.output if model.task.output in reference else next(iter(reference))
    task = task_metric(model, reference[output], got[output], labels, option.task_budget)
    if not task["passed"]:
        failures.append(
            f"{task['metric']} dropped {100 * task['delta']:.2f} pt (budget {100 * task['budget']:.2f} pt, "
            "precision.task_budget)"
        )
    max_abs = {name: round(s["max_abs"], 6) for name, s in stats.items()}
    verdict = {"passed": not failures, "failures": failures, "failure": failures[0] if failures else None}
    return task | verdict | {"outputs": stats, "max_abs": max_abs}


VERDICT = ("passed", "failure", "max_abs", "metric", "reference", "candidate", "samples")  # what a record keeps


def verdict_record(checked: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``gate_check``'s verdict a record keeps (the race's, a baseline's): passed, the first failure, each
    output's max abs, the task metric and the samples.

    Args:
        checked: ``gate_check``'s verdict.

    Returns:
        dict: the kept fields.
    """
    return {k: checked[k] for k in VERDICT}


def run_batches(call: Callable[[dict[str, np.ndarray]], Mapping[str, Any]], batches: Sequence[dict]) -> dict:
    """The outputs of ``call`` (an engine, a runner's ``infer``) on each of ``batches``, concatenated per output:
    what every judge hands ``gate_check``.

    Args:
        call: feed -> output name -> array.
        batches: the feeds, in eval order.

    Returns:
        dict: output name -> every batch's output, concatenated.
    """
    results = [call(batch) for batch in batches]
    return {name: np.concatenate([np.asarray(r[name]) for r in results]) for name in results[0]}
