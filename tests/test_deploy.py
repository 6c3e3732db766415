"""The deploy folder and ``engineforge.Engine`` as an application sees them: the real digits engine of each CPU
backend, opened in a virtual environment holding only numpy, the runtimes, Polygraphy and this package without
its dependencies; refusal of another host's engine, the CPU fallback, and every config.pbtxt parsed by Triton's
own ``ModelConfig``."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from stages import build, compare, deploy, env, export, precision, reference, simplify
from stages.backends.tensorrt.backend import TensorRTBackend
from stages.core import precisions
from stages.core.artifacts import read_json, sha256
from stages.core.batches import feeds
from stages.core.data import load_dataset
from stages.core.errors import PipelineError
from stages.core.onnx_io import ort_outputs
from stages.core.triton import config_text
from stages.runtime.engine import Engine, EngineError
from stages.runtime.manifest import MANIFEST
from tests.helpers import FAST_BENCH, ROOT, compose, copy_repo, run_if, run_stage

APP = ROOT / ".venv" / "app" / "bin" / "python"  # make setup: numpy, runtimes, Polygraphy, engineforge --no-deps
HEAVY = ("torch", "dvc", "hydra", "omegaconf", "onnxsim", "onnx", "sklearn")
APP_SCRIPT = """
import json, sys
import numpy as np
from engineforge import Engine
folder, data, out = sys.argv[1:4]
batches = np.load(data)
with Engine.open(folder) as engine:
    got = [engine({k.split(":", 1)[1]: batches[k] for k in batches.files if k.startswith(f"{i}:")}) for i in range(int(batches["n"]))]
    described = engine.describe()
np.savez(out, **{f"{i}:{k}": v for i, r in enumerate(got) for k, v in r.items()})
import importlib.util
heavy = sorted(m for m in HEAVY_MODULES if m in sys.modules or importlib.util.find_spec(m) is not None)
print(json.dumps({"heavy": heavy, "running": described["running"], "inputs": described["inputs"]}))
"""

CASES = [
    pytest.param(("openvino", "fp32"), id="openvino-fp32", marks=run_if(backend="openvino")),
    pytest.param(("onnxruntime", "fp32"), id="onnxruntime-fp32"),
    pytest.param(("openvino", "int8"), id="openvino-int8", marks=[run_if(backend="openvino"), pytest.mark.slow]),
    pytest.param(("onnxruntime", "int8"), id="onnxruntime-int8", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module", params=CASES)
def deployed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """digits built by one backend at one precision, gated and deployed in a repo copy."""
    name, prec = request.param
    root = copy_repo(tmp_path_factory.mktemp(f"deploy-{name}-{prec}"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cfg = compose("model=digits", f"backend={name}", f"precision={prec}", *FAST_BENCH, config_dir=root / "conf")
        for module in (env, export, simplify, reference, precision, build, compare, deploy):
            run_stage(module, cfg)
        yield root, cfg


def eval_batches(cfg) -> list[dict[str, np.ndarray]]:
    """compare's eval batches."""
    return feeds(cfg.model, load_dataset(cfg.model, "test"), cfg.compare.batch_size, limit=cfg.compare.max_samples)


