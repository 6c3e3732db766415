"""TensorRT backend. On any machine: the build plan, Polygraphy's loader chain built from it, the timing-cache key,
the version checks, the auto choice and the error line. Where TensorRT and a GPU exist: real builds end to end.

No test imports tensorrt at module level; the GPU tests skip with the reason the machine lacks.
"""

import json
import re
from pathlib import Path

import pytest

from stages.backends.tensorrt.backend import ENGINE_FILE
from stages.backends.tensorrt.plan import build_plan, loaders, timing_cache_key
from stages.backends.tensorrt.versions import CHECKED_THROUGH, bf16_problem, unchecked, version_problem
from stages.core.errors import PipelineError
from stages.core.profiles import profile_index
from stages.core.run import plain
from stages.runtime import records, registry
from stages.select.candidate import build_spec
from tests.helpers import AUTO, QUICK, ROOT, compose, env_record, python_module, run, run_if

ENV = compose().paths.env  # the default fleet target's env.json

# What a GPU machine's env.json holds (the shape TensorRTBackend.fingerprint() returns): the plan's input.
H100 = {
    "backend": "tensorrt",
    "cuda": {"driver_api": "12.8", "tensorrt_build": "12"},
    "device": {"compute_capability": "9.0", "driver": "570.86.15", "gpu": "NVIDIA H100 80GB HBM3"},
    "version": "10.9.0.34",
}


def on_gpu(test):
    """Marks ``tensorrt`` and ``gpu``; skipped, with the reason, unless TensorRT imports and a GPU is visible."""
    for mark in (pytest.mark.tensorrt, pytest.mark.gpu, run_if(tensorrt=True, gpu=True, backend="tensorrt")):
        test = mark(test)
    return test


def plan_for(*overrides: str, fingerprint: dict = H100, cache_dir: str = "build/timing_cache") -> dict:
    cfg = compose("backend=tensorrt", *overrides)
    record = env_record(registry.get("tensorrt"), cfg, fingerprint=False)
    spec = build_spec(cfg.model, cfg.precision.name, cfg.benchmark.batch_sizes, record, Path(cache_dir))
    return build_plan(spec.settings, spec.profiles, fingerprint, cache_dir)


def test_default_profile_comes_from_dynamic_axes_and_benchmark_batches():
    plan = plan_for("model=textenc", "benchmark.batch_sizes=[1,8]")
    assert plan["strongly_typed"] is True
    # sequence length only at model.dims (32): a range is a configured profile (backend.tensorrt.profiles)
    assert plan["profiles"] == [
        {name: {"min": [1, 32], "opt": [8, 32], "max": [256, 32]} for name in ("input_ids", "attention_mask")}
    ]
    digits = plan_for()["profiles"][0]["image"]
    assert digits == {"min": [1, 1, 8, 8], "opt": [32, 1, 8, 8], "max": [1024, 1, 8, 8]}


def test_configured_profiles_are_checked_against_the_model():
    two = "backend.tensorrt.profiles=[{image:{min:[1,1,8,8],opt:[1,1,8,8],max:[4,1,8,8]}},{image:{min:[8,1,8,8],opt:[64,1,8,8],max:[64,1,8,8]}}]"
    assert [p["image"]["max"][0] for p in plan_for(two)["profiles"]] == [4, 64]
    with pytest.raises(PipelineError, match=r"backend.tensorrt.profiles\[0\].image: needs 1 <= min <= opt <= max"):
        plan_for("backend.tensorrt.profiles=[{image:{min:[8,1,8,8],opt:[1,1,8,8],max:[8,1,8,8]}}]")
    with pytest.raises(PipelineError, match=r"profiles\[0\].image.min: axis 2 is fixed at 8 in the model, not 9"):
        plan_for("backend.tensorrt.profiles=[{image:{min:[1,1,9,8],opt:[1,1,8,8],max:[8,1,8,8]}}]")
    with pytest.raises(PipelineError, match=r"needs exactly the inputs input_ids, attention_mask"):
        plan_for("model=textenc", "backend.tensorrt.profiles=[{input_ids:{min:[1,1],opt:[1,1],max:[1,1]}}]")


