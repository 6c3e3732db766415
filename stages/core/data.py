"""Model recipes, weights and data: everything a stage needs to turn ``cfg.model`` into tensors."""

import functools
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.core.errors import PipelineError

if TYPE_CHECKING:
    from omegaconf import DictConfig

LABELS = "labels"


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, shape (strings are dynamic axes) and numpy dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: np.dtype

    @property
    def dynamic_axes(self) -> dict[int, str]:
        """Axis index -> axis name for every dynamic axis."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


def input_specs(model: "DictConfig") -> list[InputSpec]:
    """The inputs declared in ``model.inputs``."""
    specs = []
    for i, item in enumerate(model.inputs):
        try:
            dtype = np.dtype(item.dtype)
        except TypeError as e:
            raise PipelineError(f"model.inputs[{i}].dtype: unknown dtype {item.dtype!r}") from e
        specs.append(InputSpec(item.name, tuple(item.shape), dtype))
    return specs


def output_dynamic_axes(model: "DictConfig") -> dict[str, dict[int, str]]:
    """Output name -> dynamic axes, from ``model.outputs``."""
    return {o.name: {i: d for i, d in enumerate(o.shape) if isinstance(d, str)} for o in model.outputs}


def load_recipe(model: "DictConfig") -> ModuleType:
    """Import the recipe module named by ``model.recipe`` (a file path, so recipes may live anywhere)."""
    path = Path(model.recipe)
    if not path.is_file():
        options = sorted(p.stem for p in Path("conf/model").glob("*.yaml"))
        raise PipelineError(
            f"model.recipe: no such file {path} (model {model.name!r}); models in conf/model/: {', '.join(options)}"
        )
    return _import_file(path.resolve())


@functools.cache
def _import_file(path: Path) -> ModuleType:
    name = f"engineforge_recipe_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_model(model: "DictConfig") -> Any:
    """Build the recipe's architecture and load ``model.weights`` into it (``weights_only=True``), in eval mode.

    When ``model.weights`` names the recipe itself, the recipe's ``build()`` sets seeded weights (nothing to load).
    """
    import torch

    net = load_recipe(model).build()
    weights = Path(model.weights)
    if weights == Path(model.recipe):
        return net.eval()
    if not weights.is_file():
        raise PipelineError(f"model.weights: no such file {weights}: train it with `python -m models.train`")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise PipelineError(f"model.weights: cannot load {weights} ({type(e).__name__}: {e})") from e
    expected = net.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise PipelineError(f"model.weights: {weights} has no tensor for layer {key!r}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise PipelineError(
                f"model.weights: {weights} does not fit layer {key!r}: "
                f"shape {tuple(state[key].shape)} in the file, {tuple(tensor.shape)} in the model"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise PipelineError(f"model.weights: {weights} has tensor {unexpected[0]!r} that the model does not have")
    net.load_state_dict(state)
    return net.eval()


def load_dataset(model: "DictConfig", split: str) -> dict[str, np.ndarray]:
    """The recipe's ``split`` data, checked against ``model.inputs`` (names, dtypes, static dims, counts)."""
    try:
        data = load_recipe(model).dataset(split, **model.dims)
    except ValueError as e:  # recipes raise ValueError for a split or size they do not have
        raise PipelineError(f"model {model.name!r} ({model.recipe}) has no {split!r} data: {e}") from e
    counts = set()
    for spec in input_specs(model):
        if spec.name not in data:
            raise PipelineError(f"{split} data of model {model.name!r} has no array {spec.name!r} (model.inputs)")
        array = data[spec.name]
        if array.dtype != spec.dtype:
            raise PipelineError(f"{split} data array {spec.name!r} is {array.dtype}, model.inputs says {spec.dtype}")
        if array.ndim != len(spec.shape) or any(
            isinstance(d, int) and d != n for d, n in zip(spec.shape, array.shape, strict=False)
        ):
            raise PipelineError(
                f"{split} data array {spec.name!r} has shape {list(array.shape)}, model.inputs says {list(spec.shape)}"
            )
        counts.add(len(array))
    if LABELS in data:
        counts.add(len(data[LABELS]))
    if len(counts) != 1 or 0 in counts:
        raise PipelineError(f"{split} data of model {model.name!r} is empty or its arrays differ in length")
    return data


def feeds(model: "DictConfig", data: dict[str, np.ndarray], batch_size: int, limit: int = 0) -> list[dict]:
    """Split ``data`` into input feed dicts of ``batch_size`` samples (the last may be smaller)."""
    names = [s.name for s in input_specs(model)]
    total = len(data[names[0]]) if limit <= 0 else min(limit, len(data[names[0]]))
    return [{n: np.ascontiguousarray(data[n][i : i + batch_size]) for n in names} for i in range(0, total, batch_size)]


def batch_of(model: "DictConfig", data: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """One feed dict of exactly ``batch_size`` samples, repeating the data if it is shorter."""
    check_batch(model, batch_size)
    names = [s.name for s in input_specs(model)]
    index = np.arange(batch_size) % len(data[names[0]])
    return {n: np.ascontiguousarray(data[n][index]) for n in names}


def check_batch(model: "DictConfig", batch_size: int, key: str = "benchmark.batch_sizes") -> None:
    """A batch size must be positive and within ``model.max_batch``."""
    if not 1 <= batch_size <= model.max_batch:
        raise PipelineError(
            f"{key}: batch size {batch_size} is outside 1..{model.max_batch}, the limit of model "
            f"{model.name!r} (model.max_batch)"
        )
