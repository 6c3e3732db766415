"""The engine cache on real `dvc exp run`s in a temporary repo, read from DVC's own output and dvc.lock:
restore instead of rebuild, rerun only what a change reaches, never restore timings."""

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from stages.runtime import registry
from tests.helpers import OTHER_KERNELS, QUICK, compose, ran_stages, run, write_params

pytestmark = pytest.mark.slow
RESTORED = "Stage '{}@local' is cached - skipping run, checking out outputs"  # a stage of the one target
CANDIDATES = registry.candidates("auto", "fp32")[0]  # the backends backend=auto races here


def exp_run(repo: Path, *overrides: str) -> str:
    args = [a for o in overrides for a in ("-S", o)]
    return run(["dvc", "exp", "run", *args, *QUICK], repo).stdout


def lock_outs(repo: Path, stage: str) -> dict[str, str]:
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    entry = stages.get(stage) or stages[f"{stage}@local"]  # shared, or the default fleet's one target's
    return {out["path"]: out["md5"] for out in entry.get("outs", [])}


def test_switching_back_restores_and_each_change_reruns_only_what_it_reaches(dvc_repo: Path):
    exp_run(dvc_repo)
    fp32_engine = lock_outs(dvc_repo, "build")
    exp_run(dvc_repo, "precision=int8")

    back = exp_run(dvc_repo, "precision=fp32")  # fp32 -> int8 -> fp32: the fp32 engine comes back, unbuilt
    assert RESTORED.format("build") in back and RESTORED.format("precision") in back
    assert not re.search(r"^engineforge (precision|build)@local:", back, re.MULTILINE)
    assert lock_outs(dvc_repo, "build") == fp32_engine
    assert "benchmark" in ran_stages(back) and RESTORED.format("benchmark") not in back  # timings never restore

    bench = exp_run(dvc_repo, "benchmark.min_iterations=11")  # a benchmark setting: benchmark and report only
    assert ran_stages(bench) == ["env", "benchmark", "report", "fleet"], bench

    where = exp_run(dvc_repo, "benchmark.min_iterations=11", "fleet.targets.local.runner=self-hosted")  # where: no
    # rebuild, no rerun (the runner label is no stage's param but fleet's)
    assert ran_stages(where) == ["env", "fleet"], where
    write_params(dvc_repo, "+fleet.targets.local.env.OMP_WAIT_POLICY=PASSIVE", *QUICK[1::2])  # what a target is
    what = status(dvc_repo, "fleet")  # every stage of the target would rerun, nothing shared
    assert {"precision", "build", "compare", "benchmark", "deploy", "report"} <= set(what), what
    assert not {"export", "simplify", "reference"} & set(what), what
    manifest = json.loads((dvc_repo / compose().paths.engine / "manifest.json").read_text())
    assert manifest["target"] == "local"


# A key of each backend whose change must reach its engine (and no other backend's).
OWN_KEY = {
    "openvino": "backend.openvino.num_streams=2",
    "onnxruntime": "backend.onnxruntime.execution_mode=parallel",
    "tensorrt": "backend.tensorrt.builder_optimization_level=2",
}


def test_another_backends_key_rebuilds_nothing_and_a_candidates_rebuilds(dvc_repo: Path):
    """The engine's key is its candidates' own settings: under auto, every backend's section is in params.yaml,
    but env.json carries only the candidates' (the backends that run here), and build reads nothing else of the
    group. A candidate's key reaches precision too (its int8 fallback is judged with those settings)."""
    build = ["dvc", "exp", "run", *QUICK, "build"]
    run(build, dvc_repo)
    names = [b.name for b in CANDIDATES]
    other = next((name for name in OWN_KEY if name not in names), None)
    if other is not None:
        untouched = run([*build[:3], "-S", OWN_KEY[other], *build[3:]], dvc_repo).stdout
        assert ran_stages(untouched) == ["env"], untouched
    env = json.loads((dvc_repo / compose().paths.env).read_text())
    group = OmegaConf.to_container(compose().backend)
    assert [(c["backend"], c["settings"]) for c in env["candidates"]] == [(n, group[n]) for n in names]
    changed = run([*build[:3], "-S", OWN_KEY[names[0]], *build[3:]], dvc_repo).stdout
    assert ran_stages(changed) == ["env", "precision", "build"], changed


