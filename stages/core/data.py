"""Eval and calibration data for ``cfg.model``: a recipe's splits, the user's ``.npz`` files, or seeded random
inputs when a model comes without data; checked against the model's inputs (batches: ``stages.core.batches``; the user's files: ``user_data``)."""

from typing import TYPE_CHECKING

import numpy as np

from stages.core.errors import PipelineError
from stages.core.model import load_recipe
from stages.core.specs import axis_sizes, input_specs
from stages.core.user_data import LABELS, user_data

if TYPE_CHECKING:
    from omegaconf import DictConfig

ROLES = {"test": "eval", "train": "calibration"}  # a recipe's split -> the model.data key that replaces it
SYNTHETIC = {"test": 128, "train": 512}  # samples of seeded random data, per split (512: the calibration default)


def data_source(model: "DictConfig", split: str) -> str:
    """Where ``split`` data comes from, for reports: found the way ``load_dataset`` finds it (a file, the data
    factory, which may return None for calibration so that the eval data serves, a recipe's split, or seeded random
    inputs), so the report names the source the samples really came from.

    Args:
        model: the model's config section.
        split: ``test`` (eval) or ``train`` (calibration).

    Returns:
        str: a short description (the file's path, ``factory('role')``, the recipe's split, or seeded inputs).
    """
    key = _source_key(model, ROLES.get(split, split))
    if key not in _SOURCES:  # not loaded in this process yet: find it the same way (a factory runs once more)
        _from_user(model, key[-1])
    where = _SOURCES[key]
    if where:
        return where.split(" ", 1)[1]  # user_data's "<key> <source>": the source alone
    if model.source == "recipe":
        return f"{model.code}, {split} split"
    return f"seeded random inputs (no model.data.{ROLES.get(split, split)})"


_SOURCES: dict[tuple[str, ...], str | None] = {}  # where load_dataset found each model's user data in this process


def _source_key(model: "DictConfig", role: str) -> tuple[str, ...]:
    """What decides where ``role`` data comes from: the model, its code and its ``data`` settings."""
    return (str(model.name), str(model.get("code")), str(model.get("data")), role)


def _from_user(model: "DictConfig", role: str) -> tuple[dict[str, np.ndarray], str] | None:
    """The user's ``role`` data, or for calibration the user's eval data when there is none of its own; where it
    was found is remembered for ``data_source``, so a report names it without calling a factory again."""
    found = user_data(model, role) or (user_data(model, "eval") if role == "calibration" else None)
    _SOURCES[_source_key(model, role)] = found[1] if found else None
    return found


def is_synthetic(model: "DictConfig", split: str) -> bool:
    """True when ``split`` data is seeded random, not real samples.

    Args:
        model: the model's config section.
        split: ``test`` or ``train``.

    Returns:
        bool: whether the data is synthetic.
    """
    return data_source(model, split).startswith("seeded random")


def load_dataset(model: "DictConfig", split: str) -> dict[str, np.ndarray]:
    """The ``split`` (``test``: eval, ``train``: calibration) data of ``model``, checked against its inputs.

    ``model.data.eval``/``.calibration`` (``.npz``) win, then ``model.data.factory``; calibration falls back to
    the eval data; then the recipe's split; a model with none gets seeded random inputs (``data_source`` says so).

    Args:
        model: the model's config section.
        split: ``test`` or ``train``.

    Returns:
        dict[str, np.ndarray]: input name -> array, and ``labels`` when the data has them.

    Raises:
        PipelineError: data that does not fit the inputs, naming the array and its source.
    """
    found = _from_user(model, ROLES.get(split, split))
    if found:
        data, where = found
    elif model.source == "recipe":
        try:
            data = load_recipe(model).dataset(split, **model.dims)
        except ValueError as e:  # recipes raise ValueError for a split or size they do not have
            raise PipelineError(f"model {model.name!r} ({model.code}) has no {split!r} data: {e}") from e
        where = f"{split} data of model {model.name!r}"
    elif split in SYNTHETIC:
        return synthetic(model, split)
    else:
        raise PipelineError(f"model {model.name!r} has no {split!r} data: the splits are {', '.join(SYNTHETIC)}")
    check_data(model, data, where)
    return data


def check_data(model: "DictConfig", data: dict[str, np.ndarray], where: str) -> None:
    """Every input has a non-empty array of its dtype and shape; all arrays (and ``labels``) have one length.

    Args:
        model: the model's config section.
        data: array name -> array.
        where: the data's source, for errors.

    Raises:
        PipelineError: the first array that does not fit, naming it.
    """
    lengths = {}
    for spec in input_specs(model):
        if spec.name not in data:
            raise PipelineError(f"{where} has no array {spec.name!r} (model.inputs; it has {', '.join(data)})")
        array = data[spec.name]
        if array.dtype != spec.dtype:
            raise PipelineError(f"{where}: array {spec.name!r} is {array.dtype}, model.inputs says {spec.dtype}")
        if array.ndim == 0:
            raise PipelineError(
                f"{where}: input {spec.name!r} is a scalar (shape []); every input's first axis is its batch of "
                "samples, so a graph with a scalar input cannot be batched"
            )
        if (
            array.ndim != len(spec.shape)
            or any(  # axis 0 counts samples, whatever batch the model fixes
                isinstance(d, int) and d != n for d, n in zip(spec.shape[1:], array.shape[1:], strict=False)
            )
        ):
            raise PipelineError(
                f"{where}: array {spec.name!r} has shape {list(array.shape)}, model.inputs says {list(spec.shape)}"
            )
        lengths[spec.name] = len(array)
    if LABELS in data:
        lengths[LABELS] = len(data[LABELS])
    empty = [name for name, n in lengths.items() if n == 0]
    if empty:
        raise PipelineError(f"{where}: array {empty[0]!r} is empty")
    if len(set(lengths.values())) != 1:
        shown = ", ".join(f"{k} {n}" for k, n in lengths.items())
        raise PipelineError(
            f"{where}: arrays differ in length ({shown}); every input's first axis is its batch of samples, so "
            "each array needs the same number of samples (a graph without a batch axis shared by all its inputs "
            "cannot be batched)"
        )


def synthetic(model: "DictConfig", split: str) -> dict[str, np.ndarray]:
    """Seeded random inputs for a model without data (``random_feed``: floats standard normal, integers 0 or 1)
    of ``SYNTHETIC[split]`` samples, also when the model fixes its batch (``feeds`` cuts them to it); no labels.

    Args:
        model: the model's config section.
        split: ``test`` or ``train``.

    Returns:
        dict[str, np.ndarray]: input name -> array.
    """
    from stages.core.profiles import random_feed

    specs = input_specs(model)
    shapes = {s.name: (SYNTHETIC[split], *axis_sizes(s, 1, model.dims)[1:]) for s in specs}  # N, whatever the batch
    return random_feed(shapes, {s.name: s.dtype for s in specs}, seed=list(SYNTHETIC).index(split))
