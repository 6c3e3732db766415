"""The precision stage under each onnxruntime `make setup-gpu` installs (the Makefile's ORT_GPU_<CUDA major>), run
with the CPU wheel of that version: `make setup` puts each one .venv's own is not under ``<venv>/compat``, and the
stage runs in a subprocess with it first on PYTHONPATH. The graphs it writes are held to the ones .venv's own
onnxruntime writes: the same fp16 file, the same int8 nodes and quantization parameters."""

import importlib.metadata
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stages import env, export, reference, simplify
from tests.helpers import ROOT, add_fixture_model, copy_repo, graph_entry, only_graph, run, run_stage, write_params

SETUP_VERSIONS = dict(re.findall(r"^ORT_GPU_(\d+) := (\S+)$", (ROOT / "Makefile").read_text(), re.M))
OWN = importlib.metadata.version("onnxruntime")
OTHERS = sorted({v for v in SETUP_VERSIONS.values() if v != OWN})
PRECISIONS = {
    "fp16": ("precision=fp16",),
    "int8-u8s8": ("precision=int8", "precision.int8.encoding=u8s8"),
    "int8-s8s8": ("precision=int8", "precision.int8.encoding=s8s8"),
}
INT8 = (
    "precision.int8.calibration.samples=32",
    "precision.int8.calibration.batch_size=8",
    "precision.int8.fallback=false",
)


def with_version(version: str) -> dict[str, str]:
    """The environment that imports onnxruntime ``version`` (its CPU wheel under ``<venv>/compat``), or a skip."""
    wheel = Path(sys.prefix) / "compat" / f"onnxruntime-{version}"
    if not (wheel / "onnxruntime").is_dir():
        pytest.skip(f"onnxruntime {version} (a GPU setup's) is not in {wheel.parent}: run make setup")
    return {"PYTHONPATH": str(wheel)}


def test_the_makefile_names_an_onnxruntime_for_each_cuda_major():
    assert set(SETUP_VERSIONS) == {"12", "13"}, SETUP_VERSIONS


@pytest.mark.parametrize("version", OTHERS)
def test_the_fp16_cast_writes_the_same_graph_on_every_setup_onnxruntime(tmp_path, version):
    # a ConstantOfShape without its value (float32 zero by default) feeding a float16 Add: 1.26's converter left it
    # float32, a model no runtime loads
    shape = helper.make_node("Shape", ["x"], ["s"])
    fill = helper.make_node("ConstantOfShape", ["s"], ["z"])
    add = helper.make_node("Add", ["x", "z"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([shape, fill, add], "fill", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), tmp_path / "f.onnx")
    script = (
        "import sys; from pathlib import Path; import onnxruntime as ort; from stages.core.float16 import write_fp16; "
        "assert ort.__version__ == sys.argv[3], ort.__version__; "
        "write_fp16(Path(sys.argv[1]), [], Path(sys.argv[2])); "
        "ort.InferenceSession(sys.argv[2], providers=['CPUExecutionProvider'])"
    )
    for name, wanted, extra in (("own", OWN, {}), ("other", version, with_version(version))):
        extra = {"PYTHONPATH": ":".join(filter(None, [extra.get("PYTHONPATH"), str(ROOT)]))}
        files = [str(tmp_path / "f.onnx"), str(tmp_path / f"{name}.onnx")]
        run([sys.executable, "-c", script, *files, wanted], ROOT, env=extra)
    assert (tmp_path / "own.onnx").read_bytes() == (tmp_path / "other.onnx").read_bytes()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo copy with the tiny model exported and simplified by .venv's own onnxruntime."""
    root = copy_repo(tmp_path_factory.mktemp("versions"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        add_fixture_model(root, "tiny")
        cfg = write_params(root, "model=tiny", "backend=onnxruntime")
        for module in (env, export, simplify, reference):
            run_stage(module, cfg)
    return root


def parameters(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("version", OTHERS)
@pytest.mark.parametrize("case", sorted(PRECISIONS))
def test_the_precision_stage_writes_the_same_graph_on_every_setup_onnxruntime(root, version, case, monkeypatch):
    monkeypatch.chdir(root)
    overrides = ("model=tiny", "backend=onnxruntime", *PRECISIONS[case], *(INT8 if "int8" in case else ()))
    cfg = write_params(root, *overrides)
    graphs = {}
    for name, extra in (("own", {}), ("other", with_version(version))):
        for stage in ("env", "precision"):  # env records the toolchain precision checks it runs with
            run([sys.executable, "-m", f"stages.{stage}"], root, env=extra)
        assert graph_entry(cfg)["precision"] == cfg.precision.name
        graphs[name] = root / f"{name}.onnx"
        shutil.copyfile(only_graph(cfg), graphs[name])
    own, other = (onnx.load(graphs[name]) for name in ("own", "other"))
    if case == "fp16":
        assert graphs["own"].read_bytes() == graphs["other"].read_bytes()
        return
    assert [(n.op_type, list(n.input)) for n in own.graph.node] == [
        (n.op_type, list(n.input)) for n in other.graph.node
    ]
    mine, theirs = parameters(own), parameters(other)
    assert mine.keys() == theirs.keys()
    for name, value in mine.items():  # 1.31 promotes the range to float64 before subtracting: scales move by an ulp
        assert value.dtype == theirs[name].dtype and np.allclose(value, theirs[name], rtol=1e-6, atol=0), name
