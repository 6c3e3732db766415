"""The GPU environment a TensorRT run needs (stages/runtime/cuda_setup.py) and `python -m engineforge.gpu_check`.

On any machine: the check's lines and exit code, libcudart found where Polygraphy's own search looks, the CUDA major
of TensorRT's wheel, the driver/CUDA-major refusal, the two-onnxruntime conflict, the TensorRT provider's libnvinfer
preload, and the tiny s8s8 model the check hands TensorRT. Where a GPU exists the check runs its GPU items for real.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.core.errors import PipelineError
from stages.runtime import cuda_setup
from tests.helpers import ROOT, run, run_if

ITEMS = [
    "onnxruntime", "driver", "tensorrt", "cuda-python", "libcudart", "device",
    "engine", "int8", "ort-tensorrt", "timing-cache",
]  # fmt: skip
GPU_ITEMS = {"driver", "tensorrt", "cuda-python", "device", "engine", "int8", "timing-cache"}
NO_DRIVER = not Path("/proc/driver/nvidia/version").exists()


def gpu_check(env: dict[str, str] | None = None) -> tuple[int, dict[str, tuple[str, str]]]:
    """Run the check as a user does; its exit code and item -> (status, detail)."""
    proc = run([sys.executable, "-m", "engineforge.gpu_check"], ROOT, check=False, env=env)
    assert proc.stderr == "" or "Traceback" not in proc.stderr, proc.stderr
    lines = {}
    for line in proc.stdout.strip().splitlines():
        status, name, detail = line.split(maxsplit=2)
        lines[name] = (status, detail)
    assert list(lines) == ITEMS, proc.stdout
    return proc.returncode, lines


def fake_distribution(root: Path, name: str, version: str) -> None:
    """An installed distribution's metadata, as pip leaves it (no code: only what importlib.metadata reads)."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.mark.skipif(not NO_DRIVER, reason="this machine has an NVIDIA driver: its GPU items apply")
def test_without_a_gpu_the_check_skips_every_gpu_item_with_its_reason_and_exits_0():
    code, lines = gpu_check()
    assert code == 0
    for name in GPU_ITEMS:
        status, detail = lines[name]
        assert status == "SKIP" and detail, (name, detail)
    assert lines["driver"][1].startswith("no NVIDIA driver here")
    assert lines["engine"][1] == "needs tensorrt, device"
    assert lines["onnxruntime"][0] == "PASS" and "CPUExecutionProvider" in lines["onnxruntime"][1]
    assert lines["ort-tensorrt"][0] == "SKIP" and "no TensorRT provider" in lines["ort-tensorrt"][1]


def test_both_onnxruntime_distributions_fail_the_check(tmp_path):
    fake_distribution(tmp_path, "onnxruntime-gpu", "1.31.1")
    code, lines = gpu_check({"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])})
    status, detail = lines["onnxruntime"]
    assert code == 1 and status == "FAIL"
    assert detail.startswith("onnxruntime 1.31.1 and onnxruntime-gpu 1.31.1 are both installed and share one module")


def test_cuda13_wheels_libcudart_is_put_where_polygraphys_wrapper_looks(tmp_path, monkeypatch):
    """CUDA 13's runtime wheel installs nvidia/cu13/lib/libcudart.so.13; Polygraphy 0.53.6 searches
    LD_LIBRARY_PATH, the toolkit and nvidia/cuda_runtime/lib only."""
    from polygraphy import util
    from polygraphy.cuda.cuda import _find_cuda_lib_dirs

    lib = tmp_path / "nvidia" / "cu13" / "lib" / "libcudart.so.13"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cuda_setup, "POLYGRAPHY_DIRS", ())  # as on a machine without the CUDA toolkit
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    assert str(lib) not in util.find_in_dirs("libcudart.so*", _find_cuda_lib_dirs())
    assert cuda_setup.expose_cudart() == lib
    assert os.environ["LD_LIBRARY_PATH"] == str(lib.parent)
    assert str(lib) in util.find_in_dirs("libcudart.so*", _find_cuda_lib_dirs())


def test_cudart_on_ld_library_path_wins_and_is_left_alone(tmp_path, monkeypatch):
    mine = tmp_path / "toolkit" / "libcudart.so.12"
    mine.parent.mkdir()
    mine.write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(mine.parent))
    assert cuda_setup.expose_cudart() == mine and os.environ["LD_LIBRARY_PATH"] == str(mine.parent)


