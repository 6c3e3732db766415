"""The fleet (docs/fleet.md): targets as data, their paths, the one-line refusal on another machine, the CI workflow
made from the fleet file, and the whole flow with two targets that differ in fact (this CPU, and the same CPU with
oneDNN's kernels capped at AVX2), two clones as the runners and a moto S3 remote on 127.0.0.1."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from engineforge.fleet import merge
from engineforge.workflow import render_workflow
from stages.core.device import cpu_fingerprint
from stages.core.errors import PipelineError
from stages.core.fleet import agrees, default_target, mismatch, retarget
from stages.core.run import plain
from tests.helpers import FAST_BENCH, compose, one_line_error, ran_stages, run, write_params

CAPPED = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
OPEN = "from engineforge import Engine\nwith Engine.open('build/digits/fp32') as e:\n    print(e.manifest['target'])"


def test_a_target_matches_by_value_list_and_version_prefix():
    facts = {"cpu": {"isa": ["avx2", "avx512f"], "isa_cap": "none"}, "openvino": {"version": "2026.4.1-22982"}}
    assert mismatch({"cpu.isa": ["avx2"], "cpu.isa_cap": "none", "openvino.version": "2026.4"}, facts) is None
    assert mismatch({"cpu.isa_cap": "AVX2"}, facts) == "cpu.isa_cap is none, the target needs AVX2"
    assert mismatch({"cpu.isa": ["amx_tile"]}, facts) == "cpu.isa is avx2 avx512f, the target needs amx_tile"
    assert not agrees("2026.4", "2026.41") and mismatch({"tensorrt.version": "10"}, facts)
    assert agrees(None, None) and agrees("none", None) and agrees(True, "true") and agrees("avx2", ["avx2", "fma"])
    with pytest.raises(PipelineError, match="give dotted fields"):
        mismatch({"cpu": {"isa_cap": "AVX2"}}, facts)


def test_a_target_name_must_be_a_path_part_and_a_stage_suffix():
    tree = plain(compose("fleet=cpus"))
    assert default_target(tree) == "native"
    for bad in ("t4.v2", "a/b", "gpu a", "x*"):
        broken = tree | {"fleet": {"default": bad, "targets": {bad: tree["fleet"]["targets"]["avx2"]}}}
        with pytest.raises(PipelineError, match="is not a target name"):
            default_target(broken)
    moved = retarget(tree, "avx2")["paths"]
    assert moved["engine"] == tree["paths"]["engine"].replace("/native/", "/avx2/")
    assert moved["env"] == "build/targets/avx2/env.json" and moved["onnx"] == tree["paths"]["onnx"]  # shared stays


def test_collect_takes_each_runners_own_target_and_refuses_shared_stages_that_differ():
    entry = {"cmd": "python -m stages.export", "outs": [{"path": "build/m/export", "md5": "a"}]}
    ours = {"stages": {"export": entry, "build@old": {"cmd": "x"}, "build@a": {"cmd": "stale"}}}
    pack_a = {"stages": {"export": entry, "build@a": {"cmd": "a"}, "build@b": {"cmd": "not a's"}}}
    pack_b = {"stages": {"export": entry, "build@b": {"cmd": "b"}}}
    merged = merge(ours, [("a", pack_a), ("b", pack_b)], ["a", "b"])["stages"]
    assert merged == {"export": entry, "build@a": {"cmd": "a"}, "build@b": {"cmd": "b"}}  # old: not a target now
    other = {"stages": {"export": entry | {"outs": [{"path": "build/m/export", "md5": "b"}]}}}
    with pytest.raises(PipelineError, match="runners of a and b disagree on stage 'export'"):
        merge(ours, [("a", pack_a), ("b", other)], ["a", "b"])


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
        for dep in stage.deps:  # what a target's stage reads of its own target's, spelled as retarget does
            if f"/{target}/" in f"/{dep.def_path}/":
                assert dep.def_path in paths, f"{name}: {dep.def_path} is not one of retarget's paths for {target}"


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
        collect = workflow["jobs"]["collect"]["steps"]
        assert "collect" in " ".join(step.get("run", "") for step in collect) and "git add dvc.lock reports" in str(
            collect
        )
        assert {"run": ".venv/bin/dvc repro", "env": {"ENGINEFORGE_COLLECT": "1"}} in collect  # keeps every record


def test_a_stage_for_another_kind_of_machine_stops_in_one_line(repo: Path):
    write_params(repo, "fleet=cpus")
    for stage in ("env", "build"):
        proc = run([sys.executable, "-m", f"stages.{stage}", "avx2"], repo, check=False)
        line = one_line_error(proc)
        assert (
            "target avx2: this machine is not one: ONEDNN_MAX_CPU_ISA is unset, the target's jobs export AVX2" in line
        )
        assert line.endswith("with ONEDNN_MAX_CPU_ISA=AVX2 (python -m engineforge.fleet repro avx2)"), line
    capped = run([sys.executable, "-m", "stages.build", "native"], repo, check=False, env=CAPPED)
    assert "target native: this machine is not one: cpu.isa_cap is AVX2, the target needs none" in capped.stderr


def runner(origin: Path, name: str, tmp_path: Path) -> Path:
    """A clone of ``origin`` as a CI runner's checkout."""
    clone = tmp_path / name
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    return clone


def fleet(clone: Path, *args: str) -> str:
    """``python -m engineforge.fleet ...`` in ``clone``: its output."""
    return run([sys.executable, "-m", "engineforge.fleet", *args], clone).stdout


@pytest.mark.slow
@pytest.mark.skipif("avx512f" not in cpu_fingerprint()["isa"], reason="the cpus fleet's native target is AVX-512")
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
    collected = run(["dvc", "repro"], c, env={"ENGINEFORGE_COLLECT": "1"}).stdout
    assert set(ran_stages(collected)) == {"env@native", "env@avx2", "fleet"}, collected  # nothing builds
    assert "kept target avx2's record from its own runner" in collected
    assert "kept target native's record from its own runner" in collected
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
    assert "holds no engine for this host (avx2: " in neither.stderr and "; native: " in neither.stderr


PER_TARGET = ("env", "precision", "build", "compare", "benchmark", "deploy", "report")
