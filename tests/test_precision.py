"""The precision stage on real ONNX files: FP16 types, INT8 Q/DQ structure per encoding, calibration provenance,
one-line errors, the accuracy gates per precision, and the accuracy-driven fallback on a model made to need it."""

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from omegaconf import DictConfig, OmegaConf
from onnx import TensorProto, helper, numpy_helper

from stages import benchmark, build, compare, env, export, precision, reference, simplify
from stages import report as report_stage
from stages.core import calibration
from stages.core.artifacts import read_json
from stages.core.errors import PipelineError
from stages.core.float16 import write_fp16
from stages.core.onnx_io import ort_outputs
from stages.core.quantize import quantized_nodes
from stages.runtime import registry
from tests.helpers import (
    FAST_BENCH,
    add_fixture_model,
    build_candidate,
    compose,
    copy_repo,
    graph_entry,
    only_graph,
    run_stage,
)

# What encoding=auto gives here: u8s7 on x86 CPUs without VNNI, u8s8 with it (the ONNX Runtime backend decides).
AUTO_ENCODING = registry.get("onnxruntime").capabilities.int8_encoding
INT8 = ("precision=int8", "precision.int8.calibration.samples=32", "precision.int8.calibration.batch_size=8")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory):
    """A repo copy with the tiny and outlier models exported and simplified; tests run from inside it."""
    root = copy_repo(tmp_path_factory.mktemp("precision"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name in ("tiny", "outlier"):
            add_fixture_model(root, name)
            cfg = cfg_for(root, f"model={name}")
            for module in (env, export, simplify, reference):
                run_stage(module, cfg)
        yield root


def cfg_for(root: Path, *overrides: str) -> DictConfig:
    """The config at ``root`` on ONNX Runtime: these tests pin the encodings it runs (u8s7 on x86 without VNNI)
    and its optimizer's fallback; tests/test_openvino.py covers OpenVINO."""
    return compose("backend=onnxruntime", *overrides, config_dir=root / "conf")


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_fp16_casts_weights_and_keeps_float32_io(root):
    cfg = cfg_for(root, "model=tiny", "precision=fp16")
    run_stage(precision, cfg)
    model = onnx.load(only_graph(cfg))
    io_types = {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io_types == {TensorProto.FLOAT}
    weights = [a for a in initializers(model).values() if a.ndim == 2]
    assert weights and all(a.dtype == np.float16 for a in weights)
    feed = {"x": np.ones((4, 6), np.float32), "scale": np.ones((4, 1), np.float32)}
    got, want = ort_outputs(only_graph(cfg), [feed])["y"], ort_outputs(cfg.paths.simplified, [feed])["y"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)


def test_fp16_keeps_listed_fragile_ops_in_float32(tmp_path):
    """A real graph MatMul -> Softmax: the MatMul runs in float16, the Softmax reads float32."""
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
            helper.make_node("Softmax", ["h"], ["y"], name="sm"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "in.onnx")
    kept = write_fp16(tmp_path / "in.onnx", ["Softmax"], tmp_path / "out.onnx")
    model = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(model)
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    assert kept == ["Softmax"] and types[softmax.input[0]] == TensorProto.FLOAT
    assert initializers(model)["w"].dtype == np.float16


def test_fp16_on_a_weight_shared_by_float32_kept_and_float16_nodes(tmp_path):
    """What the dynamo exporter writes for transformer encoders: one initializer (all ones) read by two
    LayerNormalizations (kept in float32) and a Mul (float16). The converter casts it back once per kept reader,
    under one name; the graph must still be valid, load and agree with float32."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(np.ones(8, np.float32), "ones"),
        numpy_helper.from_array(np.zeros(8, np.float32), "zeros"),
        numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("LayerNormalization", ["x", "ones", "zeros"], ["a"], axis=-1),
            helper.make_node("MatMul", ["a", "w"], ["b"]),
            helper.make_node("LayerNormalization", ["b", "ones", "zeros"], ["c"], axis=-1),
            helper.make_node("Mul", ["c", "ones"], ["y"]),
        ],
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        weights,
    )
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.save(source, tmp_path / "in.onnx")
    assert write_fp16(tmp_path / "in.onnx", ["LayerNormalization"], tmp_path / "out.onnx") == ["LayerNormalization"]
    onnx.checker.check_model(onnx.load(tmp_path / "out.onnx"), full_check=True)
    feed = {"x": rng.standard_normal((4, 8)).astype(np.float32)}
    want, got = ort_outputs(tmp_path / "in.onnx", [feed]), ort_outputs(tmp_path / "out.onnx", [feed])
    np.testing.assert_allclose(got["y"], want["y"], atol=1e-2, rtol=1e-2)


def qdq(model: onnx.ModelProto):
    """(weight DequantizeLinear nodes, activation QuantizeLinear nodes, constants) of a Q/DQ model."""
    constants = initializers(model)
    weights = [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in constants and constants[n.input[0]].ndim == 2
    ]
    activations = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    return weights, activations, constants


@pytest.mark.parametrize("encoding", ["u8s8", "u8s7", "s8s8"])
def test_int8_writes_qdq_with_per_channel_weights_in_the_asked_encoding(root, encoding):
    cfg = cfg_for(root, "model=tiny", *INT8, f"precision.int8.encoding={encoding}", "precision.int8.fallback=false")
    run_stage(precision, cfg)
    weights, activations, constants = qdq(onnx.load(only_graph(cfg)))
    assert len(weights) == 2 and activations  # both Gemms: int8 weights, quantized activations
    for node in weights:  # per output channel, symmetric: every zero point 0
        assert constants[node.input[1]].shape == (constants[node.input[0]].shape[0],)
        assert constants[node.input[0]].dtype == np.int8 and not constants[node.input[2]].any()
        limit = 64 if encoding == "u8s7" else 127  # 7-bit weights: no int16 saturation on x86 without VNNI
        assert np.abs(constants[node.input[0]].astype(np.int32)).max() == limit
    zero_points = [constants[n.input[2]] for n in activations]
    assert all(z.shape == () for z in zero_points)  # per-tensor activations
    int32_fed = [
        n.name
        for n in onnx.load(only_graph(cfg)).graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in constants and constants[n.input[0]].dtype == np.int32
    ]
    if encoding == "s8s8":  # TensorRT's form: signed and symmetric, zero point 0 everywhere, float biases
        assert all(z.dtype == np.int8 and z == 0 for z in zero_points)
        assert int32_fed == []  # TensorRT's parser refuses an int32 bias into DequantizeLinear
    else:  # ONNX Runtime CPU's form: unsigned activations, int32 biases (both Gemms')
        assert all(z.dtype == np.uint8 for z in zero_points)
        assert len(int32_fed) == 2
    entry, model = graph_entry(cfg), onnx.load(only_graph(cfg))
    gemms = {n.name for n in model.graph.node if n.op_type == "Gemm"}
    assert entry["encoding"] == encoding and set(quantized_nodes(model)) >= gemms
    assert entry["quantized_nodes"] == len(quantized_nodes(model, list(cfg.precision.int8.op_types)))
    table = read_json(cfg.paths.precision_report)["calibration"]["tensors"]
    assert table["x"]["min"] < 0 < table["x"]["max"] and table["x"]["scale"] > 0


def test_int8_encoding_auto_follows_the_chosen_backend(root):
    cfg = cfg_for(root, "model=tiny", *INT8)
    run_stage(precision, cfg)
    (record,) = read_json(cfg.paths.env)["candidates"]
    choice = record["capabilities"]
    assert record["backend"] == "onnxruntime" and choice == registry.get("onnxruntime").capabilities.record()
    assert choice["int8_encoding"] == AUTO_ENCODING and choice["bf16"] == "none"
    assert graph_entry(cfg)["encoding"] == AUTO_ENCODING


def test_calibration_provenance_follows_the_data(root):
    base = cfg_for(root, "model=tiny", *INT8)
    provenance = {}
    for label, change in [("a", {}), ("again", {}), ("seed", {"seed": 1}), ("split", {"split": "test"})]:
        settings = OmegaConf.merge(base.precision.int8.calibration, change)
        _, data = calibration.calibration_batches(base.model, settings, "precision.int8.calibration")
        provenance[label] = data["data_sha256"]
    assert provenance["a"] == provenance["again"]
    assert len({provenance["a"], provenance["seed"], provenance["split"]}) == 3
    run_stage(precision, base)
    recorded = read_json(base.paths.precision_report)["calibration"]["provenance"]
    assert recorded["data_sha256"] == provenance["a"] and recorded["samples"] == 32
    assert recorded["method"] == "minmax" and len(recorded["model_sha256"]) == 64


def test_calibration_data_smaller_than_asked_is_used_whole_and_said(root):
    """A split of 40 samples with 512 asked (the default): all 40 calibrate, the provenance keeps what was asked;
    the same draw as asking for exactly 40."""
    cfg = cfg_for(root, "model=tiny", "precision=int8", "precision.int8.calibration.batch_size=8")
    _, data = calibration.calibration_batches(cfg.model, cfg.precision.int8.calibration, "key")
    exact = OmegaConf.merge(cfg.precision.int8.calibration, {"samples": 40})
    _, same = calibration.calibration_batches(cfg.model, exact, "key")
    assert (data["samples"], data["asked"]) == (40, 512) and "asked" not in same
    assert data["data_sha256"] == same["data_sha256"]
    for module in (precision, build, compare):
        run_stage(module, cfg)
    recorded = read_json(cfg.paths.precision_report)["calibration"]["provenance"]
    assert (recorded["samples"], recorded["asked"]) == (40, 512)
    assert read_json(cfg.paths.accuracy)["int8"]["calibration"]["asked"] == 512
    for module in (benchmark, report_stage):
        run_stage(module, cfg_for(root, "model=tiny", "precision=int8", *FAST_BENCH))
    assert (
        "calibrated on 40 samples (**512 asked: the calibration data has no more**)"
        in Path(cfg.paths.summary).read_text()
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("precision.int8.calibration.samples=64", "precision.int8.calibration.min_samples=41"),
            r"min_samples: the calibration data of model 'tiny' \(tests/fixtures/tiny.py, train split\) has 40 "
            r"samples, fewer than the 41 int8 needs",
        ),
        (("precision.int8.calibration.method=kl",), r"calibration.method: 'kl' is not one of minmax, entropy"),
        (("precision.int8.encoding=u4",), r"precision.int8.encoding: 'u4' is not one of auto, u8s8, u8s7, s8s8, nncf"),
        (("precision.int8.calibration.split=valid",), r"model 'tiny' \(tests/fixtures/tiny.py\) has no 'valid' data"),
        (("precision.int8.op_types=[Conv]",), r"the model has no node int8 can quantize \(op types: .*Gemm"),
    ],
)
def test_int8_user_errors_are_one_line_and_leave_no_model(root, overrides, message):
    cfg = cfg_for(root, "model=tiny", *INT8, *overrides)
    shutil.rmtree(cfg.paths.precise, ignore_errors=True)
    with pytest.raises(PipelineError, match=message) as error:
        run_stage(precision, cfg)
    assert "\n" not in str(error.value)
    assert not Path(cfg.paths.precise).exists()
    assert not list(Path(cfg.paths.model_dir).glob(".*.tmp"))


def test_calibration_data_of_the_wrong_dtype_is_refused(root):
    cfg = OmegaConf.to_container(cfg_for(root, "model=tiny", *INT8))
    cfg["model"]["inputs"][0]["dtype"] = "float64"
    with pytest.raises(
        PipelineError, match=r"train data of model 'tiny': array 'x' is float32, model.inputs says float64"
    ):
        run_stage(precision, OmegaConf.create(cfg))


def test_int8_gate_passes_with_int8_tolerances_and_fails_with_fp32_ones(root, capfd):
    cfg = cfg_for(root, "model=tiny", *INT8, "precision.task_budget=0.2")  # 40 random samples, near-ties
    for module in (precision, build, compare):
        run_stage(module, cfg)
    acc = read_json(cfg.paths.accuracy)
    assert acc["passed"] and acc["precision"] == "int8" and acc["int8"]["encoding"] == AUTO_ENCODING
    assert acc["outputs"]["y"]["max_abs"] > 1e-3  # really quantized
    strict = cfg_for(
        root,
        "model=tiny",
        *INT8,
        "precision.tolerance.atol=1e-5",
        "precision.tolerance.rtol=1e-5",
        "precision.task_budget=0.2",
    )
    capfd.readouterr()
    with pytest.raises(
        PipelineError, match=r"accuracy gate failed: (batch 1-5 \(int8\.\w+\): )?output 'y' differs by up to"
    ):
        run_stage(compare, strict)
    printed = capfd.readouterr()
    assert "[E]" not in printed.out + printed.err, printed  # Polygraphy's per-output lines: accuracy.json has them
    assert read_json(strict.paths.accuracy)["outputs"]["y"]["max_abs"] > 1e-5


def test_plain_int8_misses_the_budget_on_the_outlier_model(root):
    cfg = cfg_for(root, "model=outlier", *INT8, "precision.int8.fallback=false")
    run_stage(precision, cfg)
    record = graph_entry(cfg)["fallback"]
    assert record["enabled"] is False and len(record["rounds"]) == 1 and not record["rounds"][0]["passed"]
    assert any(r["failure"] for r in record["rounds"])  # the precision stage's round failed the gate ...
    with pytest.raises(PipelineError, match=r"^the int8\.\w+ engine failed its accuracy gate on \d+ eval samples"):
        run_stage(build, cfg)  # ... and build, judging by the same gate, ships nothing


def test_fallback_keeps_the_sensitive_node_in_float_until_the_budget_holds(root):
    cfg = cfg_for(root, "model=outlier", *INT8, "precision.int8.fallback=true")
    run_stage(precision, cfg)
    record = graph_entry(cfg)["fallback"]
    rounds = record["rounds"]
    assert not rounds[0]["passed"] and rounds[-1]["passed"] and len(rounds) >= 2
    assert [r["excluded"] for r in rounds] == list(range(len(rounds)))  # step 1: one more node per round
    assert rounds[-1]["agreement"] > rounds[0]["agreement"]
    model = onnx.load(only_graph(cfg))
    first = next(n for n in model.graph.node if "x" in n.input)
    assert record["excluded"] == [first.name] and first.op_type == "Gemm"  # reads the outlier input, in float
    assert quantized_nodes(model)  # the rest is still int8
    assert set(record["sensitivity"]) >= set(record["excluded"])
    for module in (build, compare):
        run_stage(module, cfg)
    acc = read_json(cfg.paths.accuracy)
    assert acc["passed"] and acc["int8"]["fallback"]["excluded"] == record["excluded"]
    assert [r["candidate"] for r in acc["int8"]["fallback"]["rounds"]] == [r["candidate"] for r in rounds]
    quick = cfg_for(root, "model=outlier", *INT8, "precision.int8.fallback=true", *FAST_BENCH)
    for module in (benchmark, report_stage):
        run_stage(module, quick)
    page = Path(cfg.paths.summary).read_text()
    assert f"INT8: {AUTO_ENCODING} Q/DQ, calibrated on 32 samples; fallback on; agreement by round: " in page
    assert f"by round: {100 * rounds[0]['candidate']:.2f}%" in page
    assert f"nodes kept in float: `{first.name}`" in page


def test_fallback_stops_at_its_node_limit(root):
    cfg = cfg_for(root, "model=outlier", *INT8, "precision.int8.fallback=true", "precision.task_budget=-0.5")
    run_stage(precision, cfg)
    record = graph_entry(cfg)["fallback"]
    nodes = len(record["sensitivity"])
    limit = min(cfg.precision.int8.fallback_search.max_nodes, nodes - 1)
    assert not record["rounds"][-1]["passed"] and len(record["rounds"]) == limit + 1
    best = max(record["rounds"], key=lambda r: (r["candidate"], -r["excluded"]))
    assert record["rounds"][record["kept"]] == best  # the most accurate round's model is the one written
    assert len(record["excluded"]) == best["excluded"]
    quantized = quantized_nodes(onnx.load(only_graph(cfg)), list(cfg.precision.int8.op_types))
    assert len(quantized) == len(record["sensitivity"]) - best["excluded"]


def test_engine_build_tries_each_lower_optimization_level_and_says_why(root, monkeypatch):
    """No float16 graph here crashes ONNX Runtime 1.31, so make every level fail the smoke check: the build walks
    all -> extended -> basic -> disabled on the real runtime and reports each reason in one line."""
    from stages.backends.onnxruntime import backend as ort_backend

    cfg = cfg_for(root, "model=tiny", "precision=fp16")
    run_stage(precision, cfg)
    monkeypatch.setattr(ort_backend, "SMOKE_TOLERANCE", -1.0)  # in this process: the backend's build, called here
    backend = registry.get("onnxruntime")
    with pytest.raises(PipelineError, match=r"cannot build .* at any optimization level") as error:
        build_candidate(backend, cfg, Path(cfg.paths.precise) / "fp16.onnxruntime.onnx", root / "engine", "fp16")
    for level in ("all", "extended", "basic", "disabled"):
        assert f"{level}: outputs differ from the unoptimized graph" in str(error.value)
    assert "\n" not in str(error.value)
