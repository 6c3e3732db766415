"""Every dynamic axis an export declares, run at a second size: a graph whose exporter unrolled a loop or baked a
shape at the example's size declares the axis dynamic and still runs only at that size (a selective scan unrolled
by the TorchScript exporter; a recurrent tagger whose output says ``[batch, 24, 9]``). Every later check runs at
``model.dims``, so this is the one place that can tell: PyTorch and ONNX Runtime on an eval batch cut to half
the size (2 for an axis of 1), outputs compared at ``SLACK`` times the export check's tolerances.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core.errors import PipelineError, first_line
from stages.core.onnx_io import compare_outputs, ort_outputs
from stages.core.specs import input_specs

SLACK = 10.0  # cut inputs (a sentence without its end) reach values whole ones do not; a wrong graph is far off


class Unchecked(Exception):
    """The axis could not be checked at its second size: why, in a few words."""


def second_size(size: int) -> int:
    """The other size an axis is checked at: half of it, or 2 for an axis of 1.

    Args:
        size: the axis's size in ``model.dims``.

    Returns:
        int: the second size.
    """
    return size // 2 if size >= 2 else 2


def resized(sample: dict[str, np.ndarray], model: Any, axis: str, size: int) -> dict[str, np.ndarray]:
    """``sample`` with every dimension named ``axis`` cut to its first ``size`` entries (or repeated up to them):
    real inputs keep their structure (token ids with their mask, an image's content), which random ones do not.

    Args:
        sample: input name -> array at ``model.dims``.
        model: ``cfg.model`` (which dimension of which input is ``axis``).
        axis: the axis name.
        size: its new size.

    Returns:
        dict: input name -> array.
    """
    out = {}
    for spec in input_specs(model):
        array = sample[spec.name]
        for index, dim in enumerate(spec.shape):
            if dim == axis:
                array = np.take(array, np.arange(size) % array.shape[index], axis=index)
        out[spec.name] = np.ascontiguousarray(array)
    return out


def dynamic_axes(model: Any) -> list[str]:
    """The names of every dynamic axis of ``model.inputs`` but the batch (the first axis), in input order.

    Args:
        model: ``cfg.model``.

    Returns:
        list[str]: axis names.
    """
    found: list[str] = []
    for spec in input_specs(model):
        found += [d for d in spec.shape[1:] if isinstance(d, str) and d not in found]
    return found


def problem_at(
    torch_run: Callable[[list[dict[str, np.ndarray]]], dict[str, np.ndarray]],
    onnx_model: Any,
    path: str,
    model: Any,
    check: Any,
    axis: str,
    sample: dict[str, np.ndarray],
) -> str | None:
    """What goes wrong with the graph at ``path`` when ``axis`` takes its second size, or None when it runs and
    matches PyTorch (then an output dimension the exporter fixed at the example's size but that follows the axis is
    named after it in ``onnx_model``: ``relabel``).

    Args:
        torch_run: runs the PyTorch model over feeds, output name -> array.
        onnx_model: the exported ModelProto (its declared output shapes).
        path: the exported file.
        model: ``cfg.model``.
        check: ``export.check`` (atol, rtol).
        axis: the dynamic axis.
        sample: one batch of eval inputs at ``model.dims`` (cut or repeated along ``axis`` to its second size).

    Returns:
        str | None: the problem in a few words.

    Raises:
        Unchecked: PyTorch itself cannot run that size (nothing to hold the graph to).
    """
    size = second_size(int(model.dims[axis]))
    feed = resized(sample, model, axis, size)
    try:
        want = torch_run([feed])
    except Exception as e:  # the model's own code refuses the size (any type): nothing to hold the graph to
        raise Unchecked(f"PyTorch cannot run {axis}={size}: {first_line(e, 160)}") from e
    try:
        got = ort_outputs(path, [feed])
    except PipelineError as e:  # ONNX Runtime's refusal is the finding
        return f"ONNX Runtime fails at {axis}={size}: {first_line(e, 200)}"
    try:
        report = compare_outputs(want, got, check.atol * SLACK, check.rtol * SLACK)
    except PipelineError as e:  # another shape or a missing output
        return f"{e} at {axis}={size}"
    failed = [name for name, r in report.items() if not r["passed"]]
    if failed:
        return f"output {failed[0]!r} differs from PyTorch by {report[failed[0]]['max_abs']:.3g} at {axis}={size}"
    relabel(onnx_model, got, axis, int(model.dims[axis]))
    return None


def relabel(onnx_model: Any, got: dict[str, np.ndarray], axis: str, size: int) -> None:
    """Name ``axis``, in place, in each output dimension the exporter wrote as the example's ``size`` but that
    follows the axis (it has another size in ``got``, the outputs at the second size, computed right): a recurrent
    tagger exported by dynamo declares ``[batch, 32, 9]`` for what is ``[batch, seq, 9]``.

    Args:
        onnx_model: the exported ModelProto.
        got: output name -> its value at the axis's second size.
        axis: the axis's name.
        size: its size in ``model.dims``.
    """
    for output in onnx_model.graph.output:
        actual = got[output.name].shape if output.name in got else ()
        for dim, length in zip(output.type.tensor_type.shape.dim, actual, strict=False):
            if dim.HasField("dim_value") and dim.dim_value == size and length != size:
                dim.dim_param = axis  # clears dim_value: the two are a oneof


def check_axes(
    torch_run: Callable[[list], dict[str, np.ndarray]],
    onnx_model: Any,
    path: Path,
    cfg: DictConfig,
    used: dict,
    sample: dict[str, np.ndarray],
) -> dict[str, int | str]:
    """Run every dynamic axis of ``model.inputs`` at its second size (``second_size.problem_at``); a graph that only
    runs at the example's size is refused in one line (naming the exporter that was refused before it, if any).

    Args:
        torch_run: runs the PyTorch model over feeds.
        onnx_model: the exported ModelProto.
        path: the exported file.
        cfg: the stage's params.
        used: ``export_onnx``'s record (the exporter, those refused before it).
        sample: one eval batch at ``model.dims``.

    Returns:
        dict: axis -> the second size it was checked at, or why it could not be.
    """
    checked: dict[str, int | str] = {}
    for axis in dynamic_axes(cfg.model):
        try:
            problem = problem_at(torch_run, onnx_model, str(path), cfg.model, cfg.export.check, axis, sample)
        except Unchecked as e:
            checked[axis] = str(e)
            continue
        size = int(cfg.model.dims[axis])
        if problem:
            problem = problem.replace(str(path), cfg.paths.onnx)  # the file's name, not its temporary one
            fix = f"write {axis} as the number {size} in model.inputs to export it static"
            refused = "".join(f"{t['exporter']} refused the model ({t['error'][:200]}); " for t in used["failed"])
            raise PipelineError(
                f"export check: {refused}the {used['exporter']} graph declares {axis} dynamic but only runs at "
                f"{axis}={size} ({problem}): {fix}"
            )
        checked[axis] = second_size(size)
    return checked
