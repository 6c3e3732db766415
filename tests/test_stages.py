"""Each stage on a tiny two-input model, in a temporary copy of the repo, with only the params it declares."""

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from omegaconf import OmegaConf

from stages import benchmark, compare, deploy, env, export, precision, reference, report, simplify
from stages import build as build_module
from stages.core.artifacts import read_json, sha256
from stages.core.device import cpu_fingerprint
from stages.core.errors import PipelineError
from stages.core.onnx_io import ort_outputs
from stages.core.run import load_params
from stages.runtime import records, registry
from stages.runtime.engine import Engine
from stages.runtime.manifest import MANIFEST
from tests.helpers import (
    FAST_BENCH,
    ROOT,
    add_fixture_model,
    build_candidate,
    compose,
    copy_repo,
    python_module,
    run_if,
    run_stage,
)

CANDIDATES = registry.candidates("auto", "fp32")[0]  # the backends backend=auto races here


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A repo copy with the tiny model as conf/model/tiny.yaml, run through export..report once."""
    root = copy_repo(tmp_path_factory.mktemp("tiny"))
    add_fixture_model(root, "tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        cfg = compose("model=tiny", *FAST_BENCH, config_dir=root / "conf")
        for module in (env, export, simplify, reference, precision, build_module, compare, benchmark, deploy, report):
            run_stage(module, cfg)
        yield root, cfg


def test_export_writes_one_self_contained_file_with_dynamic_batch(tiny):
    root, cfg = tiny
    model = onnx.load(root / cfg.paths.onnx)
    assert not list((root / cfg.paths.model_dir).glob("*.data"))
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert inputs == {"x": ["batch", 6], "scale": ["batch", 1]}
    assert model.opset_import[0].version == cfg.export.opset
    record = read_json(root / cfg.paths.export_report)
    assert record["check"]["samples"] == min(cfg.export.check.samples, 40)  # the tiny test split has 40
    assert record["check"]["outputs"]["y"]["passed"]
    assert record["check"]["outputs"]["y"]["max_abs"] < 1e-4


def test_simplify_records_node_counts_and_unchanged_outputs(tiny):
    root, cfg = tiny
    record = read_json(root / cfg.paths.simplify_report)
    assert record["nodes"]["after"] == len(onnx.load(root / cfg.paths.simplified).graph.node)
    assert record["nodes"]["before"] == len(onnx.load(root / cfg.paths.onnx).graph.node)
    assert record["check"]["outputs"]["y"]["passed"]


def test_fp32_precision_passes_the_graph_through(tiny):
    root, cfg = tiny
    report = read_json(root / cfg.paths.precision_report)
    assert report["precision"] == "fp32" and report["skipped"] == []
    assert [e["backend"] for e in report["candidates"]] == [b.name for b in CANDIDATES]  # one graph per candidate
    for entry in report["candidates"]:
        assert sha256(root / cfg.paths.precise / entry["file"]) == sha256(root / cfg.paths.simplified)


def test_env_is_deterministic(tiny):
    root, cfg = tiny
    first = (root / cfg.paths.env).read_bytes()
    run_stage(env, cfg)
    assert (root / cfg.paths.env).read_bytes() == first
    recorded = json.loads(first)
    assert [c["backend"] for c in recorded["candidates"]] == [b.name for b in CANDIDATES]
    assert recorded["requested"] == "auto" and set(recorded) == {"candidates", "reason", "requested"}
    made = {"backend": "auto", "precision": cfg.precision.name}
    assert json.loads((root / cfg.paths.host).read_text()) == {"cpu": cpu_fingerprint(), "made_for": made}
    for record in recorded["candidates"]:
        assert record["fingerprint"]["device"]["cpu"]["cores"] >= 1
        assert record["capabilities"] == registry.get(record["backend"]).capabilities.record()


def test_build_manifest_records_the_full_key(tiny):
    root, cfg = tiny
    engine = root / cfg.paths.engine
    manifest = read_json(engine / MANIFEST)
    graph = root / cfg.paths.precise / f"fp32.{manifest['backend']}.onnx"
    assert manifest["onnx"] == {"path": str(cfg.paths.precise) + f"/{graph.name}", "sha256": sha256(graph)}
    assert manifest["engine_sha256"] == sha256(engine / manifest["engine"])
    records = {r["backend"]: r for r in read_json(root / cfg.paths.env)["candidates"]}
    assert manifest["fingerprint"] == records[manifest["backend"]]["fingerprint"] and manifest["settings"]
    tuning = manifest["tuning"]  # tuned at build: every timing and the choice, which the settings follow
    assert tuning["chosen"] == min(tuning["timings"], key=lambda t: t["score"])["settings"]
    assert all(manifest["settings"][k] == v for k, v in tuning["chosen"].items() if v)  # 0: the runtime's choice
    assert manifest["precision"] == "fp32" and manifest["model"] == "tiny"
    parts = [p["folder"] for p in manifest["dispatch"] if p["folder"] != "."]  # one engine per batch range
    assert sorted(p.name for p in engine.iterdir()) == sorted([MANIFEST, manifest["engine"], *parts])


def test_compare_report_matches_the_issue_schema(tiny):
    root, cfg = tiny
    acc = read_json(root / cfg.paths.accuracy)
    assert acc["passed"] is True and acc["failures"] == []
    shipped = read_json(root / cfg.paths.engine / MANIFEST)["backend"]
    assert (acc["model"], acc["precision"], acc["backend"]) == ("tiny", "fp32", shipped)
    assert set(acc["outputs"]["y"]) == {
        "max_abs",
        "max_rel",
        "mean_abs",
        "p99_abs",
        "rel_l2",
        "ref_std",
        "atol",
        "rtol",
        "passed",
    }
    assert acc["task"]["metric"] == "agreement" and acc["task"]["samples"] == 40
    assert acc["task"]["agreement"] == 1.0


def test_benchmark_measures_engine_and_baselines_at_every_batch(tiny):
    root, cfg = tiny
    bench = read_json(root / cfg.paths.benchmark)
    declared = {r["baseline"] for r in read_json(root / cfg.paths.runtimes).values() if r["baseline"]}
    assert "onnxruntime_fp32" in declared  # benchmark.baselines=auto: every runtime here declares its own
    assert set(bench["runtimes"]) == {"engine", "pytorch_eager"} | declared
    assert set(bench["baselines"]) == {"pytorch_eager"} | declared  # what each ran with
    assert bench["baselines"]["onnxruntime_fp32"]["providers"] == ["CPUExecutionProvider"]
    for runs in bench["runtimes"].values():
        assert set(runs) == {"bs1", "bs32"}
        for batch, run in runs.items():
            lat = run["latency_ms"]
            assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
            assert run["iterations"] >= cfg.benchmark.min_iterations
            assert run["samples_per_s"] == pytest.approx(run["qps"] * int(batch[2:]), rel=1e-3)
    curve = [line.split(",") for line in (root / cfg.paths.latency / "bs32.csv").read_text().splitlines()]
    assert curve[0] == ["percentile", "runtime", "latency_ms"]
    assert {row[1] for row in curve[1:]} == set(bench["runtimes"])


def test_report_summarizes_accuracy_latency_and_versions(tiny):
    root, cfg = tiny
    text = (root / cfg.paths.summary).read_text()
    shipped = read_json(root / cfg.paths.engine / MANIFEST)["backend"]
    assert f"# tiny · fp32 · {shipped}" in text and "Accuracy gate PASSED" in text
    assert "| engine | 32 |" in text and "engine vs pytorch_eager" in text and "onnxruntime 1." in text
    assert (root / cfg.paths.latency_plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_cannot_read_undeclared_params(tiny, tmp_path):
    _, cfg = tiny
    params = tmp_path / "params.yaml"
    params.write_text(OmegaConf.to_yaml(cfg))
    restricted = load_params("precision", params, ROOT / "dvc.yaml")
    assert restricted.precision.name == cfg.precision.name
    with pytest.raises(Exception, match="benchmark"):
        _ = restricted.benchmark
    with pytest.raises(Exception, match="read-only"):
        restricted.precision.name = "int8"
    plain = load_params("env", params, ROOT / "dvc.yaml", plain=True)  # the env stage's light path
    paths = {k: cfg.paths[k] for k in ("build", "env", "host", "runtimes", "timing_cache")}
    declared = {"backend": OmegaConf.to_container(cfg.backend), "precision": {"name": cfg.precision.name}}
    local = cfg.fleet.targets.local
    fleet = {
        "targets": {"local": {"env": OmegaConf.to_container(local.env), "match": OmegaConf.to_container(local.match)}}
    }
    assert plain == declared | {"paths": paths, "fleet": fleet}
    tree = OmegaConf.to_container(cfg)
    del tree["backend"]["race"]
    params.write_text(OmegaConf.to_yaml(tree))
    with pytest.raises(PipelineError, match=r"has no key 'backend\.race'"):
        load_params("build", params, ROOT / "dvc.yaml", plain=True)


GPU_MARKS = {"tensorrt": [pytest.mark.tensorrt, pytest.mark.gpu]}  # backends that need the library and a GPU


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[run_if(backend=n), *GPU_MARKS.get(n, [])]) for n in registry.names()]
)
def test_every_backend_builds_runs_and_times_the_same_model(tiny, tmp_path, name):
    """The same assertions for every registered backend this machine can run."""
    root, cfg = tiny
    backend = registry.get(name)
    engine = tmp_path / "engine"
    manifest = build_candidate(backend, cfg, root / cfg.paths.simplified, engine)
    assert manifest["backend"] == name and (engine / manifest["engine"]).is_file()
    feed = {"x": np.ones((3, 6), np.float32), "scale": np.full((3, 1), 2.0, np.float32)}
    expected = ort_outputs(root / cfg.paths.simplified, [feed])["y"]
    with Engine.open(engine) as opened:
        np.testing.assert_allclose(opened(feed)["y"], expected, rtol=1e-4, atol=1e-5)
        call = opened.timed_call(feed)
        for _ in range(3):
            call()
        call.close()


def test_build_refuses_an_env_json_without_the_candidates_in_one_line(tiny, tmp_path, monkeypatch):
    """An env.json written before it listed the candidate backends (a stage run by hand): rerun env."""
    root, cfg = tiny
    record = read_json(root / cfg.paths.env)["candidates"][0]
    old = {"backend": record["backend"], "fingerprint": record["fingerprint"], "reason": "", "target": None}
    (tmp_path / "env.json").write_text(json.dumps(old))
    monkeypatch.chdir(root)
    stale = compose("model=tiny", *FAST_BENCH, f"paths.env={tmp_path}/env.json", config_dir=root / "conf")
    for module in (precision, build_module):
        with pytest.raises(PipelineError, match=r"env\.json is stale \(it has no candidates\): run `dvc repro`"):
            run_stage(module, stale)


def test_engine_with_changed_bytes_is_refused(tiny, tmp_path):
    root, cfg = tiny
    engine = tmp_path / "engine"
    shutil.copytree(root / cfg.paths.engine, engine)
    manifest = read_json(engine / MANIFEST)
    with open(engine / manifest["engine"], "ab") as f:
        f.write(b"\0")
    with pytest.raises(PipelineError, match="does not match its manifest"):
        Engine.open(engine)


def test_engine_built_for_another_runtime_version_is_refused(tiny, tmp_path):
    root, cfg = tiny
    engine = tmp_path / "engine"
    shutil.copytree(root / cfg.paths.engine, engine)
    manifest = read_json(engine / MANIFEST)
    manifest["fingerprint"]["version"] = "0.0.1"
    (engine / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match=r"built for version=0\.0\.1, this machine has version=\d"):
        Engine.open(engine)


def test_build_ships_no_engine_that_differs_from_the_reference(tiny, tmp_path, monkeypatch):
    """A real failure: the engines are built from a graph whose weights were perturbed. A race ships none of them,
    and a single candidate is gated alone: build refuses in one line, and the engine folder keeps the last engine
    that passed (compare's own gate failing: tests/test_faults.py)."""
    root, cfg = tiny
    monkeypatch.chdir(root)
    single = compose("model=tiny", *FAST_BENCH, "backend=onnxruntime", config_dir=root / "conf")

    def perturb(config: Any) -> None:
        model = onnx.load(root / config.paths.simplified)
        weight = next(t for t in model.graph.initializer if len(t.dims) == 2)
        weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) + 0.05, weight.name))
        for entry in read_json(root / config.paths.precision_report)["candidates"]:
            onnx.save(model, root / config.paths.precise / entry["file"])

    try:
        perturb(cfg)
        if len(CANDIDATES) > 1:
            with pytest.raises(PipelineError, match=r"no candidate passed its accuracy gate: .*output 'y' differs"):
                run_stage(build_module, cfg)
        for module in (env, precision):
            run_stage(module, single)
        perturb(single)
        shipped = sha256(root / cfg.paths.engine / read_json(root / cfg.paths.engine / MANIFEST)["engine"])
        alone = r"the fp32.onnxruntime engine failed its accuracy gate on \d+ eval samples \(output 'y' differs by up"
        with pytest.raises(PipelineError, match=alone):
            run_stage(build_module, single)
        assert sha256(root / cfg.paths.engine / read_json(root / cfg.paths.engine / MANIFEST)["engine"]) == shipped
    finally:  # put the pipeline back for any test that runs after this one
        for module in (env, precision, build_module, compare):
            run_stage(module, cfg)


