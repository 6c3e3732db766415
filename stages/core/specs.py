"""A model's interface: its inputs (names, shapes with dynamic axes, dtypes) and outputs, from ``cfg.model`` or,
when the config leaves them out (``model=onnx``), from the ONNX file itself."""

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.core.errors import PipelineError

if TYPE_CHECKING:
    from omegaconf import DictConfig


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

    def describe(self) -> str:
        """``[batch, 3, 224, 224] float32``."""
        return f"[{', '.join(str(d) for d in self.shape)}] {self.dtype}"


def input_specs(model: "DictConfig") -> list[InputSpec]:
    """The inputs declared in ``model.inputs``, or read from ``model.path`` when that is null.

    Args:
        model: the model's config section.

    Returns:
        list[InputSpec]: in the model's input order.

    Raises:
        PipelineError: an unknown dtype, naming its entry.
    """
    if model.inputs is None:
        return list(onnx_interface(model.path)[0])
    specs = []
    for i, item in enumerate(model.inputs):
        try:
            dtype = np.dtype(item.dtype)
        except TypeError as e:
            raise PipelineError(f"model.inputs[{i}].dtype: unknown dtype {item.dtype!r}") from e
        specs.append(InputSpec(item.name, tuple(item.shape), dtype))
    return specs


def output_names(model: "DictConfig", graph: str | None = None) -> list[str]:
    """The output names in ``model.outputs``; when that is null, read from the ONNX file ``graph`` (the stage's
    own model), else from ``model.path``.

    Args:
        model: the model's config section.
        graph: the ONNX file to read them from when ``model.outputs`` is null.

    Returns:
        list[str]: output names in order.
    """
    if model.outputs is None:
        return list(onnx_interface(str(graph or model.path))[1])
    return [o.name for o in model.outputs]


def output_dynamic_axes(model: "DictConfig") -> dict[str, dict[int, str]]:
    """Output name -> dynamic axes, from ``model.outputs`` (none when it is null).

    Args:
        model: the model's config section.

    Returns:
        dict: output name -> {axis: axis name}.
    """
    outputs = model.outputs or []
    return {o.name: {i: d for i, d in enumerate(o.shape) if isinstance(d, str)} for o in outputs}


def task_output(model: "DictConfig", graph: str | None = None) -> str:
    """The output the task metric reads: ``model.task.output``, or the first output when that is null.

    Args:
        model: the model's config section.
        graph: the ONNX file to read output names from when ``model.outputs`` is null.

    Returns:
        str: an output name.
    """
    return model.task.output or output_names(model, graph)[0]


def signature_shapes(forward: Any, specs: list[InputSpec]) -> tuple[Any, ...]:
    """torch.onnx.export's ``dynamic_shapes`` for ``forward``, shaped like its signature: one entry per positional
    parameter, and ``*args`` as one nested tuple. Each entry maps axis -> axis name (the exporter makes a name a
    dynamic dimension and keeps it in the graph); inputs without dynamic axes get None.

    Args:
        forward: the module's ``forward``.
        specs: the declared inputs, in order.

    Returns:
        tuple: one entry per positional parameter.

    Raises:
        PipelineError: ``forward`` takes fewer positional inputs than ``model.inputs`` declares.
    """
    import inspect

    shapes = [s.dynamic_axes or None for s in specs]
    out: list[Any] = []
    for param in inspect.signature(forward).parameters.values():
        taken = sum(len(x) if isinstance(x, tuple) else 1 for x in out)
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) and taken < len(shapes):
            out.append(shapes[taken])
        elif param.kind == param.VAR_POSITIONAL:
            out.append(tuple(shapes[taken:]))
    taken = sum(len(x) if isinstance(x, tuple) else 1 for x in out)
    if taken < len(shapes):
        raise PipelineError(
            f"model.inputs: {len(shapes)} inputs declared, but forward() takes {taken} positional arguments "
            f"({', '.join(s.name for s in specs[taken:])} left over)"
        )
    return tuple(out)


@functools.cache
def onnx_interface(path: str) -> tuple[tuple[InputSpec, ...], tuple[str, ...]]:
    """The graph inputs (without initializers) and output names of the ONNX file at ``path``.

    An axis with a symbolic name (``dim_param``) keeps it; an axis with neither a name nor a size is named
    ``<input>_<axis>``; sizes are ints.

    Args:
        path: the ONNX file.

    Returns:
        tuple: the inputs (``InputSpec``) and the output names.
    """
    found = io_spec(path)
    inputs = tuple(InputSpec(i["name"], tuple(i["shape"]), np.dtype(i["dtype"])) for i in found["inputs"])
    return inputs, tuple(o["name"] for o in found["outputs"])


def io_spec(path: str) -> dict[str, list[dict[str, Any]]]:
    """The ONNX file's interface as plain data, what an engine's manifest records and ``Engine.inputs``/``outputs``
    read: every input (initializers left out) and output with its name, numpy dtype and shape (a symbolic axis by
    its name, an axis with neither name nor size as ``<tensor>_<axis>``).

    Args:
        path: the ONNX file.

    Returns:
        dict: ``inputs`` and ``outputs``, each a list of ``{"name", "dtype", "shape"}``.
    """
    from onnx import helper

    from stages.core.onnx_io import load_onnx

    graph = load_onnx(path, check=False, weights=False).graph
    weights = {t.name for t in graph.initializer}

    def entry(value: Any) -> dict[str, Any]:
        tensor = value.type.tensor_type
        shape = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{value.name}_{axis}")
            for axis, d in enumerate(tensor.shape.dim)
        ]
        return {"name": value.name, "dtype": helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": shape}

    return {
        "inputs": [entry(v) for v in graph.input if v.name not in weights],
        "outputs": [entry(v) for v in graph.output],
    }


def check_against_file(given: list[InputSpec], path: str) -> None:
    """Every input in ``given`` (the config) must fit the ONNX file: names, dtypes, ranks and fixed sizes.

    Args:
        given: the inputs ``model.inputs`` declares.
        path: the ONNX file.

    Raises:
        PipelineError: the first input that does not fit, with what the file expects.
    """
    actual = {s.name: s for s in onnx_interface(path)[0]}
    if [s.name for s in given] != list(actual):
        raise PipelineError(f"model.inputs: names {[s.name for s in given]} given, {path} has {list(actual)}")
    for i, spec in enumerate(given):
        want = actual[spec.name]
        fits = spec.dtype == want.dtype and len(spec.shape) == len(want.shape)
        fits = fits and all(not isinstance(w, int) or g == w for g, w in zip(spec.shape, want.shape, strict=True))
        if not fits:
            raise PipelineError(
                f"model.inputs[{i}] {spec.name!r}: {spec.describe()} given, the model expects {want.describe()} "
                f"({path})"
            )


def axis_sizes(spec: InputSpec, batch: int, dims: Any) -> tuple[int, ...]:
    """A concrete shape of ``spec``: the first dynamic axis is the batch, others take ``model.dims``.

    Args:
        spec: one input.
        batch: the batch size.
        dims: ``model.dims``: dynamic axis name -> size.

    Returns:
        tuple[int, ...]: the shape.

    Raises:
        PipelineError: a dynamic axis ``dims`` has no size for.
    """
    shape = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            shape.append(dim)
        elif axis == 0:
            shape.append(batch)
        elif dim in dims:
            shape.append(int(dims[dim]))
        else:
            raise PipelineError(f"model.dims: no size for the dynamic axis {dim!r} of input {spec.name!r}")
    return tuple(shape)
