"""Progress of a long step: plain lines where no terminal watches (CI logs), at most one per interval, none for a
step shorter than the interval (a quick stage keeps its one line)."""

import pytest

from stages.core import progress


def test_a_long_step_prints_plain_lines_and_a_short_one_prints_nothing(capsys: pytest.CaptureFixture[str], monkeypatch):
    with progress.Progress("build", 3, "candidates") as counting:
        for key in ("fp32.onnxruntime", "fp32.openvino", "int8.openvino"):
            counting.step(key)
    assert capsys.readouterr().out == ""  # well under EVERY_S
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    with progress.Progress("build", 2, "candidates") as counting:
        counting.step("fp32.onnxruntime")
        counting.step("fp32.openvino")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["  build: 1/2 candidates", "  build: 2/2 candidates"]
    assert lines[-1].endswith(" s) fp32.openvino")
