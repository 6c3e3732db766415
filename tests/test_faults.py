"""docs/faults.md: every row of the fault matrix, on real files, real stages and real DVC runs.

Each user mistake must end in exit code 1 and one line naming the problem, with no traceback and no artifact a
later stage could take for valid; what was built before stays intact.
"""

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stages import build as build_stage
from stages import compare, env, export, precision, reference, simplify
from stages.core.artifacts import read_json, sha256
from stages.core.data import load_dataset
from stages.core.errors import PipelineError
from tests.helpers import FAST_BENCH, compose, one_line_error, run, run_stage, write_params
from tests.test_byo import with_mlp

PY = sys.executable


def graph_file(path: Path, nodes: list, initializers: list = (), domains: tuple = ()) -> Path:
    """An ONNX model y = nodes(x) with x, y float32 [n, 4], written to ``path``."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    graph = helper.make_graph(nodes, "g", [x], [y], list(initializers))
    opsets = [helper.make_opsetid("", 18), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def stage(module: str, root: Path, **kwargs) -> subprocess.CompletedProcess:
    """``python -m stages.<module>`` in ``root``, as `dvc repro` runs it."""
    return subprocess.run([PY, "-m", f"stages.{module}"], cwd=root, capture_output=True, text=True, **kwargs)


# --- bad models ---------------------------------------------------------------------------------------------------


def test_truncated_onnx_given_as_model_path_is_not_a_valid_model(repo: Path, mlp_files: Path):
    data = (mlp_files / "mlp.onnx").read_bytes()
    (repo / "cut.onnx").write_bytes(data[: len(data) // 2])
    write_params(repo, "model=onnx", "model.path=cut.onnx")
    line = one_line_error(stage("export", repo))
    assert "error: not a valid ONNX model: cut.onnx (" in line
    assert not (repo / "build/onnx/export/model.onnx").exists()


def test_external_data_outside_the_model_folder_is_refused_inside_it_is_inlined(repo: Path):
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    model_file = graph_file(repo / "m/model.onnx", [helper.make_node("Mul", ["x", "w"], ["y"], name="mul")], [weight])
    model = onnx.load(str(model_file))
    onnx.save(model, str(model_file), save_as_external_data=True, location="w.bin", size_threshold=0)
    write_params(repo, "model=onnx", "model.path=m/model.onnx")
    assert stage("export", repo).returncode == 0  # beside the model: loaded and written into one file
    assert not any(t.external_data for t in onnx.load(str(repo / "build/onnx/export/model.onnx")).graph.initializer)
    (repo / "m/w.bin").rename(repo / "secret.bin")
    model = onnx.load(str(model_file), load_external_data=False)
    model.graph.initializer[0].external_data[0].value = "../secret.bin"
    onnx.save(model, str(model_file))
    line = one_line_error(stage("export", repo))
    assert "unsafe ONNX external data in m/model.onnx: tensor 'w' points to '../secret.bin', outside" in line


def test_an_operator_the_backend_cannot_run_is_named_with_its_node(repo: Path):
    nodes = [helper.make_node("Mystery", ["x"], ["y"], name="odd", domain="com.example")]
    graph_file(repo / "mystery.onnx", nodes, domains=("com.example",))
    write_params(repo, "model=onnx", "model.path=mystery.onnx")
    line = one_line_error(stage("export", repo))
    assert "onnxruntime cannot run operator com.example:Mystery (node 'odd') of mystery.onnx" in line
    assert "is not a registered function/op" in line


# --- bad configuration --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["precision=int4"],
            "precision=int4: no option 'int4' in conf/precision/; options: auto, bf16, fp16, fp32, int8",
        ),
        (["model.foo=1"], "model.foo: no such key; keys of model: name, source, code,"),
        (["benchmark.duration_s=abc"], "benchmark.duration_s: 'abc' is text, expected a number"),
        (["precision=int8", "precision.int8.calibration.samples=1.5"], "samples: 1.5 is a number, expected an integer"),
        (
            ["precision.int8.fallback=true"],
            "precision.int8.fallback: not a key of the chosen options; conf/precision/int8.yaml",
        ),
        (["model=onnx"], "model.path is not set (model.source=onnx): set it with -S model.path=..."),
        (["model=custom", "model.code=x.py"], "model.weights is not set (???): set it with -S model.weights=..."),
    ],
)
def test_config_mistakes_are_one_line_before_any_run(overrides: list[str], message: str):
    args = [a for o in overrides for a in ("-S", o)]
    proc = subprocess.run([PY, "-m", "engineforge.run", "--check", *args], capture_output=True, text=True)
    assert message in one_line_error(proc)


def test_a_wrong_type_in_params_yaml_stops_the_stage_that_reads_it(repo: Path):
    text = (repo / "params.yaml").read_text().replace("duration_s: 3.0", "duration_s: three")
    (repo / "params.yaml").write_text(text)
    line = one_line_error(stage("benchmark", repo))
    assert "benchmark.duration_s: 'three' is text, expected a number (conf/benchmark/default.yaml)" in line


def test_inputs_that_do_not_fit_name_the_input_expected_and_given(repo: Path, mlp_files: Path):
    with_mlp(repo, mlp_files)
    wrong = "model.inputs=[{name: x, shape: [batch, 32], dtype: float32}]"
    cfg = compose("model=onnx", "model.path=examples/data/mlp.onnx", wrong, config_dir=repo / "conf")
    with pytest.raises(PipelineError, match=r"model.inputs\[0\] 'x': \[batch, 32\] float32 given, the model expects "):
        run_stage(export, cfg)
    write_params(repo, "model=mlp", wrong, "model.data.eval=null")  # no data: seeded inputs of the given shape
    line = one_line_error(stage("export", repo))
    assert "model.inputs: the model does not take x [batch, 32] float32: mat1 and mat2 shapes" in line
    write_params(repo, "model=mlp", "model.inputs.0.dtype=int64")
    line = one_line_error(stage("export", repo))
    assert "model.data.eval examples/data/mlp_eval.npz: array 'x' is float32, model.inputs says int64" in line


# --- bad weights and data -----------------------------------------------------------------------------------------


def test_weights_missing_or_of_another_model_name_the_file_and_layer(repo: Path, mlp_files: Path):
    with_mlp(repo, mlp_files)
    write_params(repo, "model=mlp", "model.weights=examples/data/none.pt")
    assert "model.weights: no such file examples/data/none.pt" in one_line_error(stage("export", repo))
    write_params(repo, "model=mlp", "model.weights=models/weights/digits.pt")
    line = one_line_error(stage("export", repo))
    assert "digits.pt does not fit layer '0.weight': shape (16, 1, 3, 3) in the file, (64, 64) in the model" in line
    assert not (repo / "build/mlp/model.onnx").exists()


@pytest.mark.parametrize(
    ("role", "arrays", "message"),
    [
        ("eval", None, r"model.data.eval: no such file examples/data/bad.npz"),
        ("eval", {"x": np.zeros((0, 64), np.float32)}, r"model.data.eval examples/data/bad.npz: array 'x' is empty"),
        ("eval", {"x": np.zeros((5, 63), np.float32)}, r"array 'x' has shape \[5, 63\], model.inputs says"),
        ("eval", {"y": np.zeros((5, 64), np.float32)}, r"bad.npz has no array 'x' \(model.inputs; it has y\)"),
        ("eval", {"x": np.array([{"a": 1}], dtype=object)}, r"bad.npz holds pickled objects; refused"),
        ("calibration", None, r"model.data.calibration: no such file examples/data/bad.npz"),
    ],
)
def test_data_missing_empty_or_wrong_names_the_array(repo: Path, mlp_files: Path, role, arrays, message):
    with_mlp(repo, mlp_files)
    if arrays is not None:
        np.savez(repo / "examples/data/bad.npz", **arrays, allow_pickle=True)
    cfg = compose("model=mlp", f"model.data.{role}=examples/data/bad.npz", config_dir=repo / "conf").model
    with pytest.raises(PipelineError, match=message):
        load_dataset(cfg, "test" if role == "eval" else "train")


def test_inf_in_engine_outputs_fails_compare_naming_the_output(repo: Path):
    scale = numpy_helper.from_array(np.full(4, 2.0, np.float32), "scale")
    graph_file(repo / "double.onnx", [helper.make_node("Mul", ["x", "scale"], ["y"], name="double")], [scale])
    cfg = compose("model=onnx", "model.path=double.onnx", *FAST_BENCH, config_dir=repo / "conf")
    for module in (env, export, simplify, reference, precision, build_stage):
        run_stage(module, cfg)
    x = np.ones((8, 4), np.float32)
    x[3, 1] = np.inf  # eval data holding an Inf: the engine's output does too
    np.savez(repo / "inf.npz", x=x)
    cfg = compose("model=onnx", "model.path=double.onnx", "model.data.eval=inf.npz", config_dir=repo / "conf")
    run_stage(reference, cfg)  # new eval data: DVC reruns the reference run too
    with pytest.raises(
        PipelineError,
        match=r"accuracy gate failed: (batch 1-5 \(fp32\.\w+\): )?output 'y' (of the fp32 reference )?has NaN or Inf",
    ):
        run_stage(compare, cfg)
    report = read_json(repo / compose().paths.accuracy)
    assert not report["passed"] and any(f.endswith("output 'y' has NaN or Inf") for f in report["failures"])


# --- a damaged workspace, killed runs, concurrent runs, full disks: on a real DVC-built pipeline --------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repo of the project where `dvc repro` has built the digits pipeline (short benchmark)."""
    from tests.helpers import copy_repo

    root = copy_repo(tmp_path_factory.mktemp("faults"))
    (root / "dvc.lock").unlink(missing_ok=True)
    write_params(root, "benchmark.duration_s=1.0", "benchmark.warmup_ms=20", "benchmark.rounds=1")
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"], ["dvc", "repro"]):
        run(args, root)
    return root


