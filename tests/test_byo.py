"""Bring your own model: the worked examples of docs/models.md (examples/mlp.py) through the real pipeline with `dvc exp run`."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers import QUICK, ran_stages, run


def with_mlp(root: Path, files: Path) -> None:
    """Put the example's files where README puts them, and its model option into conf/model/."""
    shutil.copytree(files, root / "examples/data")
    shutil.copy(root / "examples/mlp.yaml", root / "conf/model/mlp.yaml")


@pytest.mark.slow
def test_custom_model_with_real_data_runs_end_to_end_then_nothing_reruns(dvc_repo: Path, mlp_files: Path):
    with_mlp(dvc_repo, mlp_files)
    no_venv = {"PATH": os.pathsep.join(["/usr/bin", "/bin"])}  # `.venv/bin/python -m engineforge.run`, not activated
    run([sys.executable, "-m", "engineforge.run", "-S", "model=mlp", *QUICK], dvc_repo, env=no_venv)
    export = json.loads((dvc_repo / "build/mlp/export.json").read_text())
    assert export["source"] == "factory" and export["inputs"] == {"x": ["batch", 64]}
    accuracy = json.loads((dvc_repo / "reports/targets/local/accuracy.json").read_text())
    assert accuracy["passed"] and accuracy["task"]["metric"] == "top1" and accuracy["task"]["samples"] == 360
    assert accuracy["data"] == {"eval": "examples/data/mlp_eval.npz", "synthetic": False}
    assert accuracy["task"]["reference"] > 0.9
    assert "no real data" not in (dvc_repo / "reports/targets/local/summary.md").read_text()
    assert ran_stages(run(["dvc", "repro"], dvc_repo).stdout) == ["env"]


@pytest.mark.slow
def test_onnx_model_without_data_skips_export_and_warns(dvc_repo: Path, mlp_files: Path):
    with_mlp(dvc_repo, mlp_files)
    overrides = ["-S", "model=onnx", "-S", "model.path=examples/data/mlp.onnx", "-S", "precision=fp16"]
    out = run([sys.executable, "-m", "engineforge.run", *overrides, *QUICK], dvc_repo).stdout
    assert "torch export skipped" in out
    export = json.loads((dvc_repo / "build/onnx/export.json").read_text())
    assert export["source"] == "onnx" and export["torch"] is None
    assert export["inputs"] == {"x": ["n", 64]}  # names and dynamic axes as the file has them
    accuracy = json.loads((dvc_repo / "reports/targets/local/accuracy.json").read_text())
    assert accuracy["passed"] and accuracy["data"]["synthetic"] and accuracy["task"]["metric"] == "agreement"
    assert "no real data was used" in (dvc_repo / "reports/targets/local/summary.md").read_text()
    benchmark = json.loads((dvc_repo / "reports/targets/local/benchmark.json").read_text())
    here = json.loads((dvc_repo / "build/targets/local/runtimes.json").read_text())
    assert set(benchmark["runtimes"]) == {"engine"} | {
        r["baseline"] for r in here.values() if r["baseline"]
    }  # no PyTorch
