"""The reproducibility check across kinds of CPU: artifacts by hash, measurements field by field within tolerance.

The committed record (reports/reproduce.json) came from one kind of CPU; tests/fixtures/cpu_kinds.json holds the
measured figures as recorded on every kind seen, so each run checks that the comparison accepts the other kinds'
values, whichever machine it runs on, and still rejects a real change.
"""

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from engineforge.reproduce import (
    BUILT,
    RACED,
    RECORD,
    TOLERANCE,
    deterministic,
    lock_differences,
    md5_of,
    outs,
    record,
    report_differences,
)
from engineforge.reproduce import (
    MEASURED as RESOURCES,
)
from stages.core.device import cpu_fingerprint, cpu_kind, cpu_label
from tests.helpers import OTHER_KERNELS, ROOT, copy_repo, run, write_params

LOCK = yaml.safe_load((ROOT / "dvc.lock").read_text())
COMMITTED = json.loads((ROOT / RECORD).read_text())
FIXTURE = json.loads((ROOT / "tests/fixtures/cpu_kinds.json").read_text())
MEASURED = FIXTURE["kinds"] + FIXTURE["kernel_paths"]
EXPORT = "build/digits/export.json"
TARGET = yaml.safe_load((ROOT / "params.yaml").read_text())["fleet"]["default"]
ACCURACY = yaml.safe_load((ROOT / "params.yaml").read_text())["paths"]["accuracy"]
PRECISION = yaml.safe_load((ROOT / "params.yaml").read_text())["paths"]["precision_report"]


def with_values(report: dict[str, Any], values: dict[str, float]) -> dict[str, Any]:
    """A copy of ``report`` with dotted fields set to ``values``."""
    out = copy.deepcopy(report)
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node[key]
        node[leaf] = value
    return out


def reproduced(reports: dict[str, Any]) -> dict[str, Any]:
    """The committed dvc.lock as a rerun writing ``reports`` (path -> content) would leave it."""
    lock = copy.deepcopy(LOCK)
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] in reports:
                out["md5"] = md5_of(reports[out["path"]])
    return lock


def compared(export: dict[str, Any], lock: dict[str, Any] | None = None, record: dict[str, Any] | None = None):
    """What the check finds when a rerun writes ``export`` (the other reports as committed) and ``lock``."""
    fresh = dict(COMMITTED["reports"]) | {EXPORT: export}
    return lock_differences(LOCK, lock or reproduced(fresh), record or COMMITTED["reports"], fresh.__getitem__, TARGET)


def test_the_committed_record_holds_the_committed_lock_and_names_its_cpu():
    locked = {p: m for stage in deterministic(TARGET) for p, m in outs(LOCK, stage).items()}
    assert set(COMMITTED["reports"]) == {EXPORT, "build/digits/simplify.json", PRECISION}
    for path, content in COMMITTED["reports"].items():
        assert md5_of(content) == locked[path], f"{RECORD} is stale for {path}: run `make pipeline`"
    assert COMMITTED["cpu"]["arch"] and COMMITTED["cpu"]["model"] and COMMITTED["cpu"]["isa"]


def get(report: dict[str, Any], dotted: str) -> Any:
    """The value of a dotted field."""
    for key in dotted.split("."):
        report = report[key]
    return report


@pytest.mark.parametrize("kind", MEASURED, ids=lambda k: k["label"])
def test_every_kind_seen_is_accepted_with_its_figures_named(kind):
    export = COMMITTED["reports"][EXPORT]
    found, tolerated = compared(with_values(export, kind[EXPORT]))
    assert found == []
    moved = [key for key, value in kind[EXPORT].items() if value != get(export, key)]
    assert [line.split()[1] for line in tolerated] == moved
    assert all("(tolerance " in line for line in tolerated)


def test_a_different_model_or_a_broken_export_is_rejected_naming_the_field():
    export = COMMITTED["reports"][EXPORT]
    other_model = with_values(export, {"model": "textenc", "nodes": export["nodes"] + 40})
    lock = reproduced({EXPORT: other_model})
    graph = next(o for o in lock["stages"]["export"]["outs"] if o["path"] == "build/digits/export")
    graph["md5"] = "0" * 32  # and its ONNX folder, which is compared by hash
    found, _ = compared(other_model, lock)
    assert f"{EXPORT}: model 'digits' committed, 'textenc' now" in found
    assert any(line.startswith("export: build/digits/export md5 ") for line in found)

    beyond = 2 * TOLERANCE["max_abs"] + export["check"]["outputs"]["logits"]["max_abs"]
    broken = with_values(export, {"check.outputs.logits.max_abs": beyond, "check.outputs.logits.passed": False})
    found, tolerated = compared(broken)
    assert tolerated == [] and len(found) == 2
    assert found[0].startswith(f"{EXPORT}: check.outputs.logits.max_abs ") and found[0].endswith("(tolerance 1e-05)")
    assert found[1] == f"{EXPORT}: check.outputs.logits.passed True committed, False now"