def test_tensorrt_cuda_major_comes_from_its_libraries_wheel(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cuda_setup.tensorrt_cuda_major() is None
    fake_distribution(tmp_path, "tensorrt-cu13-libs", "11.1.0.7")
    assert cuda_setup.tensorrt_cuda_major() == "13"


def test_a_driver_older_than_the_cuda_major_is_one_line_with_the_fix():
    assert cuda_setup.driver_problem(12080, 12090) is None  # minor-version compatibility within a major
    assert cuda_setup.driver_problem(13000, 12060) is None
    assert cuda_setup.driver_problem(0, 13000) is None  # no driver: said elsewhere
    assert cuda_setup.driver_problem(12040, 13000) == (
        "the NVIDIA driver supports CUDA up to 12.4 but the installed CUDA runtime is 13.0: "
        "pip install -e '.[tensorrt-cu12]' (docs/gpu.md), or update the driver to R580 or newer"
    )
    assert cuda_setup.driver_problem(11080, 12060).endswith("12.6: update the driver to R525 or newer")


def test_the_tensorrt_provider_library_names_the_libnvinfer_it_needs(tmp_path):
    """The dynamic string table of onnxruntime-gpu 1.26.0's and 1.31.1's provider holds libnvinfer.so.10."""
    library = tmp_path / "libonnxruntime_providers_tensorrt.so"
    library.write_bytes(b"\x7fELF\0libcublas.so.13\0libdl.so.2\0libnvinfer.so.10\0libnvonnxparser.so.10\0")
    assert cuda_setup.nvinfer_major(library) == "10"
    library.write_bytes(b"\x7fELF\0libcublas.so.13\0")
    assert cuda_setup.nvinfer_major(library) is None


def test_a_tensorrt_major_the_onnxruntime_provider_does_not_link_is_a_skip_naming_the_fix(tmp_path, monkeypatch):
    """What pip leaves by default: TensorRT 11 beside onnxruntime-gpu, whose provider links libnvinfer.so.10. The
    GPU packages are what this machine lacks, so they are the fakes: a tensorrt module that has only its version,
    the provider library's dynamic strings, and onnxruntime listing the provider."""
    import types

    import onnxruntime

    from engineforge.gpu_check import GpuCheck, Skip

    library = tmp_path / "libonnxruntime_providers_tensorrt.so"
    library.write_bytes(b"\x7fELF\0libcublas.so.13\0libnvinfer.so.10\0libnvonnxparser.so.10\0")
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="11.4.0.14"))
    monkeypatch.setattr(cuda_setup, "ort_tensorrt_provider", lambda: library)
    monkeypatch.setattr(cuda_setup, "tensorrt_cuda_major", lambda: "13")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPU"])
    with pytest.raises(Skip, match=r"links libnvinfer.so.10, but TensorRT 11.4.0.14 is installed: make setup-gpu"):
        GpuCheck(tmp_path).ort_tensorrt()
    assert str(cuda_setup.provider_tensorrt_problem()).endswith("make setup-gpu CUDA=13 TRT=10 (docs/gpu.md)")
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.16.1.11"))
    assert cuda_setup.provider_tensorrt_problem() is None


@pytest.mark.skipif(cuda_setup.installed("tensorrt-cu12-libs", "tensorrt-cu13-libs") != {}, reason="has TensorRT")
def test_onnxruntime_tensorrt_provider_without_tensorrt_is_one_line(tmp_path):
    from engineforge.tiny import tiny_model
    from stages.backends.onnxruntime.session import open_session, session_options

    with pytest.raises(PipelineError, match=r"^backend.onnxruntime.providers: ONNX Runtime's TensorRT provider needs"):
        open_session(tiny_model(tmp_path / "t.onnx"), session_options(0, "basic"), ["TensorrtExecutionProvider"])


def test_the_checks_s8s8_model_is_tensorrts_form_and_close_to_float(tmp_path):
    """What the int8 item hands TensorRT: the precision stage's s8s8 Q/DQ (zero points 0, float biases)."""
    import onnx
    from onnx import numpy_helper

    from engineforge.tiny import cpu_reference, feed, s8s8_model, tiny_model, worst

    fp32 = tiny_model(tmp_path / "tiny.onnx")
    model = onnx.load(str(s8s8_model(fp32, tmp_path / "tiny.s8s8.onnx")))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len([n for n in model.graph.node if n.op_type == "QuantizeLinear"]) >= 2 and len(dq) >= 4
    for node in dq:
        assert node.input[0] not in init or init[node.input[0]].dtype == np.int8  # never an int32 bias
        assert not np.any(init[node.input[2]]) and init[node.input[2]].dtype == np.int8
    error = worst(cpu_reference(tmp_path / "tiny.s8s8.onnx", feed()), cpu_reference(fp32, feed()))
    assert 0 < error < 0.1


@pytest.mark.tensorrt
@pytest.mark.gpu
@run_if(tensorrt=True, gpu=True, backend="tensorrt")
def test_on_a_gpu_every_item_that_applies_passes():
    code, lines = gpu_check()
    assert code == 0, lines
    assert {name for name, (status, _) in lines.items() if status == "PASS"} >= GPU_ITEMS
