"""The user's own data: ``model.data.<role>`` ``.npz`` files (never unpickled) and a ``model.data.factory`` that
returns arrays, a Dataset or a DataLoader."""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.core.errors import PipelineError
from stages.core.specs import input_specs

if TYPE_CHECKING:
    from omegaconf import DictConfig

LABELS = "labels"  # the optional array of class labels beside the inputs


def given(model: "DictConfig", role: str) -> str | None:
    """``model.data.<role>``, or None when it is unset (``???``) or null.

    Args:
        model: the model's config section.
        role: ``eval`` or ``calibration``.

    Returns:
        str | None: the configured path.
    """
    from omegaconf import OmegaConf

    data = model.get("data")
    if data is None or OmegaConf.is_missing(data, role) or data.get(role) is None:
        return None
    return str(data[role])


def user_data(model: "DictConfig", role: str) -> tuple[dict[str, np.ndarray], str] | None:
    """(arrays, where from) of ``role`` (eval or calibration) from the user: ``model.data.<role>`` (.npz), else
    the data factory; None when neither gives any.

    Args:
        model: the model's config section.
        role: ``eval`` or ``calibration``.

    Returns:
        tuple | None: the arrays and their source.
    """
    path = given(model, role)
    if path:
        return read_npz(path, f"model.data.{role}"), f"model.data.{role} {path}"
    factory = model.get("data", {}).get("factory")
    made = from_factory(model, role) if factory else None
    return None if made is None else (made, f"model.data.factory {factory}({role!r})")


def from_factory(model: "DictConfig", role: str) -> dict[str, np.ndarray] | None:
    """``model.data.factory(role)`` as arrays: it may return a dict of arrays (named as the inputs, optionally
    ``labels``), a ``torch.utils.data.Dataset`` of ``(inputs..., [label])`` samples, a ``DataLoader`` of such
    batches, or None for a role it has no data for (calibration then uses the eval data).

    Args:
        model: the model's config section.
        role: ``eval`` or ``calibration``.

    Returns:
        dict[str, np.ndarray] | None: array name -> array.

    Raises:
        PipelineError: the factory returned something else.
    """
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
    """The arrays of an ``.npz`` file; pickled objects are refused (``allow_pickle=False``).

    Args:
        path: the file.
        key: the config key that named it, for errors.

    Returns:
        dict[str, np.ndarray]: array name -> array.

    Raises:
        PipelineError: the file is missing, unreadable or holds pickled objects.
    """
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