def test_loader_chain_is_polygraphys_strongly_typed_build(tmp_path):
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, PostprocessConfig

    plan = plan_for(
        "model=textenc",
        "backend.tensorrt.workspace_mib=2048",
        "backend.tensorrt.tf32=true",
        "backend.tensorrt.builder_optimization_level=5",
        "backend.tensorrt.hardware_compatibility_level=ampere_plus",
        "backend.tensorrt.version_compatible=true",
        cache_dir=str(tmp_path),
    )
    chain = loaders(plan, "model.int8.onnx")
    assert isinstance(chain, EngineBytesFromNetwork)
    assert chain.timing_cache_path == plan["timing_cache"] and plan["timing_cache"].startswith(str(tmp_path))
    network = chain._network
    assert isinstance(network, NetworkFromOnnxPath) and network.strongly_typed and network.path == "model.int8.onnx"
    post = chain._config
    assert isinstance(post, PostprocessConfig)
    assert post._func.settings["workspace_mib"] == 2048
    assert post._func.settings["hardware_compatibility_level"] == "ampere_plus"
    config = post._config
    assert isinstance(config, CreateConfig)
    assert config.tf32 and not config.fp16 and not config.int8  # precision comes from the ONNX, never from flags
    assert config.builder_optimization_level == 5 and config.version_compatible
    assert config.timing_cache_path == plan["timing_cache"]
    (profile,) = config.profiles
    assert tuple(profile["input_ids"].max) == (256, 32) and tuple(profile["attention_mask"].opt) == (32, 32)


def test_the_timing_cache_folder_exists_when_polygraphy_locks_the_cache_after_the_build(tmp_path):
    from polygraphy import util

    plan = plan_for(cache_dir=str(tmp_path / "first" / "run"))  # a folder no build has made yet
    chain = loaders(plan, "model.onnx")
    with util.LockFile(chain.timing_cache_path):  # EngineBytesFromNetwork's step after TensorRT built the engine
        assert Path(chain.timing_cache_path + ".lock").is_file()


def test_a_build_can_be_made_to_prove_the_timing_cache_held_every_tactic(tmp_path):
    plan = plan_for("backend.tensorrt.error_on_timing_cache_miss=true", cache_dir=str(tmp_path))
    assert loaders(plan, "model.onnx")._config._config.error_on_timing_cache_miss is True
    assert loaders(plan_for(cache_dir=str(tmp_path)), "m.onnx")._config._config.error_on_timing_cache_miss is False
    with pytest.raises(PipelineError, match=r"^backend.tensorrt.error_on_timing_cache_miss=true needs a timing cache"):
        plan_for("backend.tensorrt.error_on_timing_cache_miss=true", "backend.tensorrt.timing_cache=false")


def test_timing_cache_is_shared_by_models_and_keyed_by_tensorrt_and_gpu():
    digits, textenc = plan_for()["timing_cache"], plan_for("model=textenc")["timing_cache"]
    assert digits == textenc and Path(digits).name.startswith("trt10.9.0.34-sm90-")
    other_gpu = json.loads(json.dumps(H100))
    other_gpu["device"] |= {"gpu": "NVIDIA L4", "compute_capability": "8.9"}
    other_version = H100 | {"version": "11.1.0"}
    keys = {timing_cache_key(f) for f in (H100, other_gpu, other_version)}
    assert len(keys) == 3
    assert plan_for("backend.tensorrt.timing_cache=false")["timing_cache"] is None


def test_the_extras_install_no_tensorrt_newer_than_the_last_release_checked():
    import tomllib

    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    last = ".".join(map(str, CHECKED_THROUGH))
    for major in ("12", "13"):
        (spec,) = [Requirement(r).specifier for r in extras[f"tensorrt-cu{major}"] if r.startswith("tensorrt-")]
        assert spec.contains(f"{last}.0") and spec.contains(f"{last}.9.99")
        assert not spec.contains(f"{CHECKED_THROUGH[0]}.{CHECKED_THROUGH[1] + 1}.0") and not spec.contains("12.0.0")
    assert unchecked(f"{last}.0.26") is None and unchecked("10.16.1.11") is None
    assert unchecked("11.4.0.14") == "TensorRT 11.4.0.14 is newer than 11.1, the last release checked (docs/gpu.md)"


