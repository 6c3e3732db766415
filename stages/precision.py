"""precision stage: model.sim.onnx -> model.<precision>.onnx, precision.json (what was done to the graph).

fp32 passes the graph through unchanged. Precision is decided here, in the ONNX graph, and the backend's
builder follows it (TensorRT 11 has no FP16/INT8 builder flags).
"""

import shutil

from omegaconf import DictConfig

from stages.core.artifacts import atomic_path, sha256, write_json
from stages.core.errors import PipelineError
from stages.core.onnx_io import load_onnx, op_counts
from stages.core.run import run_stage

PRECISIONS = ("fp32",)


def main(cfg: DictConfig) -> str:
    """Write ``paths.simplified`` at ``precision.name`` to ``paths.precise``."""
    name = cfg.precision.name
    if name not in PRECISIONS:
        raise PipelineError(f"precision.name: {name!r} is not one of {', '.join(PRECISIONS)}")
    load_onnx(cfg.paths.simplified)
    with atomic_path(cfg.paths.precise) as tmp:
        shutil.copyfile(cfg.paths.simplified, tmp)
    result = load_onnx(cfg.paths.precise)
    write_json(
        cfg.paths.precision_report,
        {
            "precision": name,
            "source_sha256": sha256(cfg.paths.simplified),
            "sha256": sha256(cfg.paths.precise),
            "ops": op_counts(result),
            "calibration": None,
        },
    )
    return f"{name}: graph unchanged -> {cfg.paths.precise}"


if __name__ == "__main__":
    run_stage("precision", main)
