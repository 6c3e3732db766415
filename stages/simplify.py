"""simplify stage: model.onnx -> model.sim.onnx (onnx-simplifier), simplify.json (node counts, output check)."""

from omegaconf import DictConfig

from stages.core.artifacts import atomic_path, write_json
from stages.core.batches import feeds
from stages.core.data import load_dataset
from stages.core.errors import PipelineError, first_line
from stages.core.onnx_io import compare_outputs, load_onnx, op_counts, ort_outputs
from stages.core.run import run_stage


def main(cfg: DictConfig) -> str:
    """Simplify ``paths.onnx`` and check that its outputs on real eval samples are unchanged."""
    import onnx
    import onnxsim

    original = load_onnx(cfg.paths.onnx)
    try:
        simplified, ok = onnxsim.simplify(
            original,
            check_n=0,
            perform_optimization=cfg.simplify.optimize,
            skipped_optimizers=list(cfg.simplify.skipped_optimizers) or None,
        )
    except Exception as e:  # onnxsim raises RuntimeError/ValueError from its C++ core
        raise PipelineError(f"onnx-simplifier failed on {cfg.paths.onnx}: {first_line(e)}") from e
    if not ok:
        raise PipelineError(f"onnx-simplifier could not validate its result for {cfg.paths.onnx}")
    check_feeds = feeds(cfg.model, load_dataset(cfg.model, "test"), 16, limit=cfg.export.check.samples)
    check = compare_outputs(
        ort_outputs(cfg.paths.onnx, check_feeds),
        ort_outputs(simplified.SerializeToString(), check_feeds),
        cfg.export.check.atol,
        cfg.export.check.rtol,
    )
    failed = [name for name, c in check.items() if not c["passed"]]
    if failed:
        raise PipelineError(f"simplify changed output {failed[0]!r} by up to {check[failed[0]]['max_abs']:.3g}")
    with atomic_path(cfg.paths.simplified) as tmp:
        onnx.save(simplified, str(tmp))
    before, after = len(original.graph.node), len(simplified.graph.node)
    write_json(
        cfg.paths.simplify_report,
        {
            "nodes": {"before": before, "after": after},
            "ops": {"before": op_counts(original), "after": op_counts(simplified)},
            "check": {"outputs": check},
            "onnxsim": onnxsim.__version__,
            "optimize": cfg.simplify.optimize,
        },
    )
    return f"{before} -> {after} nodes -> {cfg.paths.simplified}"


if __name__ == "__main__":
    run_stage("simplify", main)
