"""export stage: model recipe + weights -> model.onnx (torch.onnx.export, one self-contained file), export.json.

Dynamic axes come from ``model.inputs``/``model.outputs``; the export is checked against PyTorch on real eval
samples in ONNX Runtime at a batch size other than the traced one, which also proves the batch axis is dynamic.
"""

import contextlib
import io
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core.artifacts import atomic_path, write_json
from stages.core.data import feeds, input_specs, load_dataset, load_model, output_dynamic_axes
from stages.core.errors import PipelineError
from stages.core.onnx_io import compare_outputs, load_onnx, op_counts, ort_outputs
from stages.core.run import quiet_libraries, run_stage

STACK_TRACE = "pkg.torch.onnx.stack_trace"  # per-node metadata the dynamo exporter writes


def torch_outputs(net: object, batches: list[dict[str, np.ndarray]], names: list[str]) -> dict[str, np.ndarray]:
    """Run the PyTorch model over ``batches``; return each named output concatenated."""
    import torch

    runs = []
    with torch.inference_mode():
        for feed in batches:
            out = net(*(torch.from_numpy(a) for a in feed.values()))
            runs.append(out if isinstance(out, tuple | list) else (out,))
    return {name: np.concatenate([r[i].numpy() for r in runs]) for i, name in enumerate(names)}


def strip_stack_traces(model: Any) -> None:
    """Drop the exporter's per-node ``pkg.torch.onnx.stack_trace`` metadata in place: it holds absolute paths of
    the Python installation and the recipe, so the same export from another clone or venv would differ in bytes."""
    for node in [*model.graph.node, *(n for f in model.functions for n in f.node)]:
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


def main(cfg: DictConfig) -> str:
    """Export ``cfg.model`` to ``paths.onnx`` and record the check in ``paths.export_report``."""
    import onnx
    import torch

    quiet_libraries()
    model, export = cfg.model, cfg.export
    if export.opset < 18:
        raise PipelineError(f"export.opset: {export.opset} is below 18, the lowest torch 2.13's exporter writes")
    net = load_model(model)
    data = load_dataset(model, "test")
    example = feeds(model, data, export.example_batch)[0]
    specs = input_specs(model)
    output_names = [o.name for o in model.outputs]
    dynamic_axes = {s.name: s.dynamic_axes for s in specs} | output_dynamic_axes(model)
    with atomic_path(cfg.paths.onnx) as tmp:
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                torch.onnx.export(
                    net,
                    tuple(torch.from_numpy(a) for a in example.values()),
                    str(tmp),
                    input_names=[s.name for s in specs],
                    output_names=output_names,
                    dynamic_axes={k: v for k, v in dynamic_axes.items() if v},
                    opset_version=export.opset,
                    dynamo=export.dynamo,
                    optimize=export.optimize,
                    external_data=False,
                )
        except Exception as e:  # the exporter raises many types; its log says why
            detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise PipelineError(f"torch.onnx.export failed for model {model.name!r}: {detail}") from e
        onnx_model = load_onnx(tmp)
        strip_stack_traces(onnx_model)
        onnx.save(onnx_model, str(tmp))
        check_feeds = feeds(model, data, export.example_batch + 1, limit=export.check.samples)
        check = compare_outputs(
            torch_outputs(net, check_feeds, output_names),
            ort_outputs(tmp, check_feeds),
            export.check.atol,
            export.check.rtol,
        )
        failed = [name for name, c in check.items() if not c["passed"]]
        if failed:
            raise PipelineError(
                f"export check: ONNX Runtime output {failed[0]!r} differs from PyTorch by up to "
                f"{check[failed[0]]['max_abs']:.3g} (export.check.atol={export.check.atol}, rtol={export.check.rtol})"
            )
    write_json(
        cfg.paths.export_report,
        {
            "model": model.name,
            "opset": export.opset,
            "dynamo": export.dynamo,
            "torch": torch.__version__,
            "inputs": {s.name: list(s.shape) for s in specs},
            "nodes": len(onnx_model.graph.node),
            "ops": op_counts(onnx_model),
            "check": {"samples": sum(len(next(iter(f.values()))) for f in check_feeds), "outputs": check},
        },
    )
    worst = max(c["max_abs"] for c in check.values())
    return f"{model.name} -> {cfg.paths.onnx} ({len(onnx_model.graph.node)} nodes, max |PyTorch-ORT| {worst:.2g})"


if __name__ == "__main__":
    run_stage("export", main)
