"""Baselines judged like the engine: each baseline the benchmark times (eager PyTorch, each runtime's untuned
default on the raw export) runs the eval samples compare ran the engine on, and the one gate (``gate.gate_check``)
judges its outputs against the same reference run with the shipped precision's tolerances, so a report can tell a
faster baseline that is an accurate alternative from one that is fast because it is less accurate (OpenVINO's
default runs bf16 on AVX-512 BF16 CPUs)."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core import precisions
from stages.core.data import LABELS, load_dataset
from stages.core.errors import PipelineError, first_line
from stages.core.gate import gate_check, run_batches, verdict_record
from stages.core.metrics import EAGER
from stages.core.model import load_model, torch_outputs
from stages.core.reference import read_reference
from stages.runtime import registry

# what eager PyTorch raises on inputs or ops it refuses (its own errors are RuntimeErrors), and ours
TORCH_ERRORS = (PipelineError, RuntimeError, ValueError, TypeError)


def baseline_outputs(cfg: DictConfig, name: str, batches: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """Baseline ``name``'s outputs on ``batches``, run as the benchmark times it.

    Args:
        cfg: the benchmark stage's config (``model``, ``paths.onnx``).
        name: the baseline.
        batches: the eval feeds.
        names: the model's output names.

    Returns:
        dict: output name -> outputs over every batch.
    """
    if name == EAGER:
        return torch_outputs(load_model(cfg.model), batches, names)
    backend = registry.baseline(name)
    with backend.baseline_runner(Path(cfg.paths.onnx), name) as runner:
        return run_batches(runner.infer, batches)


def judge_baselines(cfg: DictConfig, names: Iterable[str], shipped: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each baseline's gate verdict for each precision the engine ships (one per batch range's engine).

    Args:
        cfg: the benchmark stage's config (``model``, ``precision``, ``compare``, ``paths.reference``/``onnx``).
        names: the baselines that were timed.
        shipped: the precisions of the engine's parts.

    Returns:
        dict: baseline -> precision -> ``passed``, ``failure`` (one line or None), ``max_abs``, the task metric and
        ``samples``; a baseline its runtime refuses here: ``{"failed": line}``.
    """
    data = load_dataset(cfg.model, "test")
    run = read_reference(cfg.paths.reference)
    batches, reference = run.judged(cfg.model, data, cfg.compare.batch_size, cfg.compare.max_samples)
    options = precisions.options(cfg.precision)
    verdicts: dict[str, dict[str, Any]] = {}
    for name in names:
        errors = registry.baseline(name).runtime_errors() if name != EAGER else TORCH_ERRORS
        try:
            got = baseline_outputs(cfg, name, batches, list(run.outputs))
        except errors as e:
            verdicts[name] = {"failed": first_line(e, 200)}
            continue
        verdicts[name] = {}
        for precision in dict.fromkeys(shipped):
            checked = gate_check(cfg.model, options[precision], reference, got, data.get(LABELS), run.scales)
            verdicts[name][precision] = verdict_record(checked)
    return verdicts
