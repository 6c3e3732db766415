"""End to end: the real `dvc exp run` / `dvc repro` in a temporary copy of the repo, for both models."""

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages.runtime import registry
from stages.runtime.engine import Engine
from tests.helpers import QUICK, STAGES, ran_stages, run

pytestmark = pytest.mark.slow


def test_digits_end_to_end_then_a_second_repro_runs_only_env(dvc_repo: Path):
    first = run(["dvc", "exp", "run", *QUICK], dvc_repo)
    expected = STAGES
    ran = ran_stages(first.stdout)
    assert sorted(ran) == sorted(expected) and ran.index("deploy") > ran.index("compare"), ran
    assert ran[:6] == expected[:6] and ran[-2:] == ["report", "fleet"], ran
    for stage in expected:  # the one line each stage prints (a target's stage names it: build@local)
        assert re.search(
            rf"^engineforge {stage}(@local)?: .+ \[\d+\.\d+s, peak \d+\.\d\d GB\]$", first.stdout, re.MULTILINE
        ), stage

    acc = json.loads((dvc_repo / "reports/targets/local/accuracy.json").read_text())
    manifest = json.loads((dvc_repo / "build/digits/fp32/local/engine/manifest.json").read_text())
    assert acc["passed"] and acc["model"] == "digits" and acc["backend"] == manifest["backend"]
    assert acc["task"]["metric"] == "top1" and acc["task"]["samples"] == 360
    assert acc["task"]["reference"] >= 0.97 and acc["task"]["delta"] <= acc["task"]["budget"]
    bench = json.loads((dvc_repo / "reports/targets/local/benchmark.json").read_text())
    assert set(bench["runtimes"]["engine"]) == {"bs1", "bs32"}
    title = (
        (dvc_repo / "reports/targets/local/summary.md").read_text().splitlines()[0]
    )  # each batch range's engine, when several
    assert title.startswith("# digits · fp32 · ") and all(
        p["backend"] in title for p in manifest["dispatch"] or [manifest]
    )
    with Engine.open(dvc_repo / "build/digits/fp32") as engine:  # the deploy root: the target here
        assert engine({"image": np.zeros((2, 1, 8, 8), np.float32)})["logits"].shape == (2, 10)
    lock = yaml.safe_load((dvc_repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == {
        s if s in ("export", "simplify", "reference", "fleet") else f"{s}@local" for s in expected
    }

    second = run(["dvc", "repro"], dvc_repo)
    assert ran_stages(second.stdout) == ["env"], second.stdout
    assert yaml.safe_load((dvc_repo / "dvc.lock").read_text()) == lock


def test_textenc_end_to_end_with_overrides(dvc_repo: Path):
    run(["dvc", "exp", "run", "-S", "model=textenc", "-S", "benchmark.batch_sizes=[1,8]", *QUICK], dvc_repo)
    acc = json.loads((dvc_repo / "reports/targets/local/accuracy.json").read_text())
    assert acc["passed"] and acc["model"] == "textenc" and acc["task"]["samples"] == 512
    bench = json.loads((dvc_repo / "reports/targets/local/benchmark.json").read_text())
    assert set(bench["runtimes"]["pytorch_eager"]) == {"bs1", "bs8"}
    export = json.loads((dvc_repo / "build/textenc/export.json").read_text())
    assert export["inputs"] == {"input_ids": ["batch", "seq"], "attention_mask": ["batch", "seq"]}
    assert export["check"]["outputs"]["logits"]["passed"]
    manifest = json.loads((dvc_repo / "build/textenc/fp32/local/engine/manifest.json").read_text())
    assert (
        manifest["model"] == "textenc"
        and manifest["onnx"]["path"] == f"build/textenc/fp32/local/graphs/fp32.{acc['backend']}.onnx"
    )


def test_failed_gate_stops_dvc_repro_with_one_line(dvc_repo: Path):
    """An impossible budget: the gate fails at build (no candidate may ship: raced, or a single one gated alone),
    dvc repro exits non-zero in one line and nothing after build runs."""
    proc = run(["dvc", "exp", "run", "-S", "precision.task_budget=-0.01", *QUICK], dvc_repo, check=False)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("engineforge build")]
    assert lines == [lines[0]] and "accuracy gate" in lines[0] and "top1 dropped" in lines[0], lines
    assert "Running stage 'compare@local'" not in proc.stdout
    assert "Running stage 'report@local'" not in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_digits_int8_then_fp32_reruns_only_what_precision_reaches(dvc_repo: Path):
    run(["dvc", "exp", "run", "-S", "precision=int8", *QUICK], dvc_repo)
    acc = json.loads((dvc_repo / "reports/targets/local/accuracy.json").read_text())
    chosen = registry.get(acc["backend"])  # the race's winner: its own encoding, its own fallback
    assert (
        acc["int8"]["encoding"] == chosen.capabilities.int8_encoding
        and acc["int8"]["fallback"]["judged_on"] == chosen.name
    )
    assert acc["passed"] and acc["precision"] == "int8"
    assert acc["task"]["delta"] <= 0.01  # the target: int8 top-1 within 1.0 pt of fp32
    record = json.loads((dvc_repo / "build/digits/int8/local/precision.json").read_text())
    assert [c["backend"] for c in record["candidates"]] == [b.name for b in registry.candidates("auto", "int8")[0]]
    assert all(c["ops"]["QuantizeLinear"] > 0 for c in record["candidates"])
    assert record["calibration"]["provenance"]["samples"] == 512  # one calibration for every candidate
    manifest = json.loads((dvc_repo / "build/digits/int8/local/engine/manifest.json").read_text())
    graph = f"build/digits/int8/local/graphs/int8.{chosen.name}.onnx"
    assert manifest["precision"] == "int8" and manifest["onnx"]["path"] == graph

    back = run(["dvc", "exp", "run", "-S", "precision=fp32", *QUICK], dvc_repo)
    assert "export" not in ran_stages(back.stdout) and "simplify" not in ran_stages(back.stdout)
    assert "precision" in ran_stages(back.stdout)

    # int8 again, same model and data: the calibrated model comes back from DVC's run-cache, not a new calibration
    again = run(["dvc", "exp", "run", "-S", "precision=int8", *QUICK], dvc_repo)
    assert "Stage 'precision@local' is cached - skipping run" in again.stdout, again.stdout
    assert "engineforge precision" not in again.stdout
    assert json.loads((dvc_repo / "build/digits/int8/local/precision.json").read_text()) == record


def test_digits_fp16_end_to_end(dvc_repo: Path):
    run(["dvc", "exp", "run", "-S", "precision=fp16", *QUICK], dvc_repo)
    acc = json.loads((dvc_repo / "reports/targets/local/accuracy.json").read_text())
    assert acc["passed"] and acc["precision"] == "fp16" and acc["task"]["delta"] <= 0.001
    assert acc["outputs"]["logits"]["max_abs"] > 0  # really float16 arithmetic, not a copy of the fp32 graph
    manifest = json.loads((dvc_repo / "build/digits/fp16/local/engine/manifest.json").read_text())
    assert manifest["precision"] == "fp16"


def test_queued_precision_sweep_lands_in_one_table(dvc_repo: Path):
    """The sweep of docs/precision.md: queue fp32 and fp16 (on ONNX Runtime alone: the queue and the table are what
    this tests), run the queue, tabulate `dvc exp show --json`."""
    run(["dvc", "exp", "run", "--queue", "-S", "precision=fp32,fp16", "-S", "backend=onnxruntime", *QUICK], dvc_repo)
    run(["dvc", "queue", "start", "-j", "1"], dvc_repo)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], dvc_repo).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(3)
    assert status.count("Success") == 2, status
    run([sys.executable, "-m", "engineforge.sweep"], dvc_repo)
    page = (dvc_repo / "reports/precision.md").read_text()
    for precision in ("fp32", "fp16"):
        assert re.search(rf"^\| {precision} \| onnxruntime \| pass \| top1 ", page, re.MULTILINE), page
    assert (dvc_repo / "reports/precision.png").read_bytes()[:4] == b"\x89PNG"
