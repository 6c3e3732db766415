"""export stage: the model (recipe or ``model.factory`` + weights, or an ONNX file) -> export/model.onnx, export.json.

PyTorch models go through torch.onnx.export (``export.exporter``: dynamo, TorchScript, or auto = dynamo and then
TorchScript where dynamo fails; dynamic axes from ``model.inputs``/``model.outputs``) into a folder of their own (the
weights inline, or past 2 GiB in ``model.onnx.data`` beside it: ``core.graph_files``), are checked against PyTorch on
eval samples in ONNX Runtime at a batch size other than the traced one (which also proves the batch axis is
dynamic) and again with every other dynamic axis at a second size (``core.second_size``). ``model.source=onnx``
skips the export (``core.given_onnx``).
"""

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core.artifacts import atomic_path, write_json
from stages.core.batches import feeds, fixed_batch
from stages.core.data import data_source, load_dataset
from stages.core.errors import PipelineError, first_line
from stages.core.exporters import ExportFailed, export_onnx
from stages.core.given_onnx import OLDEST_RUN, from_onnx
from stages.core.graph_files import graph_folder, save_onnx
from stages.core.model import SOURCES, check_forward, load_model, torch_outputs
from stages.core.onnx_io import compare_outputs, load_onnx, op_counts, ort_outputs
from stages.core.resources import resources
from stages.core.run import quiet_libraries, run_stage
from stages.core.second_size import check_axes
from stages.core.specs import input_specs, output_dynamic_axes, output_names, signature_shapes

STACK_TRACE = "pkg.torch.onnx.stack_trace"  # per-node metadata the dynamo exporter writes
SCRATCH = ".torch"  # where torch.onnx.export writes, inside the output folder: its file is re-saved, then removed
EXTERNAL_DATA = ("auto", "always")  # export.external_data


def strip_stack_traces(model: Any) -> None:
    """Drop the exporter's per-node ``pkg.torch.onnx.stack_trace`` metadata in place: it holds absolute paths of
    the Python installation and the recipe, so the same export from another clone or venv would differ in bytes."""
    for node in [*model.graph.node, *(n for f in model.functions for n in f.node)]:
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