def test_batch_size_above_the_model_limit_is_a_one_line_error(tiny, monkeypatch):
    root, _ = tiny
    monkeypatch.chdir(root)
    cfg = compose("model=tiny", "benchmark.batch_sizes=[1,65]", config_dir=root / "conf")
    with pytest.raises(PipelineError, match=r"benchmark.batch_sizes: batch size 65 is outside 1\.\.64"):
        run_stage(benchmark, cfg)


def test_stage_entry_point_prints_one_line_and_exits_1_on_user_error(repo: Path):
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("fp32", "fp64"))
    proc = python_module("stages.precision", repo, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "engineforge precision: error: precision.name: 'fp64' is not one of fp32, fp16, bf16, int8, auto"
    ]


def test_export_holds_no_install_paths(tiny):
    """The exporter's per-node stack traces name the venv and the recipe by absolute path; the stage drops them,
    so the same export from another clone or venv has the same bytes (engineforge.reproduce checks it in CI)."""
    root, cfg = tiny
    model = onnx.load(root / cfg.paths.onnx)
    keys = {p.key for n in model.graph.node for p in n.metadata_props}
    assert "pkg.torch.onnx.stack_trace" not in keys and "namespace" in keys  # other metadata stays
    text = (root / cfg.paths.onnx).read_bytes().decode("latin-1")
    assert str(root) not in text and sys.prefix not in text


