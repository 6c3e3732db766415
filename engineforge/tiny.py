"""The tiny model `engineforge.gpu_check` builds on each runtime: a two-layer MLP with a dynamic batch, its
seeded inputs, its s8s8 Q/DQ form made by the precision stage's own calibrator and quantizer, and its output on
ONNX Runtime's CPU provider (the reference every GPU result is compared with)."""

from pathlib import Path

import numpy as np

from stages.backends.onnxruntime.session import open_session, session_options
from stages.core.run import compose

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 16  # the tiny model: x [N, 16] -> MatMul/Add/Relu -> MatMul/Add -> y [N, 4]
PROFILE = [{"x": {"min": [1, WIDTH], "opt": [8, WIDTH], "max": [32, WIDTH]}}]


def tiny_model(path: Path) -> Path:
    """A two-layer MLP with a dynamic batch, seeded weights, opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights: dict[str, np.ndarray] = {
        "w1": rng.standard_normal((WIDTH, 32)).astype(np.float32) / 4,
        "b1": rng.standard_normal(32).astype(np.float32),
        "w2": rng.standard_normal((32, 4)).astype(np.float32) / 6,
        "b2": rng.standard_normal(4).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="add1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="mm2"),
        helper.make_node("Add", ["h3", "b2"], ["y"], name="add2"),
    ]
    graph = helper.make_graph(
        nodes,
        "gpu_check",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def feed(batch: int = 8, seed: int = 1) -> dict[str, np.ndarray]:
    """Seeded inputs of the tiny model."""
    return {"x": np.random.default_rng(seed).standard_normal((batch, WIDTH)).astype(np.float32)}


def s8s8_model(source: Path, out: Path) -> Path:
    """``source`` calibrated and quantized by the precision stage's code in TensorRT's s8s8 encoding."""
    from stages.core.calibration import calibrate, method_of
    from stages.core.quantize import write_int8

    int8 = compose("precision=int8", config_dir=ROOT / "conf").precision.int8
    ranges = calibrate(source, [feed(32, seed) for seed in range(4)], int8.calibration, "precision.int8.calibration")
    write_int8(source, ranges, method_of(int8.calibration, "precision.int8.calibration"), "s8s8", int8, out)
    return out


def cpu_reference(onnx: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """``onnx`` on ONNX Runtime's CPU provider."""
    session = open_session(onnx, session_options(0, "disabled"), ["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def worst(got: np.ndarray, want: np.ndarray) -> float:
    """The largest absolute difference."""
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want)))