def engine_file(root: Path) -> Path:
    """The engine file the manifest names (engine.blob for OpenVINO, engine.onnx for ONNX Runtime)."""
    folder = root / "build/digits/fp32/local/engine"
    return folder / read_json(folder / "manifest.json")["engine"]


@pytest.mark.slow
def test_corrupted_engine_is_refused_then_repro_and_checkout_restore_it(built: Path):
    manifest = read_json(built / "build/digits/fp32/local/engine/manifest.json")
    for restore in (["dvc", "repro"], ["dvc", "checkout", "--force"]):
        with open(engine_file(built), "ab") as f:
            f.write(b"tampered")
        line = one_line_error(stage("compare", built))
        assert "sha256" in line and engine_file(built).name in line, line
        run(restore, built)
        assert sha256(engine_file(built)) == manifest["engine_sha256"]


@pytest.mark.slow
def test_damaged_export_is_not_a_valid_model_and_repro_restores_it(built: Path):
    onnx_file = built / "build/digits/export/model.onnx"
    good = sha256(onnx_file)
    onnx_file.chmod(0o644)
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    assert "not a valid ONNX model: build/digits/export/model.onnx (" in one_line_error(stage("simplify", built))
    run(["dvc", "repro"], built)
    assert sha256(onnx_file) == good