def test_a_session_that_fell_back_from_the_asked_provider_is_refused(tiny):
    from stages.backends.onnxruntime.session import check_provider, open_session, session_options

    root, cfg = tiny
    session = open_session(root / cfg.paths.simplified, session_options(1, "all"), ["CPUExecutionProvider"])
    check_provider(session, "CPUExecutionProvider")
    with pytest.raises(PipelineError) as e:
        check_provider(session, "CUDAExecutionProvider")
    assert str(e.value) == (
        "backend.onnxruntime.providers: asked for CUDAExecutionProvider but ONNX Runtime runs on CPUExecutionProvider "
        "(it falls back silently when a provider's libraries do not load)"
    )


def test_the_manifest_records_what_env_resolved_and_stages_read_it_not_the_backend(tiny):
    """One record: the env stage resolves a backend once (capabilities, fingerprint, settings, its package's code
    digest); the manifest carries the shipped candidate's capabilities and digest; a candidate answers what it can
    run from the record, never by asking the backend again."""
    from stages.runtime.spec import Bf16, Capabilities
    from stages.select.candidate import Candidate

    root, cfg = tiny
    manifest = read_json(root / cfg.paths.engine / MANIFEST)
    record = next(c for c in read_json(root / cfg.paths.env)["candidates"] if c["backend"] == manifest["backend"])
    assert manifest["capabilities"] == record["capabilities"] and manifest["code"] == record["code"]
    assert record["code"] == records.code_digest(manifest["backend"])
    assert set(read_json(root / cfg.paths.runtimes)) == {b.name for b in CANDIDATES}  # every runtime here
    refused = dict(record, capabilities=dict(record["capabilities"], bf16="none", bf16_reason="not in this record"))
    chosen = Candidate(registry.get(record["backend"]), "bf16", refused)
    assert chosen.capabilities.supports("bf16").reason == "not in this record"
    assert Capabilities.from_record(record["capabilities"]).record() == record["capabilities"]
    assert Capabilities.from_record(refused["capabilities"]).bf16 is Bf16.NONE
    edited = {"candidates": [dict(record, code="0" * 64)]}  # env.json from before a backend edit (run by hand)
    stale = rf"^build/targets/local/env.json is stale \(the code of stages/backends/{record['backend']} changed\): run `dvc repro`"
    with pytest.raises(PipelineError, match=stale):
        records.read_candidates(edited, "build/targets/local/env.json")