def test_why_tells_skip_restore_run_and_pending_before_dvc_repro(dvc_repo: Path):
    """On one backend throughout (under auto, int8 may move to another backend here: why would say so)."""
    exp_run(dvc_repo, "backend=onnxruntime", "precision=int8")
    exp_run(dvc_repo, "backend=onnxruntime")
    quick = QUICK[1::2]  # the -S values
    cfg = compose(
        "backend=onnxruntime",
        "precision=int8",
        "benchmark.min_iterations=12",
        *quick,
        "backend.race.rounds=2",
        config_dir=dvc_repo / "conf",
    )
    OmegaConf.save(cfg, dvc_repo / "params.yaml")  # what `dvc exp run -S ...` would compose
    lines = run([sys.executable, "-m", "engineforge.why"], dvc_repo).stdout.splitlines()
    verdicts = {line.split()[0].removesuffix("@local"): line.split(maxsplit=2)[1:] for line in lines}
    assert verdicts["env"][0] == "run" and verdicts["env"][1].startswith("always runs")
    assert verdicts["export"][0] == verdicts["simplify"][0] == "skip"
    assert verdicts["precision"][0] == "restore" and "precision.name: 'fp32' -> 'int8'" in verdicts["precision"][1]
    assert verdicts["build"][0] == "pending" and "backend.race.rounds: 1 -> 2" in verdicts["build"][1]
    assert verdicts["build"][1].endswith("after precision@local")  # env's output is the same: precision restores
    assert "benchmark.min_iterations: 10 -> 12" in verdicts["benchmark"][1]
    assert "never restored (persist)" in verdicts["benchmark"][1]

    repro = run(["dvc", "repro"], dvc_repo).stdout  # and dvc does what why said
    assert RESTORED.format("precision") in repro and "export" not in ran_stages(repro)


def test_export_measured_on_other_kernels_reruns_nothing_downstream(dvc_repo: Path):
    """export.json holds a measurement (max |PyTorch-ORT|) that moves in its last bits on another kind of CPU; no
    stage depends on it, and model.onnx keeps its bytes, so nothing after export reruns."""
    run(["dvc", "repro", "compare@local"], dvc_repo)
    before = lock_outs(dvc_repo, "export")
    redone = run(["dvc", "repro", "-f", "-s", "export"], dvc_repo, env=OTHER_KERNELS).stdout
    assert ran_stages(redone) == ["export"]
    after = lock_outs(dvc_repo, "export")
    assert after["build/digits/export"] == before["build/digits/export"]
    assert after["build/digits/export.json"] != before["build/digits/export.json"]  # the measurement moved
    assert ran_stages(run(["dvc", "repro", "compare@local"], dvc_repo).stdout) == ["env"]


def status(repo: Path, target: str) -> dict[str, Any]:
    """`dvc status --json <target>`: the target and the stages before it -> what changed (env is always there: it
    runs on every repro)."""
    found = json.loads(run(["dvc", "status", "--json", "--with-deps", target], repo).stdout or "{}")
    return {name.removesuffix("@local"): changes for name, changes in found.items()}


def test_a_backends_code_reaches_only_that_backends_engines(dvc_repo: Path):
    """A backend's code is its package; env.json carries the digest of each candidate's, so after env reruns (as
    every `dvc repro` does first) DVC sees precision and build change only when a candidate's package changed. A
    backend that does not run here (TensorRT on a CPU) is not a candidate and its edit rebuilds nothing."""
    run(["dvc", "exp", "run", *QUICK, "build"], dvc_repo)
    names = [b.name for b in CANDIDATES]
    absent = next((name for name in registry.names() if name not in names), None)
    if absent is not None:
        with (dvc_repo / f"stages/backends/{absent}/backend.py").open("a") as f:
            f.write("# an edit of a backend that does not run here\n")
        run(["dvc", "repro", "env"], dvc_repo)
        assert set(status(dvc_repo, "build")) <= {"env"}, status(dvc_repo, "build")  # nothing to rebuild
    edited = next((name for name in names if name != registry.REFERENCE), names[0])  # OpenVINO on a CPU
    with (dvc_repo / f"stages/backends/{edited}/backend.py").open("a") as f:
        f.write("# an edit of a candidate\n")
    run(["dvc", "repro", "env"], dvc_repo)
    changed = status(dvc_repo, "build")
    assert {"precision", "build"} <= set(changed), changed
