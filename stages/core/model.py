"""The PyTorch model behind ``cfg.model``: a built-in recipe's ``build()`` or the user's ``model.factory``, with
``model.weights`` loaded safely (``torch.load(weights_only=True)``) and checked layer by layer."""

import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.core.errors import PipelineError, first_line
from stages.core.specs import axis_sizes, input_specs

if TYPE_CHECKING:
    from omegaconf import DictConfig

SOURCES = ("recipe", "factory", "onnx")  # model.source: how the export stage gets the graph


def load_recipe(model: "DictConfig") -> ModuleType:
    """Import the recipe module at ``model.code`` (a file path, so recipes may live anywhere).

    Args:
        model: the model's config section.

    Returns:
        ModuleType: the recipe, with ``build()`` and ``dataset(split)``.
    """
    path = Path(model.code)
    if not path.is_file():
        options = sorted(p.stem for p in Path("conf/model").glob("*.yaml"))
        raise PipelineError(
            f"model.code: no such file {path} (model {model.name!r}); models in conf/model/: {', '.join(options)}"
        )
    return _import_file(path.resolve())


@functools.cache
def _import_file(path: Path) -> ModuleType:
    name = f"engineforge_recipe_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PipelineError(f"model.code: {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_function(spec: str | None, key: str, code: str) -> Any:
    """The function ``spec`` (``package.module:function``) of config key ``key``, imported from the repository
    root; its module must live in ``code`` (``model.code``) so that DVC reruns what it feeds when the code changes.

    Args:
        spec: ``package.module:function``.
        key: the config key that set it, for errors.
        code: ``model.code``, the file or folder the module must live in.

    Returns:
        Callable: the function.

    Raises:
        PipelineError: unset, malformed, not importable, outside ``code``, or not a function.
    """
    if not spec:
        raise PipelineError(f"{key} is not set: set it to package.module:function")
    module_name, _, function = str(spec).partition(":")
    if not module_name or not function:
        raise PipelineError(f"{key}: {spec!r} is not package.module:function")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # the repository root, as `python -m` has it
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise PipelineError(f"{key}: cannot import {module_name} ({e})") from e
    if not callable(getattr(module, function, None)):
        raise PipelineError(f"{key}: module {module_name} has no function {function!r}")
    folder, source = Path(code).resolve(), Path(getattr(module, "__file__", "") or "").resolve()
    if source != folder and not source.is_relative_to(folder):
        raise PipelineError(
            f"model.code: {code} does not hold {module_name} ({source}, {key}): set it to that file or its folder, "
            "so DVC reruns the stages when the code changes"
        )
    return getattr(module, function)


def load_factory(model: "DictConfig") -> Any:
    """The model factory ``model.factory`` (see ``import_function``).

    Args:
        model: the model's config section (``source: factory``).

    Returns:
        Callable: returns an ``nn.Module`` when called with no arguments.
    """
    return import_function(model.factory, "model.factory", model.code)


def build_module(model: "DictConfig") -> Any:
    """The untrained (or recipe-seeded) ``torch.nn.Module`` of ``model``.

    Args:
        model: the model's config section.

    Returns:
        torch.nn.Module: not yet loaded with weights.
    """
    import torch

    if model.source == "recipe":
        return load_recipe(model).build()
    if model.source != "factory":
        raise PipelineError(f"model.source: {model.source!r} has no PyTorch model; one of {', '.join(SOURCES[:2])}")
    net = load_factory(model)()
    if not isinstance(net, torch.nn.Module):
        raise PipelineError(f"model.factory: {model.factory} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def load_model(model: "DictConfig") -> Any:
    """Build the model and load ``model.weights`` into it (``weights_only=True``), in eval mode.

    When ``model.weights`` names the code itself, ``build()`` (or the factory) sets the weights: nothing to load.

    Args:
        model: the model's config section.

    Returns:
        torch.nn.Module: in eval mode.

    Raises:
        PipelineError: missing weights, a damaged or pickled file, or a layer whose shape does not fit.
    """
    import torch

    net = build_module(model)
    weights = Path(model.weights)
    if weights == Path(model.code):
        return net.eval()
    if not weights.is_file():
        hint = "train it with `python -m engineforge.train`" if model.source == "recipe" else "set model.weights"
        raise PipelineError(f"model.weights: no such file {weights}: {hint}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged or pickled-object file
        raise PipelineError(f"model.weights: cannot load {weights} ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise PipelineError(f"model.weights: {weights} holds a {type(state).__name__}, not a state_dict")
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


def check_forward(net: Any, model: "DictConfig") -> None:
    """Run ``net`` once on zeros of the shapes and dtypes in ``model.inputs``: a config that does not fit the
    model becomes one line.

    Args:
        net: the model.
        model: the model's config section.

    Raises:
        PipelineError: the forward pass failed, naming the inputs given.
    """
    import torch

    specs = input_specs(model)
    example = [torch.zeros(axis_sizes(s, 2, model.dims), dtype=getattr(torch, s.dtype.name)) for s in specs]
    try:
        with torch.inference_mode():
            net(*example)
    except Exception as e:  # whatever forward() raises on inputs it cannot take
        given = ", ".join(f"{s.name} {s.describe()}" for s in specs)
        raise PipelineError(f"model.inputs: the model does not take {given}: {first_line(e)}") from e


def torch_outputs(
    net: Callable[..., Any], batches: list[dict[str, np.ndarray]], names: list[str]
) -> dict[str, np.ndarray]:
    """Run the PyTorch model over ``batches``; return each named output concatenated.

    Args:
        net: the model (eval mode).
        batches: input feeds, in the model's input order.
        names: its output names, in its outputs' order.

    Returns:
        dict: output name -> outputs over every batch.
    """
    import torch

    runs = []
    with torch.inference_mode():
        for feed in batches:
            out = net(*(torch.from_numpy(a) for a in feed.values()))
            runs.append(out if isinstance(out, tuple | list) else (out,))
    return {name: np.concatenate([r[i].numpy() for r in runs]) for i, name in enumerate(names)}