def from_pytorch(cfg: DictConfig, data: dict[str, np.ndarray]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """torch.onnx.export of the model into ``paths.onnx``; returns the ONNX model, the PyTorch-vs-ORT check and
    which exporter wrote it (``exporter``, and ``exporter_failed``: those tried before it, with why)."""
    import torch

    model, export = cfg.model, cfg.export
    net = load_model(model)
    check_forward(net, model)
    quiet_libraries()  # importing torch and the user's code resets logging
    example = feeds(model, data, export.example_batch)[0]
    specs = input_specs(model)
    names = output_names(model) if model.outputs is not None else None  # null: the exporter names them
    axes = {s.name: s.dynamic_axes for s in specs} | output_dynamic_axes(model)
    dynamic = {
        "dynamo": {"dynamic_shapes": signature_shapes(net.forward, specs)},
        "torchscript": {"dynamic_axes": axes},
    }
    with atomic_path(graph_folder(cfg.paths.exported, cfg.paths.onnx), directory=True) as folder:
        tmp = folder / Path(cfg.paths.onnx).name
        try:
            used = export_onnx(
                net,
                tuple(torch.from_numpy(a) for a in example.values()),
                folder / SCRATCH / tmp.name,
                export.exporter,
                dynamic,
                input_names=[s.name for s in specs],
                output_names=names,
                opset_version=export.opset,
                optimize=export.optimize,
            )
        except ExportFailed as e:
            dynamic_inputs = ", ".join(f"{s.name}{list(s.shape)}" for s in specs if s.dynamic_axes) or "none"
            raise PipelineError(
                f"torch.onnx.export failed for model {model.name!r}: {first_line(e, 400)} (dynamic axes in "
                f"model.inputs: {dynamic_inputs}; an axis the model fixes must be a number there)"
            ) from e
        onnx_model = load_onnx(folder / SCRATCH / tmp.name)
        shutil.rmtree(folder / SCRATCH)
        names = names or [o.name for o in onnx_model.graph.output]
        strip_stack_traces(onnx_model)
        save_onnx(onnx_model, tmp, external=export.external_data == "always")
        check_feeds = feeds(model, data, export.example_batch + 1, limit=export.check.samples)
        want, got = torch_outputs(net, check_feeds, names), ort_outputs(tmp, check_feeds)
        check = checked_against_pytorch(want, got, export.check)
        declared = [o.SerializeToString() for o in onnx_model.graph.output]
        checked = check_axes(lambda f: torch_outputs(net, f, names), onnx_model, tmp, cfg, used, check_feeds[0])
        if declared != [o.SerializeToString() for o in onnx_model.graph.output]:  # an output dim named its axis
            save_onnx(onnx_model, tmp, external=export.external_data == "always")
    samples = sum(len(next(iter(f.values()))) for f in check_feeds)
    how = {"exporter": used["exporter"], "exporter_failed": used["failed"], "axes_checked": checked}
    return onnx_model, {"against": "pytorch", "samples": samples, "outputs": check}, how


def checked_against_pytorch(want: dict, got: dict, check: DictConfig) -> dict[str, Any]:
    """ONNX Runtime's outputs against PyTorch's by ``export.check``; the first that differs is the user's one line.

    Args:
        want: output name -> PyTorch's outputs.
        got: output name -> ONNX Runtime's, on the same samples.
        check: ``export.check`` (atol, rtol).

    Returns:
        dict: ``compare_outputs``'s report.
    """
    report = compare_outputs(want, got, check.atol, check.rtol)
    failed = [name for name, c in report.items() if not c["passed"]]
    if failed:
        diff = np.abs(got[failed[0]].astype(np.float64) - want[failed[0]])
        where = [int(i) for i in np.unravel_index(np.nanargmax(diff), diff.shape)]
        raise PipelineError(
            f"export check: ONNX Runtime output {failed[0]!r} differs from PyTorch by up to "
            f"{report[failed[0]]['max_abs']:.3g} at index {where} (export.check.atol={check.atol}, "
            f"rtol={check.rtol})"
        )
    return report


def main(cfg: DictConfig) -> str:
    """Export (or take) ``cfg.model`` as ``paths.onnx`` and record what was done in ``paths.export_report``."""
    model, export = cfg.model, cfg.export
    if model.source not in SOURCES:
        raise PipelineError(f"model.source: {model.source!r} is not one of {', '.join(SOURCES)}")
    if export.opset < 18:
        raise PipelineError(f"export.opset: {export.opset} is below 18, the lowest torch 2.13's exporter writes")
    if export.external_data not in EXTERNAL_DATA:
        raise PipelineError(f"export.external_data: {export.external_data!r} is not one of {', '.join(EXTERNAL_DATA)}")
    if model.source == "onnx" and not (model.path and str(model.path).endswith(".onnx")):
        raise PipelineError(f"model.path: {model.path!r} is not an .onnx file; set -S model.path=PATH.onnx")
    if model.source == "onnx" and not Path(model.path).is_file():
        raise PipelineError(f"model.path: no such file {model.path}")
    data = load_dataset(model, "test")
    build = from_onnx if model.source == "onnx" else from_pytorch
    onnx_model, check, how = build(cfg, data)
    write_json(
        cfg.paths.export_report,
        {
            "model": model.name,
            "source": model.source,
            "opset": max((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), default=None),
            **how,  # the exporter that wrote the file (None: a given ONNX file), and those tried before it
            "torch": sys.modules["torch"].__version__ if model.source != "onnx" else None,  # imported by the export
            "inputs": {s.name: list(s.shape) for s in input_specs(model)},
            "fixed_batch": fixed_batch(model),  # None: dynamic; else the one batch every stage runs
            "data": data_source(model, "test"),
            "nodes": len(onnx_model.graph.node),
            "ops": op_counts(onnx_model),
            "check": check,
            "resources": resources(),  # this run's wall time and peak memory
        },
    )
    fixed = fixed_batch(model)
    said = f"; the graph fixes batch {fixed}: every stage runs batch {fixed}" if fixed is not None else ""
    if model.source == "onnx":
        old = check["opset_upgraded_from"]
        said += f"; opset {old} upgraded to {export.opset} (ONNX Runtime runs none below {OLDEST_RUN})" if old else ""
        return f"{model.path} (torch export skipped) -> {cfg.paths.onnx} ({len(onnx_model.graph.node)} nodes{said})"
    worst = max(c["max_abs"] for c in check["outputs"].values())
    return f"{model.name} -> {cfg.paths.onnx} ({len(onnx_model.graph.node)} nodes, max |PyTorch-ORT| {worst:.2g}{said})"


if __name__ == "__main__":
    run_stage("export", main)