def test_manifest_records_the_profile_and_compare_runs_its_edges(tiny):
    root, cfg = tiny
    top = read_json(root / cfg.paths.engine / MANIFEST)  # one engine per batch range, each profiled for its own
    spans = [tuple(p["serves"]) for p in top["dispatch"]]
    assert spans == [(1, 5), (6, cfg.model.max_batch)]
    for part, (first, last), opt in zip(top["dispatch"], spans, (1, 32), strict=True):
        (profile,) = read_json(root / cfg.paths.engine / part["folder"] / MANIFEST)["profiles"]
        assert profile["x"] == {"min": [first, 6], "opt": [opt, 6], "max": [last, 6]}
    parts = read_json(root / cfg.paths.accuracy)["parts"]  # compare ran each engine at its own edges
    assert [[(e["edge"], e["shapes"]["x"][0], e["data"]) for e in p["profile_edges"]] for p in parts] == [
        [("min", first, "eval"), ("max", last, "eval")] for first, last in spans
    ]


def test_tensorrt_provider_engines_are_optimized_offline_without_it_at_basic():
    """ONNX Runtime cannot save a model holding TensorRT-compiled nodes: the build optimizes on the other providers,
    at most at `basic` (higher levels bake in CPU-only layouts), and TensorRT joins when the engine loads."""
    from stages.backends.onnxruntime.session import offline_providers

    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert offline_providers(gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert offline_providers(["TensorrtExecutionProvider"]) == ["CPUExecutionProvider"]
    assert offline_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_onnxruntime_behind_tensorrt_gets_its_int8_form_flags_profile_and_a_cache_outside_the_engine():
    """What ONNX Runtime's TensorRT provider is handed, from env.json's record to the session's provider options
    (the provider itself needs a GPU: its session is not opened here)."""
    from stages.backends.onnxruntime.session import provider_options, with_tensorrt_options
    from stages.core.run import plain
    from stages.select.candidate import build_spec

    backend = registry.get("onnxruntime")
    gpu = "backend.onnxruntime.providers=[TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider]"
    cfg = compose("backend=onnxruntime", gpu)
    record = records.candidate_record(backend, plain(cfg.backend))
    assert record["capabilities"]["int8_encoding"] == "s8s8" and record["capabilities"]["device"] == "cuda"
    assert precision.encoding_for("auto", record["capabilities"]) == "s8s8"  # TensorRT's parser takes no uint8
    cpu = records.candidate_record(backend, plain(compose("backend=onnxruntime").backend))["capabilities"]
    assert cpu["int8_encoding"] in ("u8s8", "u8s7") and cpu["device"] == "cpu"

    cache = Path(cfg.paths.timing_cache)
    options = {}
    for name in ("int8", "fp16", "fp32"):
        spec = build_spec(cfg.model, name, [1, 32], record, cache)
        options[name] = with_tensorrt_options(dict(record["settings"]), spec)["tensorrt_options"]
    assert (options["int8"]["trt_int8_enable"], options["int8"]["trt_fp16_enable"]) == ("True", "False")
    assert (options["fp16"]["trt_int8_enable"], options["fp16"]["trt_fp16_enable"]) == ("False", "True")
    assert (options["fp32"]["trt_int8_enable"], options["fp32"]["trt_fp16_enable"]) == ("False", "False")
    shapes = {k: options["int8"][f"trt_profile_{k}_shapes"] for k in ("min", "opt", "max")}
    assert shapes == {"min": "image:1x1x8x8", "opt": "image:32x1x8x8", "max": f"image:{cfg.model.max_batch}x1x8x8"}
    where = Path(options["int8"]["trt_engine_cache_path"])
    assert where == Path(options["int8"]["trt_timing_cache_path"]) and where.parent == cache
    assert not where.is_relative_to(cfg.paths.engine)  # compare and benchmark never write into build's output
    judge = build_spec(cfg.model, "int8", [8], record, None)  # the precision stage's judge: no cache
    assert "trt_engine_cache_path" not in with_tensorrt_options(dict(record["settings"]), judge)["tensorrt_options"]
    assert "tensorrt_options" not in with_tensorrt_options({"providers": ["CPUExecutionProvider"]}, judge)
    assert provider_options(list(record["settings"]["providers"]), options["int8"]) == [options["int8"], {}, {}]


def test_benchmark_reports_the_cold_start_of_the_engine_as_an_application_opens_it(tiny):
    """build seconds (from the manifest), Engine.open and first-inference milliseconds, beside steady state."""
    root, cfg = tiny
    report = read_json(root / cfg.paths.benchmark)
    cold = report["cold_start"]
    assert cold["build_s"] > 0 and cold["batch"] == cfg.benchmark.batch_sizes[0]  # the manifest's (later tests rebuild)
    assert cold["open_ms"] > 0 and cold["first_inference_ms"] > 0
    assert "open ms" in (root / cfg.paths.summary).read_text()


def test_engines_are_loaded_only_by_engine_open():
    """The race, compare, benchmark and deploy run engines only through Engine: nothing but its loader
    (stages/runtime/loading.py) calls a backend's load_runner."""
    import ast

    callers = set()
    for path in [*ROOT.glob("stages/**/*.py"), *ROOT.glob("engineforge/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "load_runner" and isinstance(node.ctx, ast.Load):
                callers.add(path.relative_to(ROOT).as_posix())
    assert callers <= {"stages/runtime/loading.py", "stages/runtime/base.py"} and callers
