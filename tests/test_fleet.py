"""The fleet (docs/fleet.md): targets as data, their paths, the one-line refusal on another machine, the CI workflow
made from the fleet file, and the whole flow with two targets that differ in fact (this CPU, and the same CPU with
oneDNN's kernels capped at AVX2), two clones as the runners and a moto S3 remote on 127.0.0.1."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from engineforge.workflow import render_workflow
from stages.core.fleet import agrees, mismatch, retarget
from stages.core.run import plain
from tests.helpers import FAST_BENCH, compose, one_line_error, ran_stages, run, write_params

CAPPED = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
OPEN = "from engineforge import Engine; e = Engine.open('build/digits/fp32'); print(e.manifest['target'])"


def test_a_target_matches_by_value_list_and_version_prefix():
    facts = {"cpu": {"isa": ["avx2", "avx512f"], "isa_cap": "none"}, "openvino": {"version": "2026.4.1-22982"}}
    assert mismatch({"cpu.isa": ["avx2"], "cpu.isa_cap": "none", "openvino.version": "2026.4"}, facts) is None
    assert mismatch({"cpu.isa_cap": "AVX2"}, facts) == "cpu.isa_cap is none, the target needs AVX2"
    assert mismatch({"cpu.isa": ["amx_tile"]}, facts) == "cpu.isa is avx2 avx512f, the target needs amx_tile"
    assert not agrees("2026.4", "2026.41") and mismatch({"tensorrt.version": "10"}, facts)


def test_dvc_yaml_spells_each_targets_paths_as_retarget_gives_them(dvc_repo: Path):
    from dvc.repo import Repo

    tree = plain(write_params(dvc_repo, "fleet=cpus"))
    with Repo(str(dvc_repo)) as dvc:
        stages = {s.addressing.rpartition(":")[2]: s for s in dvc.index.stages}
    assert {"build@native", "build@avx2", "report@avx2", "env@native", "fleet"} <= set(stages)
    for name, stage in stages.items():
        target = name.partition("@")[2]
        if not target:
            continue
        paths = {str(v) for v in retarget(tree, target)["paths"].values()}
        for out in stage.outs:
            assert out.def_path in paths, f"{name}: {out.def_path} is not one of retarget's paths for {target}"
            assert f"/{target}/" in f"/{out.def_path}/"


def test_the_workflow_runs_each_target_on_its_runner_label(repo: Path):
    check = run([sys.executable, "-m", "engineforge.fleet", "workflow", "--check"], repo)  # committed = params
    assert "matches" in check.stdout
    for option in ("local", "cpus"):
        targets = dict(compose(f"fleet={option}").fleet.targets)
        workflow = yaml.safe_load(render_workflow(targets))
        include = workflow["jobs"]["targets"]["strategy"]["matrix"]["include"]
        assert [(i["target"], i["runner"]) for i in include] == [(n, t.runner) for n, t in targets.items()]
        steps = " ".join(step.get("run", "") for step in workflow["jobs"]["targets"]["steps"])
        assert "repro ${{ matrix.target }}" in steps and "dvc push --run-cache" in steps and "commit" not in steps
        collect = " ".join(step.get("run", "") for step in workflow["jobs"]["collect"]["steps"])
        assert "collect" in collect and "git add dvc.lock reports" in collect


def test_a_stage_for_another_kind_of_machine_stops_in_one_line(repo: Path):
    write_params(repo, "fleet=cpus")
    for stage in ("env", "build"):
        proc = run([sys.executable, "-m", f"stages.{stage}", "avx2"], repo, check=False)
        line = one_line_error(proc)
        assert "target avx2: this machine is not one: cpu.isa_cap is none, the target needs AVX2" in line, line
        assert "ONEDNN_MAX_CPU_ISA=AVX2" in line


def runner(origin: Path, name: str, tmp_path: Path) -> Path:
    """A clone of ``origin`` as a CI runner's checkout."""
    clone = tmp_path / name
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    return clone


def fleet(clone: Path, *args: str) -> str:
    """``python -m engineforge.fleet ...`` in ``clone``: its output."""
    return run([sys.executable, "-m", "engineforge.fleet", *args], clone).stdout


@pytest.mark.slow
def test_two_targets_build_on_their_own_runners_and_the_collect_job_builds_nothing(
    dvc_repo: Path, tmp_path: Path, s3_bucket: str
):
    write_params(dvc_repo, "fleet=cpus", "backend=openvino", *FAST_BENCH)
    run(["dvc", "remote", "add", "-d", "shared", f"s3://{s3_bucket}/cache"], dvc_repo)
    run(["git", "add", "-A"], dvc_repo)
    run(["git", "commit", "-qm", "the cpus fleet"], dvc_repo)

    a = runner(dvc_repo, "runner-native", tmp_path)  # the shared job, then the native target's job
    fleet(a, "repro", "--shared")
    run(["dvc", "push", "--run-cache"], a)
    built_a = fleet(a, "repro", "native")
    run(["dvc", "push", "--run-cache"], a)
    fleet(a, "pack", "native", str(tmp_path / "packs/native"))

    b = runner(dvc_repo, "runner-avx2", tmp_path)  # the avx2 target's job: the shared stages restore
    run(["dvc", "pull", "--run-cache", "--allow-missing"], b)
    built_b = fleet(b, "repro", "avx2")
    run(["dvc", "push", "--run-cache"], b)
    fleet(b, "pack", "avx2", str(tmp_path / "packs/avx2"))
    assert {s for s in ran_stages(built_a) if "@" in s} == {f"{s}@native" for s in PER_TARGET}, built_a
    assert set(ran_stages(built_b)) == {f"{s}@avx2" for s in PER_TARGET}, built_b  # export..reference restored

    c = runner(dvc_repo, "collect", tmp_path)  # the collect job, on a machine of the native kind
    fleet(c, "collect", str(tmp_path / "packs/native"), str(tmp_path / "packs/avx2"))
    run(["dvc", "pull"], c)
    collected = run(["dvc", "repro"], c).stdout
    assert set(ran_stages(collected)) == {"env@native", "env@avx2", "fleet"}, collected  # nothing builds
    assert "kept target avx2's record from its own runner" in collected
    page = (c / "reports/fleet.md").read_text()
    assert "[native](targets/native/summary.md)" in page and "[avx2](targets/avx2/summary.md)" in page
    assert "oneDNN capped at AVX2" in page and "Not built yet" not in page
    caps = {t: json.loads((c / f"build/digits/fp32/{t}/engine/manifest.json").read_text()) for t in ("native", "avx2")}
    assert {t: m["fingerprint"]["device"]["cpu"]["isa_cap"] for t, m in caps.items()} == {
        "native": "none",
        "avx2": "AVX2",
    }

    assert run([sys.executable, "-c", OPEN], c).stdout.strip() == "native"  # each environment opens its own
    assert run([sys.executable, "-c", OPEN], c, env=CAPPED).stdout.strip() == "avx2"
    neither = run([sys.executable, "-c", OPEN], c, check=False, env={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})
    assert "holds no engine for this host (avx2/deploy: " in neither.stderr and "native/deploy: " in neither.stderr


PER_TARGET = ("env", "precision", "build", "compare", "benchmark", "deploy", "report")
