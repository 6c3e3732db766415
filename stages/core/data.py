"""Eval and calibration data for ``cfg.model``: a recipe's splits, the user's ``.npz`` files, or seeded random
inputs when a model comes without data; checked against the model's inputs, and cut into feed dicts."""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.core.errors import PipelineError
from stages.core.model import load_recipe
from stages.core.specs import axis_sizes, input_specs

if TYPE_CHECKING:
    from omegaconf import DictConfig

LABELS = "labels"
ROLES = {"test": "eval", "train": "calibration"}  # a recipe's split -> the model.data key that replaces it
SYNTHETIC = {"test": 128, "train": 512}  # samples of seeded random data, per split (512: the calibration default)


def given(model: "DictConfig", role: str) -> str | None:
    """``model.data.<role>``, or None when it is unset (``???``) or null."""
    from omegaconf import OmegaConf

    data = model.get("data")
    if data is None or OmegaConf.is_missing(data, role) or data.get(role) is None:
        return None
    return str(data[role])


def data_source(model: "DictConfig", split: str) -> str:
    """Where ``split`` data comes from, for reports (the order ``load_dataset`` tries): a file, the data factory, a
    recipe split, or seeded random inputs."""
    role = ROLES.get(split, split)
    factory = model.get("data", {}).get("factory")
    own, fallback = given(model, role), given(model, "eval") if role == "calibration" else None
    if own or (fallback and not factory):
        return str(own or fallback)
    if factory:
        return f"{factory}({role!r})"
    if model.source == "recipe":
        return f"{model.code}, {split} split"
    return f"seeded random inputs (no model.data.{role})"


def is_synthetic(model: "DictConfig", split: str) -> bool:
    """True when ``split`` data is seeded random, not real samples."""
    return data_source(model, split).startswith("seeded random")


def load_dataset(model: "DictConfig", split: str) -> dict[str, np.ndarray]:
    """The ``split`` (``test``: eval, ``train``: calibration) data of ``model``, checked against its inputs.

    ``model.data.eval``/``.calibration`` (``.npz``) win, then ``model.data.factory``; calibration falls back to
    the eval data; then the recipe's split; a model with none gets seeded random inputs (``data_source`` says so).
    """
    role = ROLES.get(split, split)
    found = user_data(model, role) or (user_data(model, "eval") if role == "calibration" else None)
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


def user_data(model: "DictConfig", role: str) -> tuple[dict[str, np.ndarray], str] | None:
    """(arrays, where from) of ``role`` (eval or calibration) from the user: ``model.data.<role>`` (.npz), else
    ``model.data.factory(role)``; None when neither gives any."""
    path = given(model, role)
    if path:
        return read_npz(path, f"model.data.{role}"), f"model.data.{role} {path}"
    factory = model.get("data", {}).get("factory")
    made = from_factory(model, role) if factory else None
    return None if made is None else (made, f"model.data.factory {factory}({role!r})")


def from_factory(model: "DictConfig", role: str) -> dict[str, np.ndarray] | None:
    """``model.data.factory(role)`` as arrays: it may return a dict of arrays (named as the inputs, optionally
    ``labels``), a ``torch.utils.data.Dataset`` of ``(inputs..., [label])`` samples, a ``DataLoader`` of such
    batches, or None for a role it has no data for (calibration then uses the eval data)."""
    from stages.core.model import import_function

    key = "model.data.factory"
    made = import_function(model.data.factory, key, model.code)(role)
    if made is None or isinstance(made, dict):
        return None if made is None else {k: _array(v) for k, v in made.items()}
    import torch

    names = [s.name for s in input_specs(model)]
    join: Callable[..., np.ndarray]
    if isinstance(made, torch.utils.data.DataLoader):
        items, join = list(made), np.concatenate
    elif hasattr(made, "__getitem__") and hasattr(made, "__len__"):
        items, join = [made[i] for i in range(len(made))], np.stack
    else:
        raise PipelineError(f"{key}({role!r}) returned {type(made).__name__}: return a dict of arrays or a Dataset")
    columns = list(zip(*(item if isinstance(item, tuple | list) else (item,) for item in items), strict=True))
    if len(columns) not in (len(names), len(names) + 1):
        raise PipelineError(f"{key}({role!r}): items have {len(columns)} parts; expected ({', '.join(names)}[, label])")
    data = {name: join([_array(x) for x in column]) for name, column in zip(names, columns, strict=False)}
    if len(columns) > len(names):
        data[LABELS] = join([_array(x) for x in columns[-1]])
    return data