def test_a_record_that_is_not_the_lock_s_is_refused():
    stale = copy.deepcopy(COMMITTED["reports"])
    stale[EXPORT]["nodes"] += 1
    fresh = with_values(COMMITTED["reports"][EXPORT], {"check.outputs.logits.max_abs": 1e-6})
    found, _ = compared(fresh, record=stale)
    assert found == [f"{RECORD} does not hold dvc.lock's {EXPORT}: run `make pipeline` and commit both"]


def test_accuracy_figures_are_exact_and_error_figures_have_their_tolerance():
    accuracy = json.loads((ROOT / ACCURACY).read_text())
    near = with_values(accuracy, {"outputs.logits.max_abs": accuracy["outputs"]["logits"]["max_abs"] + 1e-6})
    assert report_differences(ACCURACY, accuracy, near)[0] == []
    far = with_values(accuracy, {"task.candidate": accuracy["task"]["candidate"] - 1 / 360})
    assert report_differences(ACCURACY, accuracy, far) == (
        [f"{ACCURACY}: task.candidate {accuracy['task']['candidate']!r} committed, {far['task']['candidate']!r} now"],
        [],
    )


def test_another_race_winner_is_named_not_a_failure_but_its_accuracy_still_counts():
    """The race decides the backend by timing: another winner is a line of its own, its figures still compared."""
    accuracy = json.loads((ROOT / ACCURACY).read_text())
    other = "onnxruntime" if accuracy["backend"] != "onnxruntime" else "openvino"
    moved = with_values(accuracy, {"backend": other})
    found, tolerated = report_differences(ACCURACY, accuracy, moved)
    assert found == [] and tolerated == [
        f"{ACCURACY}: backend {accuracy['backend']!r} committed, {other!r} now (the race's choice, decided by timing)"
    ]
    worse = with_values(moved, {"outputs.logits.max_abs": accuracy["outputs"]["logits"]["max_abs"] + 1e-3})
    assert report_differences(ACCURACY, accuracy, worse)[0]


def committed_copy(root: Path) -> None:
    """The project with its dvc.lock and record, committed in a new git repo at ``root``."""
    copy_repo(root)
    run(["git", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "copy"], root)


@pytest.mark.slow
def test_reproduce_accepts_other_kernels_and_rejects_a_real_change(tmp_path: Path):
    """The whole check in a clean clone of a committed copy: PyTorch on other kernels moves the export check's
    figures, which pass within tolerance; another opset changes the ONNX bytes, which fail by hash."""
    committed_copy(tmp_path)
    here = run([sys.executable, "-m", "engineforge.reproduce"], tmp_path, env=OTHER_KERNELS).stdout
    capped = cpu_fingerprint() | {"isa_cap": OTHER_KERNELS["ONEDNN_MAX_CPU_ISA"]}  # oneDNN's cap: other kernels
    kind = "the same kind" if cpu_kind(capped) == cpu_kind(COMMITTED["cpu"]) else "another kind"
    assert f"this machine: {cpu_label(capped)} ({kind} of CPU)" in here  # the lock's CPU may be another
    tolerated = [
        line.split("compared with tolerance: ", 1)[1] for line in here.splitlines() if "with tolerance" in line
    ]
    assert any(line.startswith(f"{EXPORT}: check.outputs.logits.") for line in tolerated), here  # other kernels
    # a measured figure within its tolerance, the race's choice (other kernels may ship another backend) or the
    # engine built here (its bytes follow the tuning and the race)
    assert all(line.split()[1].rsplit(".", 1)[-1] in (*TOLERANCE, *RACED, *BUILT) for line in tolerated), tolerated
    assert f"export, simplify, precision@{TARGET} reproduce the committed artifacts" in here

    (tmp_path / "conf/export/default.yaml").write_text(
        (tmp_path / "conf/export/default.yaml").read_text().replace("opset: 18 ", "opset: 20 ")
    )
    write_params(tmp_path)
    run(["git", "commit", "-qam", "opset 20"], tmp_path)
    proc = run([sys.executable, "-m", "engineforge.reproduce"], tmp_path, check=False)
    assert proc.returncode == 1
    assert "export: build/digits/export md5 " in proc.stderr and f"{EXPORT}: opset 18 committed, 20 now" in proc.stderr


@pytest.mark.slow
def unmeasured(recorded: dict[str, Any]) -> dict[str, Any]:
    """A record without its reports' ``resources`` (a run's wall time and peak memory, never compared)."""
    reports = {p: {k: v for k, v in r.items() if k != RESOURCES} for p, r in recorded["reports"].items()}
    return recorded | {"reports": reports}


def test_recording_a_run_gives_the_committed_record_on_the_same_kind(tmp_path: Path):
    """`make pipeline`'s --record in a fresh copy: same reports as committed where the CPU is of the committing
    kind; on another kind, the same fields within tolerance."""
    committed_copy(tmp_path)
    run(["dvc", "repro", f"precision@{TARGET}"], tmp_path)
    made = record(tmp_path)
    found, tolerated = lock_differences(
        LOCK, reproduced(made["reports"]), COMMITTED["reports"], made["reports"].get, TARGET
    )
    assert found == []
    if cpu_kind(made["cpu"]) == cpu_kind(COMMITTED["cpu"]):  # equal but for each stage's time and memory
        assert unmeasured(made) == unmeasured(COMMITTED) and tolerated == []
