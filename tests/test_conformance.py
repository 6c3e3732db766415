"""The ONNX project's own test models through the pipeline as ``model=onnx`` at fp32, the engine checked against
their expected outputs on their inputs (``engineforge.conformance``; the whole set's table is in docs/coverage.md).
One of each class: an opset-6 file (upgraded on the way in), a graph onnx-simplifier refuses (goes on unsimplified)
and a graph whose inputs share no batch axis (refused in one line)."""

from pathlib import Path

import pytest

from engineforge.conformance import cases, run_case

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("name", "taken"),
    [("test_AvgPool1d", ["opset 6 → 18", "batch 2"]), ("test_PixelShuffle", ["not simplified", "batch 1"])],
)
def test_an_old_or_unsimplifiable_file_runs_and_matches_the_onnx_projects_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, taken: list[str]
):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # conf/ and dvc.yaml of this repository
    row = run_case(name, cases()[name], tmp_path)
    assert row["result"] == "pass", row
    assert row["notes"] == taken and row["max_abs"] < 1e-4, row


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("test_operator_add_broadcast", "arrays differ in length (0 2, 1 3); every input's first axis is its batch"),
        ("test_gradient_of_add", "input 'a' is a scalar (shape []); every input's first axis is its batch"),
        ("test_sequence_model6", "output 'len' is a scalar (shape []); every output's first axis is its batch"),
    ],
)
def test_inputs_or_outputs_without_a_shared_batch_axis_are_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, said: str
):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    row = run_case(name, cases()[name], tmp_path)
    assert row["result"].startswith("export: ") and said in row["result"], row
