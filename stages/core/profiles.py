"""Shape profiles: the min/opt/max shape of every input an engine is built for, and seeded inputs at any shape.

A profile is ``{input name: {"min": shape, "opt": shape, "max": shape}}``. TensorRT builds one optimization
profile per entry; every backend's manifest records the list, and compare runs the engine at each profile's edges.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stages.core.errors import PipelineError
from stages.core.specs import axis_sizes, input_specs

EDGES = ("min", "opt", "max")
Profile = dict[str, dict[str, list[int]]]


def default_profile(model: Any, batch_sizes: Sequence[int], span: tuple[int, int] | None = None) -> Profile:
    """One profile from the model's dynamic axes: batch 1 .. ``model.max_batch`` (or the batch range ``span`` of an
    engine that serves one range), tuned (opt) for the largest benchmark batch size; every other dynamic axis at its ``model.dims`` size, the one size the model is declared
    to take (a segmentation net may need even sizes, a transformer a sequence of at least its window): a range
    for such an axis is a configured profile (``backend.<name>.profiles``).

    Args:
        model: the model's config section.
        batch_sizes: the benchmark's batch sizes.
        span: the (first, last) batch the engine serves; None: 1 .. ``model.max_batch``.

    Returns:
        Profile: input name -> min/opt/max shapes.
    """
    profile: Profile = {}
    first, last = span or (1, model.max_batch)
    opt_batch = min(max(batch_sizes, default=1), last)
    for spec in input_specs(model):
        profile[spec.name] = {
            "min": list(axis_sizes(spec, first, model.dims)),
            "opt": list(axis_sizes(spec, opt_batch, model.dims)),
            "max": list(axis_sizes(spec, last, model.dims)),
        }
    return profile


def resolve_profiles(
    configured: Sequence[Mapping] | None,
    model: Any,
    batch_sizes: Sequence[int],
    key: str,
    span: tuple[int, int] | None = None,
) -> list:
    """The profiles to build: ``configured`` (checked against the model's inputs) or the default one.

    Args:
        configured: the backend's configured profiles, or None/empty for the default.
        model: the model's config section.
        batch_sizes: the benchmark's batch sizes.
        key: the config entry errors name, e.g. ``backend.tensorrt.profiles``.
        span: the batch range of an engine that serves one (the default profile's edges); None: all.

    Returns:
        list[Profile]: at least one.

    Raises:
        PipelineError: a profile that misses an input, has another rank, moves a fixed axis or is not min <= opt <= max.
    """
    if not configured:
        return [default_profile(model, batch_sizes, span)]
    specs = {s.name: s for s in input_specs(model)}
    profiles = []
    for i, entry in enumerate(configured):
        if set(entry) != set(specs):
            raise PipelineError(f"{key}[{i}]: needs exactly the inputs {', '.join(specs)}, got {', '.join(entry)}")
        profile: Profile = {}
        for name, spec in specs.items():
            where = f"{key}[{i}].{name}"
            edges = {edge: [int(d) for d in entry[name].get(edge, [])] for edge in EDGES}
            for edge, shape in edges.items():
                if len(shape) != len(spec.shape):
                    raise PipelineError(f"{where}.{edge}: {shape} has rank {len(shape)}, the input has {spec.shape}")
                for axis, dim in enumerate(spec.shape):
                    if isinstance(dim, int) and shape[axis] != dim:
                        raise PipelineError(
                            f"{where}.{edge}: axis {axis} is fixed at {dim} in the model, not {shape[axis]}"
                        )
            if not all(1 <= a <= b <= c for a, b, c in zip(*edges.values(), strict=True)):
                raise PipelineError(f"{where}: needs 1 <= min <= opt <= max on every axis, got {edges}")
            profile[name] = edges
        profiles.append(profile)
    return profiles


def random_feed(shapes: Mapping[str, Sequence[int]], dtypes: Mapping[str, Any], seed: int = 0) -> dict:
    """Seeded inputs of the given shapes: floats standard normal, integers 0 or 1 (valid ids and mask values
    for every model here).

    Args:
        shapes: input name -> shape.
        dtypes: input name -> numpy dtype (or its name).
        seed: the generator's seed.

    Returns:
        dict[str, np.ndarray]: input name -> array.
    """
    rng = np.random.default_rng(seed)
    feed = {}
    for name, shape in shapes.items():
        dtype = np.dtype(dtypes[name])
        if dtype.kind in "iub":
            feed[name] = rng.integers(0, 2, size=tuple(shape)).astype(dtype)
        else:
            feed[name] = rng.standard_normal(tuple(shape)).astype(dtype)
    return feed


def profile_index(profiles: list[dict], feed: Mapping[str, Any]) -> int:
    """The first profile whose min..max range holds every input shape of ``feed``.

    Args:
        profiles: the manifest's profiles (input name -> min/opt/max shapes).
        feed: input name -> array.

    Returns:
        int: the profile's index.
    """
    for index, shapes in enumerate(profiles):
        if all(
            all(lo <= d <= hi for lo, d, hi in zip(shapes[n]["min"], feed[n].shape, shapes[n]["max"], strict=True))
            for n in feed
        ):
            return index
    given = {n: list(a.shape) for n, a in feed.items()}
    raise PipelineError(f"no optimization profile holds the shapes {given}: add one to backend.tensorrt.profiles")