def test_settings_of_one_tensorrt_version_fail_in_one_line_on_the_other():
    assert version_problem({"hardware_compatibility_level": "same_compute_capability"}, "10.9.0") is None
    assert version_problem({"hardware_compatibility_level": "same_compute_capability"}, "10.4.0") == (
        "backend.tensorrt.hardware_compatibility_level=same_compute_capability needs TensorRT >= 10.9; "
        "this is TensorRT 10.4.0"
    )
    assert version_problem({"tiling_optimization_level": "none"}, "10.0.1") is None
    assert "tiling_optimization_level=fast needs TensorRT >= 10.8" in version_problem(
        {"tiling_optimization_level": "fast"}, "10.7.0"
    )
    assert version_problem({"tactic_sources": ["cudnn", "jit_convolutions"]}, "10.16.1") is None
    with pytest.raises(
        PipelineError, match=r"tactic_sources=cudnn exists only in TensorRT 10.x; this is TensorRT 11.1"
    ):
        plan_for("backend.tensorrt.tactic_sources=[cudnn]", fingerprint=H100 | {"version": "11.1.0"})
    with pytest.raises(PipelineError, match=r"builder_optimization_level: 7 is not 0\.\.5"):
        plan_for("backend.tensorrt.builder_optimization_level=7")
    with pytest.raises(PipelineError, match="hardware_compatibility_level: 'turing' is not one of none, ampere_plus"):
        plan_for("backend.tensorrt.hardware_compatibility_level=turing")


def test_profile_index_picks_the_profile_holding_the_shapes():
    import numpy as np

    profiles = [
        {"x": {"min": [1, 4], "opt": [2, 4], "max": [4, 4]}},
        {"x": {"min": [5, 4], "opt": [8, 4], "max": [64, 4]}},
    ]
    assert profile_index(profiles, {"x": np.zeros((3, 4))}) == 0
    assert profile_index(profiles, {"x": np.zeros((32, 4))}) == 1
    with pytest.raises(PipelineError, match=r"no optimization profile holds the shapes \{'x': \[65, 4\]\}"):
        profile_index(profiles, {"x": np.zeros((65, 4))})


@pytest.mark.skipif(registry.get("tensorrt").availability().ok, reason="this machine can run TensorRT")
def test_auto_says_why_tensorrt_was_not_chosen():
    files, chosen = records.env_records(plain(compose()))
    record = files[ENV]
    names = [c["backend"] for c in record["candidates"]]
    assert "tensorrt" not in names and names[0] == AUTO.name and record["requested"] == "auto"
    assert record["reason"].startswith("tensorrt unavailable: tensorrt does not import")
    assert chosen.startswith(f"backend {', '.join(names)}")


@pytest.mark.skipif(registry.get("tensorrt").availability().ok, reason="this machine can run TensorRT")
def test_backend_tensorrt_without_tensorrt_is_one_line_and_exit_1(repo: Path):
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("name: auto", "name: tensorrt"))
    proc = python_module("stages.env", repo, check=False)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("engineforge env: error: backend.name=tensorrt: tensorrt does not import (")
    assert line.endswith(
        "pip install -e '.[tensorrt-cu12]' or '.[tensorrt-cu13]' (by the CUDA version nvidia-smi prints)"
    )


