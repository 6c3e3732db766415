"""simplify stage: model.onnx -> model.sim.onnx (onnx-simplifier), simplify.json (node counts, output check).

Simplifying is an optimisation: where onnx-simplifier cannot take a graph (an old IR it refuses, an operator it
cannot fold, a result it cannot validate), the exported graph goes on unchanged and the stage's line says why.
A change of outputs beyond ``export.check`` is still an error: a simplifier that breaks a model is not skipped.
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stages.core.artifacts import write_json
from stages.core.batches import feeds
from stages.core.data import load_dataset
from stages.core.errors import PipelineError, first_line
from stages.core.graph_files import is_external, write_graph
from stages.core.onnx_io import compare_outputs, load_onnx, op_counts, ort_outputs
from stages.core.resources import resources
from stages.core.run import run_stage


def simplified(original: Any, cfg: DictConfig) -> tuple[Any, str | None]:
    """onnx-simplifier's result for ``original``, or ``original`` itself and why it could not be simplified.

    Args:
        original: the exported ModelProto.
        cfg: the stage's params (``simplify``, ``paths.onnx``).

    Returns:
        tuple: the graph to go on with, and None or the one-line reason simplifying was skipped.
    """
    import onnxsim

    try:
        result, ok = onnxsim.simplify(
            original,
            check_n=0,
            perform_optimization=cfg.simplify.optimize,
            skipped_optimizers=list(cfg.simplify.skipped_optimizers) or None,
        )
    except Exception as e:  # onnxsim raises RuntimeError/ValueError/EncodeError from its C++ core and protobuf
        return original, f"onnx-simplifier {onnxsim.__version__} cannot take the graph: {first_line(e, 200)}"
    if not ok:
        return original, f"onnx-simplifier {onnxsim.__version__} could not validate its result"
    return result, None


def main(cfg: DictConfig) -> str:
    """Simplify ``paths.onnx`` and check that its outputs on real eval samples are unchanged."""
    import onnxsim

    original = load_onnx(cfg.paths.onnx)
    before = len(original.graph.node)
    ops_before = op_counts(original)
    graph, skipped = simplified(original, cfg)
    check_feeds = feeds(cfg.model, load_dataset(cfg.model, "test"), 16, limit=cfg.export.check.samples)
    check = compare_outputs(
        ort_outputs(cfg.paths.onnx, check_feeds),
        ort_outputs(graph, check_feeds),
        cfg.export.check.atol,
        cfg.export.check.rtol,
    )
    failed = [name for name, c in check.items() if not c["passed"]]
    if failed:
        raise PipelineError(f"simplify changed output {failed[0]!r} by up to {check[failed[0]]['max_abs']:.3g}")
    out = Path(cfg.paths.simplified)
    write_graph(graph, cfg.paths.simplified_dir, out, external=is_external(cfg.paths.onnx))
    after = len(graph.graph.node)
    write_json(
        cfg.paths.simplify_report,
        {
            "nodes": {"before": before, "after": after},
            "ops": {"before": ops_before, "after": op_counts(graph)},
            "check": {"outputs": check},
            "onnxsim": onnxsim.__version__,
            "optimize": cfg.simplify.optimize,
            "skipped": skipped,  # None, or why the exported graph went on unsimplified
            "resources": resources(),
        },
    )
    if skipped:
        return f"skipped ({skipped}): the exported graph goes on unchanged ({before} nodes) -> {out}"
    return f"{before} -> {after} nodes -> {out}"


if __name__ == "__main__":
    run_stage("simplify", main)