@pytest.mark.slow
def test_sigkill_mid_write_leaves_no_half_file_and_the_next_repro_runs_cleanly(built: Path):
    folder = built / "build/digits"
    proc = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "export"], cwd=built, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(folder.glob(".export.*.tmp")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert list(folder.glob(".export.*.tmp")), "export never started writing"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    onnx_file = folder / "export/model.onnx"
    assert not onnx_file.exists() or onnx.load(str(onnx_file)) is not None  # gone, or whole: never half
    run(["dvc", "repro"], built)
    assert not list((built / "build").rglob("*.tmp")), "a killed run's temporary file survived"
    onnx.checker.check_model(onnx.load(str(onnx_file)))


@pytest.mark.slow
def test_a_second_repro_while_one_runs_says_the_repo_is_busy(built: Path):
    first = subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", "benchmark"], cwd=built, stdout=subprocess.PIPE, text=True
    )
    time.sleep(1.5)  # the first holds DVC's repo lock for the benchmark's seconds
    second = run(["dvc", "repro"], built, check=False)
    assert second.returncode != 0 and "is busy, it is being blocked by" in second.stderr  # DVC's own words
    assert first.wait() == 0


@pytest.mark.slow
def test_a_full_disk_names_the_path_and_keeps_the_previous_artifact(built: Path):
    onnx_file = built / "build/digits/export/model.onnx"
    good = sha256(onnx_file)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # noqa: E731  (writes > 20 kB fail)
    line = one_line_error(stage("export", built, preexec_fn=limit))
    assert "cannot write build/digits/export: File too large" in line
    assert sha256(onnx_file) == good and not list((built / "build/digits").glob(".*.tmp"))


def test_a_file_where_the_build_folder_should_be_names_the_path(repo: Path):
    (repo / "build").mkdir(exist_ok=True)
    (repo / "build/digits").write_text("not a folder")
    line = one_line_error(stage("export", repo))
    assert "cannot write build/digits/export" in line
