"""Batches: a split's arrays cut into input feeds, one batch of any size, and the batch sizes a model accepts."""

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from stages.core.errors import PipelineError
from stages.core.specs import input_specs

if TYPE_CHECKING:
    from omegaconf import DictConfig


def fixed_batch(model: "DictConfig") -> int | None:
    """The batch size the model's graph fixes (an int first axis of an input), or None when it is dynamic.

    Args:
        model: the model's config section.

    Returns:
        int | None: the fixed batch size.
    """
    return next((s.shape[0] for s in input_specs(model) if s.shape and isinstance(s.shape[0], int)), None)


def served_batches(model: "DictConfig", batch_sizes: Sequence[int]) -> list[int]:
    """The batch sizes to build, race and time: ``batch_sizes``, or the one batch the model's graph fixes (an ONNX
    file exported at batch 1 runs batch 1 only; the benchmark's line says so).

    Args:
        model: the model's config section.
        batch_sizes: ``benchmark.batch_sizes``.

    Returns:
        list[int]: the sizes.
    """
    fixed = fixed_batch(model)
    return [fixed] if fixed is not None else [int(b) for b in batch_sizes]


def feeds(model: "DictConfig", data: dict[str, np.ndarray], batch_size: int, limit: int = 0) -> list[dict]:
    """Split ``data`` into input feed dicts of ``batch_size`` samples (the last may be smaller). A model that fixes
    its batch gets batches of exactly that size; samples that do not fill a last one are left out.

    Args:
        model: the model's config section.
        data: array name -> array (extra arrays such as ``labels`` are left out).
        batch_size: samples per feed.
        limit: use only the first ``limit`` samples (0: all).

    Returns:
        list[dict]: input name -> array, one dict per batch.

    Raises:
        PipelineError: a fixed-batch model whose data has fewer samples than one batch.
    """
    names = [s.name for s in input_specs(model)]
    total = len(data[names[0]]) if limit <= 0 else min(limit, len(data[names[0]]))
    fixed = fixed_batch(model)
    if fixed is not None:
        batch_size, total = fixed, total - total % fixed
        if total == 0:
            raise PipelineError(f"model {model.name!r} takes batches of {fixed}; its data has fewer samples")
    return [
        {n: np.ascontiguousarray(data[n][i : min(i + batch_size, total)]) for n in names}
        for i in range(0, total, batch_size)
    ]


def batch_of(model: "DictConfig", data: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """One feed dict of exactly ``batch_size`` samples, repeating the data if it is shorter (callers check the
    size against the model first: ``check_batch``).

    Args:
        model: the model's config section.
        data: array name -> array.
        batch_size: samples in the feed.

    Returns:
        dict[str, np.ndarray]: input name -> array.
    """
    names = [s.name for s in input_specs(model)]
    index = np.arange(batch_size) % len(data[names[0]])
    return {n: np.ascontiguousarray(data[n][index]) for n in names}


def check_batch(model: "DictConfig", batch_size: int, key: str) -> None:
    """A batch size must be positive, within ``model.max_batch`` and fit a fixed batch axis.

    Args:
        model: the model's config section.
        batch_size: the size to check.
        key: the config key (or option) that set it, for errors.

    Raises:
        PipelineError: naming ``key``, the size and the limit.
    """
    if not 1 <= batch_size <= model.max_batch:
        raise PipelineError(
            f"{key}: batch size {batch_size} is outside 1..{model.max_batch}, the limit of model "
            f"{model.name!r} (model.max_batch)"
        )
    fixed = fixed_batch(model)
    if fixed is not None and fixed != batch_size:
        raise PipelineError(
            f"{key}: batch size {batch_size}, but model {model.name!r} has a fixed batch of {fixed}; use {fixed}"
        )


def batch_ranges(batch_sizes: Sequence[int], max_batch: int) -> list[tuple[int, int]]:
    """The batch range each served batch size serves when the engine holds one engine per size: from 1 to
    ``max_batch``, split at the geometric mean of neighbouring sizes ([1, 32] -> 1-5 and 6-max), so a request goes
    to the engine built and timed at the size nearest it on a log scale.

    Args:
        batch_sizes: the served batch sizes, ascending, distinct.
        max_batch: ``model.max_batch``.

    Returns:
        list[tuple[int, int]]: (first, last) batch of each size's range, in the sizes' order.
    """
    sizes = sorted(int(b) for b in batch_sizes)
    cuts = [max(low, min(high - 1, int((low * high) ** 0.5))) for low, high in itertools.pairwise(sizes)]
    firsts = [1, *(c + 1 for c in cuts)]
    lasts = [*cuts, max(max_batch, sizes[-1])]
    return list(zip(firsts, lasts, strict=True))


def within(size: int, span: tuple[int, int] | None) -> int:
    """``size`` moved into the batch range ``span`` (None: unchanged): the batch a range's engine is judged at.

    Args:
        size: the configured batch size (``compare.batch_size``).
        span: the first and last batch an engine serves, or None.

    Returns:
        int: the batch size.
    """
    return size if span is None else min(max(size, span[0]), span[1])