def test_deploy_holds_the_engine_its_manifest_graph_io_and_a_triton_repository(deployed):
    root, cfg = deployed
    out = root / cfg.paths.deploy
    manifest = read_json(out / MANIFEST)
    assert sha256(out / manifest["engine"]) == manifest["engine_sha256"]
    assert sha256(out / manifest["graph"]["file"]) == manifest["graph"]["sha256"] == manifest["onnx"]["sha256"]
    assert read_json(out / deploy.IO_FILE) == manifest["io"]
    assert manifest["io"]["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    config = (out / "triton" / "digits" / "config.pbtxt").read_text()
    served = sorted(p.name for p in (out / "triton" / "digits" / "1").iterdir())
    assert (
        served in (["model.onnx"], ["model.bin", "model.xml"]) and f'default_model_filename: "{served[-1]}"' in config
    )


def test_config_pbtxt_is_tritons_model_config_with_the_certified_settings(deployed):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    root, cfg = deployed
    manifest = read_json(root / cfg.paths.deploy / MANIFEST)
    text = (root / cfg.paths.deploy / "triton" / "digits" / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.name == "digits" and [i.name for i in config.input] == ["image"]
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    settings = manifest["settings"]
    if manifest["backend"] == "openvino":
        assert (
            config.backend == "openvino" and config.max_batch_size == 0 and list(config.input[0].dims) == [-1, 1, 8, 8]
        )
        assert parameters["INFERENCE_NUM_THREADS"] == str(settings["inference_num_threads"])
        assert parameters["NUM_STREAMS"] == str(settings["num_streams"])
        assert (
            parameters["PERFORMANCE_HINT"] == settings["performance_hint"] and parameters["RESHAPE_IO_LAYERS"] == "yes"
        )
    else:
        assert (
            config.platform == "onnxruntime_onnx"
            and config.max_batch_size == manifest["profiles"][0]["image"]["max"][0]
        )
        assert list(config.input[0].dims) == [1, 8, 8] and config.HasField("dynamic_batching")
        assert parameters["intra_op_thread_count"] == str(settings["intra_op_num_threads"])
        assert parameters["execution_mode"] == ("1" if settings["execution_mode"] == "parallel" else "0")
        assert config.optimization.graph.level == 2  # ORT_DISABLE_ALL in Triton's onnxruntime backend


@pytest.mark.skipif(not APP.exists(), reason="no .venv/app: run `make setup`")
def test_an_application_without_torch_or_dvc_reproduces_compares_engine_outputs(deployed, tmp_path):
    """A fresh process of the application venv (where torch, DVC, Hydra, onnx cannot even be found) opens the deploy
    folder and gives, bit for bit, what the engine gives on compare's eval batches through Engine in this process,
    within the gate of the fp32 reference."""
    root, cfg = deployed
    batches = eval_batches(cfg)
    np.savez(
        tmp_path / "in.npz", n=len(batches), **{f"{i}:{k}": v for i, b in enumerate(batches) for k, v in b.items()}
    )
    proc = subprocess.run(
        [
            str(APP),
            "-c",
            APP_SCRIPT.replace("HEAVY_MODULES", repr(HEAVY)),
            str(root / cfg.paths.deploy),
            tmp_path / "in.npz",
            tmp_path / "out.npz",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["heavy"] == []
    app = np.load(tmp_path / "out.npz")
    with Engine.open(root / cfg.paths.engine) as engine:
        here = [engine(b) for b in batches]
        assert seen["running"] == json.loads(json.dumps(engine.describe()["running"]))
    for i, outputs in enumerate(here):
        np.testing.assert_array_equal(app[f"{i}:logits"], outputs["logits"])
    got = np.concatenate([o["logits"] for o in here])
    want = ort_outputs(root / cfg.paths.simplified, batches)["logits"]
    option = precisions.options(cfg.precision)[cfg.precision.name]
    assert np.abs(got - want).max() <= option.tolerance.atol + option.tolerance.rtol * np.abs(want).max()


def test_another_hosts_engine_is_refused_in_one_line(deployed, tmp_path):
    root, cfg = deployed
    out = shutil.copytree(root / cfg.paths.deploy, tmp_path / "deploy")
    manifest = read_json(out / MANIFEST)
    manifest["fingerprint"]["device"]["cpu"]["model"] = "Another CPU"
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match=r"built for device\.cpu\.model=Another CPU, this machine has") as e:
        Engine.open(out)
    assert "\n" not in str(e.value) and "fallback='cpu'" in str(e.value)


def test_a_deploy_root_opens_the_target_that_fits_this_host(deployed, tmp_path):
    """A fleet's deploy root (build/<model>/<precision>/, a <target>/deploy/ each): the target whose fingerprint is
    this host's opens; where none fits, one line names each target, or the fallback runs the first one's graph."""
    root, cfg = deployed
    for target, cpu in (("a", "Another CPU"), ("b", None), ("c", "A third CPU")):
        out = shutil.copytree(root / cfg.paths.deploy, tmp_path / "fleet" / target / "deploy")
        manifest = read_json(out / MANIFEST)
        if cpu is not None:
            manifest["fingerprint"]["device"]["cpu"]["model"] = cpu
        (out / MANIFEST).write_text(json.dumps(manifest | {"target": target}))
    with Engine.open(tmp_path / "fleet") as engine:
        assert engine.manifest["target"] == "b" and engine.folder == tmp_path / "fleet/b/deploy"
    shutil.rmtree(tmp_path / "fleet/b")
    with pytest.raises(
        EngineError, match=r"fleet holds no engine for this host \(a: .*Another CPU.*; c: .*A third"
    ) as e:
        Engine.open(tmp_path / "fleet")
    assert "\n" not in str(e.value)
    with Engine.open(tmp_path / "fleet", fallback="cpu") as engine:
        assert engine.manifest["target"] == "a" and engine.describe()["runs_on"] == "onnxruntime"


def test_fallback_cpu_runs_the_bundles_graph_and_says_so(deployed, tmp_path, capfd):
    root, cfg = deployed
    out = shutil.copytree(root / cfg.paths.deploy, tmp_path / "deploy")
    manifest = read_json(out / MANIFEST)
    manifest["fingerprint"]["version"] = "0.0.1"
    (out / MANIFEST).write_text(json.dumps(manifest))
    batch = eval_batches(cfg)[0]
    with Engine.open(out, fallback="cpu") as engine:
        got = engine(batch)["logits"]
        assert engine.describe()["runs_on"] == "onnxruntime" and "version=0.0.1" in engine.fallback
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "ONNX Runtime's CPU provider" in lines[0]
    want = ort_outputs(out / manifest["graph"]["file"], [batch])["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_feed_that_does_not_fit_is_one_line(deployed):
    root, cfg = deployed
    with (
        Engine.open(root / cfg.paths.deploy) as engine,
        pytest.raises(EngineError, match=r"input 'image': got \[2, 64\]"),
    ):
        engine({"image": np.zeros((2, 64), np.float32)})


@run_if(backend="openvino")
def test_tritons_openvino_model_runs_as_certified_or_says_it_does_not(deployed):
    """Triton's OpenVINO backend takes no precision pin: compiled with the config's parameters alone (as that backend
    compiles it), the graph gives the certified engine's outputs where OpenVINO's default here is the certified
    precision; elsewhere (bf16 by default on AVX-512 CPUs) config.pbtxt opens with a warning saying so."""
    import openvino as ov

    root, cfg = deployed
    out = root / cfg.paths.deploy
    manifest = read_json(out / MANIFEST)
    if manifest["backend"] != "openvino":
        pytest.skip("an OpenVINO engine's Triton model")
    settings = manifest["settings"]
    props = {
        "PERFORMANCE_HINT": settings["performance_hint"],
        "INFERENCE_NUM_THREADS": settings["inference_num_threads"],
    }
    compiled = ov.Core().compile_model(str(out / "triton" / "digits" / "1" / "model.onnx"), "CPU", props)
    batch = eval_batches(cfg)[0]
    with Engine.open(out) as engine:
        want = engine(batch)["logits"]
    config = (out / "triton" / "digits" / "config.pbtxt").read_text()
    ran = str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
    if ran == settings["inference_precision"]:
        np.testing.assert_allclose(compiled(batch)[0], want, rtol=1e-5, atol=1e-5)
        assert "NOT AS CERTIFIED" not in config
    else:
        assert config.startswith(f"# NOT AS CERTIFIED HERE: the engine runs {settings['inference_precision']};")


def test_deploy_refuses_an_engine_whose_gate_failed(deployed, tmp_path, monkeypatch):
    root, cfg = deployed
    failed = read_json(root / cfg.paths.accuracy) | {"passed": False, "failures": ["output 'logits' differs"]}
    (tmp_path / "accuracy.json").write_text(json.dumps(failed))
    monkeypatch.chdir(root)
    bad = compose(
        "model=digits",
        f"precision={cfg.precision.name}",
        f"paths.accuracy={tmp_path}/accuracy.json",
        config_dir=root / "conf",
    )
    with pytest.raises(PipelineError, match=r"accuracy gate failed, nothing is deployed \(output 'logits' differs\)"):
        run_stage(deploy, bad)


def test_deploy_refuses_a_gate_about_another_engine(deployed, tmp_path, monkeypatch):
    """accuracy.json from an earlier engine of the same backend and precision (a stage run by hand): refused."""
    root, cfg = deployed
    stale = read_json(root / cfg.paths.accuracy) | {"engine_sha256": "0" * 64}
    (tmp_path / "accuracy.json").write_text(json.dumps(stale))
    monkeypatch.chdir(root)
    overrides = ("model=digits", f"precision={cfg.precision.name}", f"paths.accuracy={tmp_path}/accuracy.json")
    with pytest.raises(PipelineError, match=r"gated another engine than engine\.\w+ \(sha256\): run `dvc repro`"):
        run_stage(deploy, compose(*overrides, config_dir=root / "conf"))


def test_tensorrt_triton_config_holds_every_profile_and_batches_to_the_largest_profile():
    """The TensorRT form, plan-tested without TensorRT: Triton's tensorrt_plan with each instance on every profile."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    io = {
        "inputs": [{"name": "ids", "dtype": "int64", "shape": ["batch", "seq"]}],
        "outputs": [{"name": "logits", "dtype": "float16", "shape": ["batch", "seq", 8]}],
    }
    profiles = [
        {"ids": {"min": [1, 16], "opt": [4, 64], "max": [8, 128]}},
        {"ids": {"min": [9, 16], "opt": [32, 64], "max": [64, 128]}},
    ]
    model = TensorRTBackend().triton({"profiles": profiles})
    config = text_format.Parse(config_text("m", model, io, profiles), model_config_pb2.ModelConfig())
    assert config.platform == "tensorrt_plan" and config.default_model_filename == "model.plan"
    assert config.max_batch_size == 64 and list(config.input[0].dims) == [-1]
    assert list(config.output[0].dims) == [-1, 8] and config.output[0].data_type == model_config_pb2.TYPE_FP16
    assert list(config.instance_group[0].profile) == ["0", "1"]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


@pytest.mark.skipif(TensorRTBackend().availability().ok, reason="TensorRT runs here: no refusal to show")
def test_a_tensorrt_bundle_on_a_machine_without_tensorrt_falls_back_to_its_graph(deployed, tmp_path, capfd):
    """The ONNX Runtime + TensorRT seed: a bundle whose engine needs TensorRT, opened where it is absent, is refused
    in one line, or with fallback='cpu' runs its graph on ONNX Runtime's CPU provider."""
    root, cfg = deployed
    out = shutil.copytree(root / cfg.paths.deploy, tmp_path / "deploy")
    manifest = read_json(out / MANIFEST) | {"backend": "tensorrt"}
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match=r"is a tensorrt engine and tensorrt does not import") as e:
        Engine.open(out)
    assert "\n" not in str(e.value)
    batch = eval_batches(cfg)[0]
    with Engine.open(out, fallback="cpu") as engine:
        got = engine(batch)["logits"]
    assert "is a tensorrt engine" in capfd.readouterr().err
    np.testing.assert_allclose(
        got, ort_outputs(out / manifest["graph"]["file"], [batch])["logits"], rtol=1e-5, atol=1e-5
    )


def test_outside_check_gives_benchmark_app_the_graph_and_the_engines_settings(deployed, capsys):
    """benchmark_app refuses the blob with a precision option: it gets the graph, the pin, threads and streams."""
    from engineforge import outside_check

    root, cfg = deployed
    out = root / cfg.paths.deploy
    manifest = read_json(out / MANIFEST)
    if manifest["backend"] != "openvino":
        with pytest.raises(SystemExit):
            outside_check.main([str(out), "--benchmark", str(root / cfg.paths.accuracy)])
        assert capsys.readouterr().err.strip().endswith("benchmark_app runs OpenVINO's")
        return
    args = outside_check.command(out / manifest["graph"]["file"], manifest, 32, 1)
    settings = manifest["settings"]
    given = dict(zip(args[1::2], args[2::2], strict=False))
    assert given["-m"] == str(out / manifest["graph"]["file"]) and given["-hint"] == "none"
    assert given["-infer_precision"] == settings["inference_precision"] == "f32"
    assert given["-nthreads"] == str(settings["inference_num_threads"]) and given["-data_shape"] == "image[32,1,8,8]"
