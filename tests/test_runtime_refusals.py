"""A runtime that cannot compile a model is that runtime's record, never the stage's end: the race ships another,
the precision stage skips that runtime's graph, the benchmark times the others and the report names it. The model:
a convolution and a global average pool whose kernel is larger than its input under ceil mode (EfficientNet's head
as exported): OpenVINO's ONNX frontend refuses it, ONNX Runtime runs it."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stages import benchmark, build, compare, env, export, precision, reference, report, simplify
from stages.core.artifacts import read_json
from tests.helpers import FAST_BENCH, compose, copy_repo, run_if, run_stage

pytestmark = run_if(backend="openvino")  # the refusing runtime


def pooled_graph(path: Path) -> Path:
    """x [batch, 3, 2, 2] -> 1x1 Conv to 4 channels -> AveragePool 5x5, ceil mode -> y [batch, 4, 1, 1]."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        helper.make_node("AveragePool", ["c"], ["y"], kernel_shape=[5, 5], strides=[5, 5], ceil_mode=1, name="pool"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 1, 1])
    graph = helper.make_graph(nodes, "pooled", [x], [y], [weight, bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    return path


@pytest.mark.parametrize("chosen", ["fp32", "int8"])
def test_openvino_refusing_the_model_is_its_record_and_every_stage_goes_on(tmp_path: Path, monkeypatch, chosen: str):
    root = copy_repo(tmp_path)
    pooled_graph(root / "pooled.onnx")
    monkeypatch.chdir(root)
    cfg = compose("model=onnx", "model.path=pooled.onnx", f"precision={chosen}", *FAST_BENCH, config_dir=root / "conf")
    for module in (env, export, simplify, reference, precision, build, compare, benchmark, report):
        run_stage(module, cfg)
    skipped = read_json(cfg.paths.precision_report)["skipped"]
    race = read_json(Path(cfg.paths.engine) / "manifest.json")["race"]
    if chosen == "int8":  # the int8 fallback judges each graph on its runtime: OpenVINO's refusal skips its graph
        assert [s["candidate"] for s in skipped] == ["int8.openvino"] and race is None, (skipped, race)
    else:
        openvino = next(entry for entry in race if entry["backend"] == "openvino")
        assert openvino["result"].startswith("did not build: "), openvino
    assert read_json(Path(cfg.paths.engine) / "manifest.json")["backend"] == "onnxruntime"
    bench = read_json(cfg.paths.benchmark)
    assert bench["baselines"]["openvino_default"]["failed"] and "openvino_default" not in bench["runtimes"]
    assert "> **Not timed:** openvino_default could not run the model (" in Path(cfg.paths.summary).read_text()
