"""backend=openvino on the real digits model: the compiled blob, the precision pin, bf16, tuning, refusal, restore."""

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from omegaconf import DictConfig, OmegaConf

from stages import build, env, export, precision, reference, simplify
from stages.backends.openvino.backend import OpenVinoBackend, compiled_precision, execution_precision, properties
from stages.core.artifacts import read_json
from stages.core.batches import batch_of
from stages.core.bfloat16 import BFLOAT16, FLOAT16, write_bf16
from stages.core.data import load_dataset
from stages.core.errors import PipelineError
from stages.core.onnx_io import ort_outputs
from stages.core.timing import TimedCall
from stages.core.tuning import tune
from stages.runtime import registry
from stages.runtime.engine import Engine
from stages.runtime.manifest import MANIFEST
from tests.helpers import FAST_BENCH, ROOT, build_candidate, compose, copy_repo, only_graph, run, run_stage

HAS_BF16 = compiled_precision("bf16") == "bf16"  # asked of OpenVINO: it runs bf16 on AVX-512 CPUs, not on AVX2
OVERRIDES = ("model=digits", "backend=openvino", *FAST_BENCH, "backend.tune_s=2")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):
    """A repo copy with digits exported, simplified and built by OpenVINO at fp32 (tuned for 2 s)."""
    root = copy_repo(tmp_path_factory.mktemp("openvino"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cfg = compose(*OVERRIDES, config_dir=root / "conf")
        for module in (env, export, simplify, reference, precision, build):
            run_stage(module, cfg)
        yield root, cfg


def built_at(root: Path, engine: Path, *overrides: str) -> tuple[DictConfig, dict]:
    """Run the precision stage and build digits with ``overrides`` into ``engine``; the config and the manifest."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cfg = compose(*OVERRIDES, *overrides, config_dir=root / "conf")
        run_stage(precision, cfg)
        return cfg, build_candidate(OpenVinoBackend(), cfg, only_graph(cfg), engine)


def feed_of(cfg, batch: int = 8) -> dict[str, np.ndarray]:
    """Real eval samples of the model."""
    return batch_of(cfg.model, load_dataset(cfg.model, "test"), batch)


def test_build_writes_a_blob_that_loads_without_the_onnx_and_matches_onnxruntime(digits, tmp_path):
    root, cfg = digits
    engine = tmp_path / "engine"
    shutil.copytree(root / cfg.paths.engine, engine)
    manifest = read_json(engine / MANIFEST)
    assert manifest["backend"] == "openvino" and manifest["engine"] == "engine.blob"
    feed = feed_of(cfg)
    expected = ort_outputs(root / cfg.paths.simplified, [feed])["logits"]
    moved = tmp_path / "gone.onnx"
    shutil.move(root / cfg.paths.precise, moved)  # a load imports the blob: no ONNX, no compile
    try:
        with Engine.open(engine) as opened:
            np.testing.assert_allclose(opened(feed)["logits"], expected, rtol=1e-4, atol=1e-5)
            assert opened.describe()["running"] == manifest["settings"]
    finally:
        shutil.move(moved, root / cfg.paths.precise)


def test_fp32_is_pinned_to_f32_and_recorded(digits):
    root, cfg = digits
    manifest = read_json(root / cfg.paths.engine / MANIFEST)
    assert manifest["settings"]["inference_precision"] == "f32"
    assert properties(manifest["settings"])["INFERENCE_PRECISION_HINT"] == "f32"  # the import pins it too
    assert [execution_precision(p, "auto") for p in ("fp32", "int8", "bf16")] == ["f32", "f32", "bf16"]
    with pytest.raises(PipelineError, match=r"backend\.openvino\.inference_precision: 'f8'"):
        execution_precision("fp32", "f8")


def test_tuning_records_every_candidate_and_builds_with_the_fastest(digits):
    root, cfg = digits
    top = read_json(root / cfg.paths.engine / MANIFEST)  # one engine per batch range, each tuned at its own size
    for part, batch in zip(top["dispatch"], ("bs1", "bs32"), strict=True):
        manifest = read_json(root / cfg.paths.engine / part["folder"] / MANIFEST)
        tuning = manifest["tuning"]  # the budget split between the two ranges' builds
        assert len(tuning["timings"]) + len(tuning["skipped"]) == 3 and tuning["budget_s"] == 1
        assert all(set(t["p50_ms"]) == {batch} and t["score"] >= 1.0 for t in tuning["timings"])
        assert tuning["chosen"] == min(tuning["timings"], key=lambda t: t["score"])["settings"]
        built = manifest["settings"]
        assert built["performance_hint"] == tuning["chosen"]["performance_hint"]
        assert built["inference_num_threads"] == tuning["chosen"]["inference_num_threads"]


def test_tune_keeps_the_fastest_candidate_and_the_default_when_the_budget_is_spent():
    def open_call(settings, batch):
        return TimedCall(lambda: time.sleep(settings["sleep"] * batch))

    slow, fast = {"sleep": 0.002}, {"sleep": 0.0}
    result = tune([slow, fast], open_call, [1, 2], budget_s=0.2)
    assert result["chosen"] == fast and [t["settings"] for t in result["timings"]] == [slow, fast]
    spent = tune([slow, fast], open_call, [1], budget_s=1e-9)
    assert spent["chosen"] == slow and spent["skipped"] == [fast]


def test_tune_false_builds_the_configured_settings_untimed(digits, tmp_path):
    root, _ = digits
    _, manifest = built_at(root, tmp_path / "engine", "backend.tune=false", "backend.openvino.inference_num_threads=1")
    assert manifest["tuning"] is None and manifest["settings"]["inference_num_threads"] == 1


def test_a_blob_built_on_an_amx_cpu_is_refused_in_one_line(digits, tmp_path):
    root, cfg = digits
    engine = tmp_path / "engine"
    shutil.copytree(root / cfg.paths.engine, engine)
    manifest = read_json(engine / MANIFEST)
    manifest["fingerprint"]["device"]["cpu"]["isa"] = ["amx_bf16", "amx_int8", "amx_tile", "avx2", "avx512_vnni"]
    (engine / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match=r"built for device\.cpu\.isa=\['amx_bf16'.*this machine has") as e:
        Engine.open(engine)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(HAS_BF16, reason="OpenVINO compiles bf16 on this CPU: the refusal cannot happen here")
def test_bf16_without_bf16_instructions_stops_in_one_line(digits, tmp_path):
    root, cfg = digits
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        bf16 = compose(*OVERRIDES, "precision=bf16", config_dir=root / "conf")
        with pytest.raises(
            PipelineError,
            match=r"^precision=bf16: OpenVINO compiles bf16 as f32 on this CPU \(it runs bf16 on AVX-512 CPUs\)",
        ):
            precision.main(bf16)
        with pytest.raises(PipelineError, match="OpenVINO compiled it in f32, not bf16"):  # pinned, never silent
            build_candidate(OpenVinoBackend(), bf16, root / cfg.paths.simplified, tmp_path / "engine")


def test_bf16_is_refused_in_one_line_where_openvino_cannot_compile_it():
    """OpenVINO's kernels capped at AVX2 (``ONEDNN_MAX_CPU_ISA``; a no-op on an AVX2 CPU, where bf16 compiles as
    f32): backend=openvino stops in one line, and auto names each backend's reason."""
    code = (
        "from stages.runtime import registry\n"
        "for requested in ('openvino', 'auto'):\n"
        "    try:\n"
        "        registry.candidates(requested, 'bf16')\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__, e)\n"
    )
    lines = run([sys.executable, "-c", code], ROOT, env={"ONEDNN_MAX_CPU_ISA": "AVX2"}).stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("PipelineError backend.name=openvino: OpenVINO c"), lines
    assert lines[0].endswith("on this CPU (it runs bf16 on AVX-512 CPUs): use precision=fp32 or fp16")
    assert lines[1].startswith("PipelineError backend.name=auto: no backend can run precision=bf16 here (")
    assert "openvino unavailable: OpenVINO c" in lines[1] and "onnxruntime unavailable: " in lines[1]


@pytest.mark.skipif(not HAS_BF16, reason="OpenVINO compiles bf16 as f32 on this CPU (no AVX-512)")
def test_bf16_runs_in_bf16_where_the_cpu_has_it(digits, tmp_path):
    root, cfg = digits
    engine = tmp_path / "engine"
    _, manifest = built_at(root, engine, "precision=bf16")
    assert manifest["settings"]["inference_precision"] == "bf16"
    feed = feed_of(cfg)
    with Engine.open(engine) as opened:
        got = opened(feed)["logits"]
    np.testing.assert_allclose(got, ort_outputs(root / cfg.paths.simplified, [feed])["logits"], atol=0.1, rtol=0.05)


def test_int8_is_nncfs_qdq_within_op_types_and_a_node_the_fallback_excludes_stays_float(digits, tmp_path):
    """OpenVINO's encoding is NNCF's quantizer on the ONNX graph (the same calibration draw): only nodes of
    ``precision.int8.op_types`` read a dequantized tensor, the engine built from it passes the gate, and a node
    named in ``exclude`` (the fallback's) is left in float."""
    from stages.core.nncf_quantize import write_nncf
    from stages.core.quantize import quantized_nodes

    root, _ = digits
    cfg, manifest = built_at(root, tmp_path / "engine", "precision=int8", "precision.int8.calibration.samples=64")
    entry = read_json(root / cfg.paths.precision_report)["candidates"][0]
    assert entry["encoding"] == "nncf" and entry["fallback"]["judged_on"] == "openvino"
    assert entry["fallback"]["rounds"][entry["fallback"]["kept"]]["passed"]
    model = onnx.load(only_graph(cfg))
    kinds = {n.name: n.op_type for n in model.graph.node}
    quantized = quantized_nodes(model)
    assert quantized and {kinds[n] for n in quantized} <= set(cfg.precision.int8.op_types), quantized
    assert manifest["precision"] == "int8" and manifest["settings"]["inference_precision"] == "f32"

    batches = [feed_of(cfg, 8) for _ in range(2)]
    out = tmp_path / "excluded.onnx"
    write_nncf(root / cfg.paths.simplified, batches, list(cfg.precision.int8.op_types), out, exclude=quantized[:1])
    left = quantized_nodes(onnx.load(out))
    assert quantized[0] not in left and set(left) == set(quantized[1:]), left
    write_nncf(root / cfg.paths.simplified, batches, [], out, only=quantized[-1:])  # sensitivity: one node alone
    assert quantized_nodes(onnx.load(out)) == quantized[-1:]


def test_bf16_graph_for_tensorrt_has_bfloat16_weights_float32_io_and_computes_like_fp32(digits, tmp_path):
    """The TensorRT form: checked structurally and run by ONNX's reference evaluator (no runtime here has
    bfloat16 kernels for every op)."""
    from onnx.reference import ReferenceEvaluator

    root, cfg = digits
    out = tmp_path / "model.bf16.onnx"
    write_bf16(root / cfg.paths.simplified, list(compose("precision=bf16").precision.bf16.keep_float32), out)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 22
    types = {init.data_type for init in model.graph.initializer}
    assert BFLOAT16 in types and FLOAT16 not in types
    assert all(i.type.tensor_type.elem_type == 1 for i in [*model.graph.input, *model.graph.output])
    feed = feed_of(cfg)
    got = ReferenceEvaluator(model).run(None, feed)[0]
    want = ort_outputs(root / cfg.paths.simplified, [feed])["logits"]
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99


def test_benchmark_baselines_include_openvino_defaults_with_what_they_ran(digits):
    root, cfg = digits
    backend = registry.baseline("openvino_default")
    with backend.baseline_runner(Path(root / cfg.paths.onnx), "openvino_default") as runner:
        described = backend.describe(runner)
        call = backend.timed_call(runner, feed_of(cfg), cfg.benchmark)
        call()
    assert set(described) == {"inference_precision", "performance_hint", "inference_num_threads", "num_streams"}
    with pytest.raises(PipelineError, match="unknown 'tvm'; choose from pytorch_eager, openvino_default"):
        registry.baseline("tvm")


def test_fp16_engine_is_fed_and_read_by_the_onnx_graphs_names(digits, tmp_path):
    """The float16 cast renames nothing the user sees, though OpenVINO may call the input port by its Cast's name."""
    root, cfg = digits
    engine = tmp_path / "engine"
    _, manifest = built_at(root, engine, "precision=fp16")
    # f16 where OpenVINO compiles it, else f32 pinned: never its default, which is bf16 on AVX512_BF16 CPUs
    assert manifest["settings"]["inference_precision"] == ("f16" if compiled_precision("f16") == "f16" else "f32")
    feed = feed_of(cfg)
    with Engine.open(engine) as opened:
        assert [spec.name for spec in opened.inputs] == ["image"]
        got = opened(feed)
        call = opened.timed_call(feed)
        call()
        call.close()
    want = ort_outputs(root / cfg.paths.simplified, [feed])["logits"]
    np.testing.assert_allclose(got["logits"], want, atol=1e-2, rtol=1e-2)


def test_why_names_the_isa_an_amx_built_env_differs_in(digits, tmp_path, monkeypatch):
    """A teammate's env.json from an AMX machine, pulled here: why says which fingerprint field moves."""
    from engineforge import why

    root, cfg = digits
    theirs = read_json(root / cfg.paths.env)
    theirs["candidates"][0]["fingerprint"]["device"]["cpu"]["isa"] = ["amx_bf16", "amx_int8", "amx_tile", "avx512_vnni"]
    monkeypatch.chdir(tmp_path)
    Path(cfg.paths.env).parent.mkdir(parents=True)
    Path(cfg.paths.env).write_text(json.dumps(theirs))
    changes = why.env_changes(OmegaConf.to_container(cfg))
    assert changes[cfg.paths.env].startswith("candidates.0.fingerprint.device.cpu.isa: ['amx_bf16', 'amx_int8'")