def _array(value: Any) -> np.ndarray:
    """A tensor, array or number as a numpy array."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def read_npz(path: str, key: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file; pickled objects are refused (``allow_pickle=False``)."""
    if not Path(path).is_file():
        raise PipelineError(f"{key}: no such file {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise PipelineError(f"{key}: {path} holds pickled objects; refused (save plain arrays)") from e
        raise PipelineError(f"{key}: {path} is not a readable .npz file ({e})") from e
    except Exception as e:  # zipfile.BadZipFile, OSError, EOFError for a damaged file
        raise PipelineError(f"{key}: {path} is not a readable .npz file ({type(e).__name__}: {e})") from e


def check_data(model: "DictConfig", data: dict[str, np.ndarray], where: str) -> None:
    """Every input has a non-empty array of its dtype and shape; all arrays (and ``labels``) have one length."""
    lengths = {}
    for spec in input_specs(model):
        if spec.name not in data:
            raise PipelineError(f"{where} has no array {spec.name!r} (model.inputs; it has {', '.join(data)})")
        array = data[spec.name]
        if array.dtype != spec.dtype:
            raise PipelineError(f"{where}: array {spec.name!r} is {array.dtype}, model.inputs says {spec.dtype}")
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
        raise PipelineError(f"{where}: arrays differ in length ({', '.join(f'{k} {n}' for k, n in lengths.items())})")


def synthetic(model: "DictConfig", split: str) -> dict[str, np.ndarray]:
    """Seeded random inputs for a model without data (``random_feed``: floats standard normal, integers 0 or 1)
    of ``SYNTHETIC[split]`` samples, also when the model fixes its batch (``feeds`` cuts them to it); no labels."""
    from stages.core.profiles import random_feed

    specs = input_specs(model)
    shapes = {s.name: (SYNTHETIC[split], *axis_sizes(s, 1, model.dims)[1:]) for s in specs}  # N, whatever the batch
    return random_feed(shapes, {s.name: s.dtype for s in specs}, seed=list(SYNTHETIC).index(split))


def fixed_batch(model: "DictConfig") -> int | None:
    """The batch size the model's graph fixes (an int first axis of an input), or None when it is dynamic."""
    return next((s.shape[0] for s in input_specs(model) if s.shape and isinstance(s.shape[0], int)), None)


def feeds(model: "DictConfig", data: dict[str, np.ndarray], batch_size: int, limit: int = 0) -> list[dict]:
    """Split ``data`` into input feed dicts of ``batch_size`` samples (the last may be smaller). A model that fixes
    its batch gets batches of exactly that size; samples that do not fill a last one are left out."""
    names = [s.name for s in input_specs(model)]
    total = len(data[names[0]]) if limit <= 0 else min(limit, len(data[names[0]]))
    fixed = fixed_batch(model)
    if fixed is not None:
        batch_size, total = fixed, total - total % fixed
        if total == 0:
            raise PipelineError(f"model {model.name!r} takes batches of {fixed}; its data has fewer samples")
    return [{n: np.ascontiguousarray(data[n][i : i + batch_size]) for n in names} for i in range(0, total, batch_size)]


def batch_of(model: "DictConfig", data: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """One feed dict of exactly ``batch_size`` samples, repeating the data if it is shorter (callers check the
    size against the model first: ``check_batch``)."""
    names = [s.name for s in input_specs(model)]
    index = np.arange(batch_size) % len(data[names[0]])
    return {n: np.ascontiguousarray(data[n][index]) for n in names}


def check_batch(model: "DictConfig", batch_size: int, key: str) -> None:
    """A batch size must be positive, within ``model.max_batch`` and fit a fixed batch axis; errors name ``key``."""
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
