"""Graphs whose weights live outside the .onnx file (every model past protobuf's 2 GiB limit): each stage reads and
writes them, the data travels with every copy and every digest covers it. Small models are forced to the same
layout with ``export.external_data=always``, so the path a 2 GiB model takes runs in the fast suite."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from stages import benchmark, compare, deploy, env, export, precision, reference, simplify
from stages import build as build_module
from stages.core.artifacts import read_json
from stages.core.graph_files import copy_graph, files_sha256, is_external, save_onnx, sidecar
from stages.core.onnx_io import load_onnx, ort_outputs
from stages.runtime.bundle import EngineError, fallback_graph
from stages.runtime.engine import Engine
from tests.helpers import FAST_BENCH, add_fixture_model, compose, copy_repo, run_stage


def weighted_graph(path: Path) -> Path:
    """y = x * w with a 4-element weight, written self-contained."""
    weight = numpy_helper.from_array(np.arange(1, 5, dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"], name="mul")], "g", [x], [y], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    return path


def reshaping_graph(path: Path) -> Path:
    """y = reshape(x, [-1, 4]) @ w: a weight and an int64 shape constant, written self-contained."""
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 4], dtype=np.int64), "shape")
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 2, 2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["flat"], name="flat"),
        helper.make_node("MatMul", ["flat", "w"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], [weight, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    return path


def test_a_shape_constant_stays_in_the_graph_file_and_nncf_quantizes_it(tmp_path: Path):
    """The weights go to the sidecar, an int64 shape stays in the graph (ONNX Runtime refuses a Reshape whose shape is
    external data); NNCF's int8 of it keeps its weights outside and runs."""
    from stages.core.nncf_quantize import write_nncf
    from stages.core.quantize import quantized_nodes

    save_onnx(onnx.load(str(reshaping_graph(tmp_path / "a.onnx"))), tmp_path / "ext.onnx", external=True)
    kept = {
        t.name: t.data_location
        for t in onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False).graph.initializer
    }
    assert kept == {"w": onnx.TensorProto.EXTERNAL, "shape": onnx.TensorProto.DEFAULT}
    feed = {"x": np.arange(16, dtype=np.float32).reshape(4, 2, 2)}
    assert ort_outputs(tmp_path / "ext.onnx", [feed])["y"].tolist() == feed["x"].reshape(4, 4).tolist()
    write_nncf(tmp_path / "ext.onnx", [feed, feed], ["MatMul"], tmp_path / "int8.onnx")
    assert is_external(tmp_path / "int8.onnx") and quantized_nodes(onnx.load(str(tmp_path / "int8.onnx"))) == ["mm"]
    np.testing.assert_allclose(ort_outputs(tmp_path / "int8.onnx", [feed])["y"], feed["x"].reshape(4, 4), atol=0.2)


def test_a_renamed_copy_keeps_its_data_as_its_own_sidecar_and_runs(tmp_path: Path):
    model = onnx.load(str(weighted_graph(tmp_path / "a.onnx")))
    (tmp_path / "src").mkdir()
    save_onnx(model, tmp_path / "src/fp32.ort.onnx", external=True)
    assert is_external(tmp_path / "src/fp32.ort.onnx") and sidecar(tmp_path / "src/fp32.ort.onnx").is_file()
    assert numpy_helper.to_array(model.graph.initializer[0]).tolist() == [1, 2, 3, 4]  # still in memory
    (tmp_path / "dst").mkdir()
    copy_graph(tmp_path / "src/fp32.ort.onnx", tmp_path / "dst/model.fp32.onnx")
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["model.fp32.onnx", "model.fp32.onnx.data"]
    feed = [{"x": np.ones((2, 4), np.float32)}]
    assert ort_outputs(tmp_path / "dst/model.fp32.onnx", feed)["y"].tolist() == [[1, 2, 3, 4]] * 2
    assert load_onnx(tmp_path / "dst/model.fp32.onnx").graph.initializer[0].raw_data  # checked and loaded


def test_a_digest_covers_the_sidecar(tmp_path: Path):
    save_onnx(onnx.load(str(weighted_graph(tmp_path / "a.onnx"))), tmp_path / "b.onnx", external=True)
    before = files_sha256(tmp_path / "b.onnx")
    data = sidecar(tmp_path / "b.onnx")
    data.write_bytes(data.read_bytes()[:-4] + np.float32(9).tobytes())
    assert files_sha256(tmp_path / "b.onnx") != before
    assert (
        files_sha256(tmp_path / "a.onnx")
        == __import__("hashlib").sha256((tmp_path / "a.onnx").read_bytes()).hexdigest()
    )


@pytest.fixture(scope="module", params=["onnxruntime", "openvino"])
def external(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The tiny model through every stage at precision=auto (fp32, fp16, bf16 where it runs, int8) on one
    backend, with its weights outside every graph."""
    root = copy_repo(tmp_path_factory.mktemp("external"))
    add_fixture_model(root, "tiny")
    overrides = ("model=tiny", f"backend={request.param}", "precision=auto", "export.external_data=always")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cfg = compose(*overrides, *FAST_BENCH, config_dir=root / "conf")
        for module in (env, export, simplify, reference, precision, build_module, compare, benchmark, deploy):
            run_stage(module, cfg)
        yield root, cfg


def test_every_graph_of_every_stage_keeps_its_weights_in_its_sidecar(external):
    root, cfg = external
    graphs = [root / cfg.paths.onnx, root / cfg.paths.simplified, *sorted((root / cfg.paths.precise).glob("*.onnx"))]
    assert len(graphs) > 3
    for graph in graphs:
        assert is_external(graph) and sidecar(graph).is_file(), graph
    for entry in read_json(root / cfg.paths.precision_report)["candidates"]:
        assert files_sha256(root / cfg.paths.precise / entry["file"]) == entry["sha256"]


def test_the_deployed_engine_opens_with_its_data_and_refuses_changed_weights(external):
    root, cfg = external
    folder = root / cfg.paths.deploy
    manifest = read_json(folder / "manifest.json")
    graph, engine_file = folder / manifest["graph"]["file"], folder / manifest["engine"]
    assert sidecar(graph).is_file() and is_external(graph)
    assert sidecar(engine_file).is_file() == (manifest["backend"] == "onnxruntime")  # its optimized graph's weights
    feed = {"x": np.ones((2, 6), np.float32), "scale": np.ones((2, 1), np.float32)}
    with Engine.open(folder) as engine:
        assert np.isfinite(engine(feed)["y"]).all()
    reverse(sidecar(graph))
    with pytest.raises(EngineError, match="does not match its manifest"):
        fallback_graph(folder, manifest)
    if sidecar(engine_file).is_file():
        reverse(sidecar(engine_file))
        with pytest.raises(EngineError, match="does not match its manifest"):
            Engine.open(folder)


def reverse(path: Path) -> None:
    path.write_bytes(path.read_bytes()[::-1])
