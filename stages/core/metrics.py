"""What every accuracy check shares: the task metric (top-1 against labels, or argmax agreement with a reference)
and a precision option's per-output tolerances."""

from collections.abc import Mapping
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core.errors import PipelineError

METRICS = ("top1", "agreement")
# Runtime names in reports/benchmark.json: the engine and the baselines measured beside it.
ENGINE, EAGER = "engine", "pytorch_eager"


def task_metric(model: DictConfig, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None, budget: float) -> dict:
    """Top-1 (with labels) or agreement with the reference; ``delta`` is the drop, compared to ``budget``.

    Args:
        model: ``cfg.model`` (reads ``task.metric`` and ``name``).
        ref: the reference's task output, N x classes.
        cand: the candidate's task output, N x classes.
        labels: N class labels, or None for unlabelled data.
        budget: the largest drop allowed (a fraction: 0.01 = 1 pt).

    Returns:
        metric, reference, candidate, delta, budget, passed, agreement and samples.
    """
    ref_top, cand_top = ref.argmax(-1), cand.argmax(-1)
    labels = None if labels is None else labels[: len(ref)]  # feeds may leave out a last partial batch
    agreement = float((ref_top == cand_top).mean())
    if model.task.metric == "top1":
        if labels is None:
            raise PipelineError(f"model.task.metric: top1 needs labels, model {model.name!r} has none; use agreement")
        reference, candidate = float((ref_top == labels).mean()), float((cand_top == labels).mean())
    elif model.task.metric == "agreement":
        reference, candidate = 1.0, agreement
    else:
        raise PipelineError(f"model.task.metric: {model.task.metric!r} is not one of {', '.join(METRICS)}")
    delta = reference - candidate
    return {
        "metric": model.task.metric,
        "reference": reference,
        "candidate": candidate,
        "delta": delta,
        "budget": budget,
        "passed": delta <= budget,
        "agreement": agreement,
        "samples": len(ref),
    }


def tolerances(
    precision: DictConfig, outputs: list[str], floors: Mapping[str, float] | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-output atol and rtol dicts in Polygraphy's form ("" = default).

    Args:
        precision: a precision option (``tolerance.atol``, ``tolerance.rtol``, ``tolerance.outputs``).
        outputs: the graph's output names.
        floors: output name -> the smallest atol float32 can honour there (``floor.softmax_floors``): an atol
            below it is raised to it.

    Returns:
        tuple: atol and rtol, output name -> value, ``""`` the default.
    """
    atol, rtol = {"": precision.tolerance.atol}, {"": precision.tolerance.rtol}
    for name, tol in precision.tolerance.outputs.items():
        if name not in outputs:
            raise PipelineError(f"precision.tolerance.outputs: {name!r} is not an output ({', '.join(outputs)})")
        atol[name], rtol[name] = tol.get("atol", atol[""]), tol.get("rtol", rtol[""])
    for name, floor in (floors or {}).items():
        if floor > atol.get(name, atol[""]):
            atol[name] = floor
    return atol, rtol


def gate_check(
    model: DictConfig,
    option: DictConfig,
    reference: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    floors: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The accuracy gate's rule on one set of outputs: every output within the option's tolerances (Polygraphy's
    rule: an element fails only beyond both atol and rtol) and the task metric within its budget. The int8
    fallback's rounds and the build's race judge candidates by it; compare applies it to the shipped engine.

    Args:
        model: ``cfg.model`` (task output and metric).
        option: the precision's option (tolerances, task budget).
        reference: output name -> the fp32 reference's outputs.
        got: output name -> the candidate's outputs on the same inputs.
        labels: the samples' labels, or None.
        floors: per-output atol floors (``tolerances``).

    Returns:
        dict: the task metric's fields, ``passed`` (both hold), ``failure`` (the first, one line, or None) and each
        output's largest absolute difference.
    """
    from stages.core.onnx_io import compare_outputs

    atol, rtol = tolerances(option, list(reference), floors)
    failures, max_abs = [], {}
    for name, want in reference.items():
        stats = compare_outputs({name: want}, {name: got[name]}, atol.get(name, atol[""]), rtol.get(name, rtol[""]))
        max_abs[name] = round(stats[name]["max_abs"], 6)
        if not stats[name]["passed"]:
            failures.append(f"output {name!r} differs by up to {stats[name]['max_abs']:.3g}")
    output = model.task.output if model.task.output in reference else next(iter(reference))
    task = task_metric(model, reference[output], got[output], labels, option.task_budget)
    if not task["passed"]:
        failures.append(f"{task['metric']} dropped {100 * task['delta']:.2f} pt (budget {100 * task['budget']:.2f})")
    return task | {"passed": not failures, "failure": failures[0] if failures else None, "max_abs": max_abs}