@on_gpu
@pytest.mark.parametrize("model", ["digits", "textenc"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_tensorrt_build_compare_and_benchmark(dvc_repo, model, precision):
    run(
        ["dvc", "exp", "run", "-S", "backend=tensorrt", "-S", f"model={model}", "-S", f"precision={precision}", *QUICK],
        dvc_repo,
    )
    manifest = json.loads((dvc_repo / f"build/{model}/{precision}/local/engine/manifest.json").read_text())
    assert manifest["engine"] == ENGINE_FILE and manifest["strongly_typed"] is True
    assert json.loads((dvc_repo / "reports/targets/local/accuracy.json").read_text())["passed"]
    bench = json.loads((dvc_repo / "reports/targets/local/benchmark.json").read_text())
    assert set(bench["runtimes"]["engine"]["bs1"]["gpu_ms"]) == {"h2d", "compute", "d2h"}


@on_gpu
def test_engine_for_another_gpu_is_refused_and_timing_cache_is_reused(dvc_repo):
    run(["dvc", "exp", "run", "-S", "backend=tensorrt", *QUICK], dvc_repo)
    run(["dvc", "exp", "run", "-S", "backend=tensorrt", "-S", "model=textenc", *QUICK], dvc_repo)
    second = json.loads((dvc_repo / "build/textenc/fp32/local/engine/manifest.json").read_text())
    assert second["timing_cache"]["reused"] is True
    manifest_path = dvc_repo / "build/textenc/fp32/local/engine/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["fingerprint"]["device"]["gpu"] = "NVIDIA A100-SXM4-80GB"
    manifest_path.write_text(json.dumps(manifest))
    proc = python_module("stages.compare", dvc_repo, check=False)
    assert proc.returncode == 1 and "was built for device.gpu=NVIDIA A100-SXM4-80GB" in proc.stderr


def test_tensorrt_extras_pin_one_cuda_major_each():
    """A plain `tensorrt` resolves to CUDA 13 builds (driver R580+): each extra keeps TensorRT, cuda-python and the
    CUDA runtime on one CUDA major."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "tensorrt" not in extras
    for major, runtime in (("12", "nvidia-cuda-runtime-cu12>=12.6,<13"), ("13", "nvidia-cuda-runtime>=13,<14")):
        extra = extras[f"tensorrt-cu{major}"]
        assert any(r.startswith(f"tensorrt-cu{major}>=") for r in extra) and runtime in extra
        assert f"cuda-python>={major}" in " ".join(extra) and f"<{int(major) + 1}" in " ".join(extra)


class FakeRuntime:
    """cuda-python's runtime as far as ``capture_graph`` calls it (this machine has no GPU): each call returns
    cuda-python's ``(error, *values)`` tuple and is logged; the capture ends as CUDA would after ``enqueued``."""

    class cudaError_t:
        cudaSuccess, cudaErrorStreamCaptureInvalidated = 0, 901

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self, end_error: int = 0) -> None:
        self.calls: list[str] = []
        self.end_error = end_error

    def __getattr__(self, name: str):
        results = {
            "cudaStreamEndCapture": (self.end_error, None if self.end_error else "graph"),
            "cudaGraphInstantiate": (0, "executable"),
            "cudaGetLastError": (0,),
        }
        return lambda *args: self.calls.append(name) or results.get(name, (0,))


def test_a_cuda_graph_capture_tensorrt_refuses_falls_back_to_plain_enqueue_as_trtexec_does():
    from stages.backends.tensorrt.timing import capture_graph

    rt = FakeRuntime()
    assert capture_graph(rt, "stream", lambda: True) == "executable"
    assert rt.calls == ["cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate", "cudaGraphDestroy"]
    rt = FakeRuntime()  # execute_async_v3 returned False under capture: the graph exists but must not be used
    assert capture_graph(rt, "stream", lambda: False) is None
    assert rt.calls == ["cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphDestroy", "cudaGetLastError"]
    rt = FakeRuntime(end_error=FakeRuntime.cudaError_t.cudaErrorStreamCaptureInvalidated)  # no graph to destroy
    assert capture_graph(rt, "stream", lambda: False) is None
    assert rt.calls == ["cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGetLastError"]


def test_bf16_on_a_gpu_before_ampere_is_one_line_not_a_build_error(monkeypatch):
    from stages.backends.tensorrt import backend as tensorrt
    from stages.core.bfloat16 import bf16_for

    assert bf16_problem(None) is None and bf16_problem("8.0") is None and bf16_problem("12.0") is None
    reason = "TensorRT runs bfloat16 from compute capability 8.0 (Ampere) on; this GPU is sm 7.5: use precision=fp16"
    assert bf16_problem("7.5") == reason
    monkeypatch.setattr(tensorrt, "compute_capability", lambda: "7.5")  # a T4: the GPU is what is missing here
    backend = registry.get("tensorrt")
    assert backend.supports("bf16").reason == reason and not backend.supports("bf16").ok
    assert backend.supports("fp16").ok
    with pytest.raises(PipelineError, match=rf"^precision=bf16: {re.escape(reason)}$"):
        bf16_for(backend.capabilities.record(), [], Path("m.onnx"), Path("o.onnx"))  # what the precision stage calls
    monkeypatch.setattr(tensorrt, "compute_capability", lambda: "8.9")
    assert backend.capabilities.record()["bf16"] == "graph"


def test_the_report_gives_a_gpu_engines_phase_times_and_does_not_call_its_wall_clock_trtexecs():
    from stages.core.report_parts import gpu_times

    phase = {"p50": 0.1, "p99": 0.2, "mean": 0.1}
    run = {"latency_ms": phase, "gpu_ms": {"h2d": phase, "compute": phase, "d2h": phase}}
    bench = {"runtimes": {"engine": {"bs1": run}}, "engine_call": {"cuda_graph": "ignored: not capturable"}}
    text = gpu_times(bench)
    assert "GPU time of the engine (CUDA events; CUDA graph ignored: not capturable): bs1: h2d p50 0.100 ms" in text
    assert "not trtexec's host latency" in text
    assert gpu_times({"runtimes": {"engine": {"bs1": {"latency_ms": phase}}}}) == ""
