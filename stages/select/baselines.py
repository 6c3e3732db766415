"""The baselines, what a user would run instead of the engine: which ones run (``benchmark.baselines``), each one's
timed call (eager PyTorch, each runtime's untuned default on the raw export), and each judged like the engine: on the
eval samples compare ran the engine on, by the one gate (``gate.gate_check``) against the same reference run with the
shipped precision's tolerances, so a report can tell a faster baseline that is an accurate alternative from one that
is fast because it is less accurate (OpenVINO's default runs bf16 on AVX-512 BF16 CPUs)."""

import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core import precisions
from stages.core.artifacts import read_json
from stages.core.data import LABELS, load_dataset
from stages.core.errors import PipelineError, first_line
from stages.core.gate import gate_check, run_batches, verdict_record
from stages.core.metrics import EAGER
from stages.core.model import load_model, torch_outputs
from stages.core.reference import read_reference
from stages.runtime import registry
from stages.runtime.base import TimedCall

Factory = Callable[[ExitStack, dict], TimedCall]


class BaselineFailed(Exception):
    """A baseline's runtime cannot load or run the model: its one line."""


def baseline_names(wanted: Any, runtimes: str) -> list[str]:
    """``benchmark.baselines`` resolved: ``auto`` is eager PyTorch and the baseline every runtime here declares
    (the env stage's ``paths.runtimes``), in registry order; a list is taken as it is.

    Args:
        wanted: ``benchmark.baselines``.
        runtimes: ``paths.runtimes``.

    Returns:
        list[str]: baseline names.
    """
    if wanted == "auto":
        return [EAGER, *(r["baseline"] for r in read_json(runtimes).values() if r["baseline"])]
    if isinstance(wanted, str):
        raise PipelineError(f"benchmark.baselines: {wanted!r} is neither auto nor a list of baselines")
    return list(wanted)


def baseline_factory(cfg: DictConfig, name: str, notes: dict[str, Any]) -> Factory:
    """The factory of baseline ``name``: its backend's untuned default on the raw export; what it ran with goes
    into ``notes``, and a runtime that cannot take the model raises ``BaselineFailed``.

    Args:
        cfg: the stage's params (``paths.onnx``, ``benchmark``).
        name: the baseline (a backend's ``baseline``).
        notes: baseline name -> what it ran with.

    Returns:
        Factory: (stack, feed) -> its timed call.
    """
    other = registry.baseline(name)

    def factory(stack: ExitStack, feed: dict) -> TimedCall:
        started = time.perf_counter()
        try:
            runner = stack.enter_context(other.baseline_runner(Path(cfg.paths.onnx), name))
            opened = {"open_ms": round(1e3 * (time.perf_counter() - started), 2)}  # at the first batch: cold
            notes[name] = other.describe(runner) | notes.get(name, opened)
            call = other.timed_call(runner, feed, cfg.benchmark)
            call()  # one inference: a runtime that compiles the graph lazily refuses it here
        except other.runtime_errors() as e:  # its runtime cannot take this model: a record, not the stage's end
            raise BaselineFailed(first_line(e, 200)) from e
        stack.callback(call.close)
        return call

    return factory


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
