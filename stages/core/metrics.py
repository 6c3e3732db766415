"""The task metric every accuracy check shares (top-1 against labels, or argmax agreement with a reference) and the
runtime names of the benchmark's records. The gate that uses it: ``stages.core.gate``."""

import numpy as np
from omegaconf import DictConfig

from stages.core.errors import PipelineError

METRICS = ("top1", "agreement")
# Runtime names in benchmark.json: the engine and the baselines measured beside it.
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
