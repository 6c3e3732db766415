"""An exported graph that declares an axis dynamic but only runs at the example's size is refused at export, in one
line, whichever exporter wrote it; a graph whose axes hold at a second size records them."""

from pathlib import Path

import pytest

from stages import export
from stages.core.artifacts import read_json
from stages.core.errors import PipelineError
from tests.helpers import ROOT, add_fixture_model, compose, run_stage


@pytest.mark.parametrize("exporter", ["auto", "torchscript"])
def test_a_graph_unrolled_at_the_example_length_is_refused(repo: Path, exporter: str):
    add_fixture_model(repo, "unrolled")
    cfg = compose("model=unrolled", f"export.exporter={exporter}", config_dir=repo / "conf")
    with pytest.raises(PipelineError) as caught:
        run_stage(export, cfg)
    line = str(caught.value)
    assert "the torchscript graph declares seq dynamic but only runs at seq=8 (" in line, line
    assert line.endswith("): write seq as the number 8 in model.inputs to export it static"), line
    assert ("dynamo refused the model (" in line) == (exporter == "auto"), line
    assert not (repo / cfg.paths.onnx).exists()


def test_the_same_model_with_its_length_fixed_exports_and_dynamic_axes_that_hold_are_recorded(repo: Path):
    add_fixture_model(repo, "unrolled")
    static = "model.inputs=[{name:x,shape:[batch,8,4],dtype:float32}]"
    cfg = compose("model=unrolled", static, "model.dims={}", config_dir=repo / "conf")
    run_stage(export, cfg)
    assert read_json(repo / cfg.paths.export_report)["axes_checked"] == {}
    cfg = compose("model=textenc", config_dir=repo / "conf")
    run_stage(export, cfg)
    assert read_json(repo / cfg.paths.export_report)["axes_checked"] == {"seq": cfg.model.dims.seq // 2}


def test_an_output_dimension_fixed_at_the_example_length_is_named_after_its_axis(tmp_path: Path, monkeypatch):
    """dynamo exports a bidirectional LSTM tagger with its output declared [batch, 32, 9]; the graph computes
    [batch, seq, 9] (right at seq 16 too), so the export names the dimension ``seq`` instead of refusing."""
    import onnx

    from engineforge.coverage import overrides
    from examples import families

    monkeypatch.chdir(ROOT)  # examples/ as imported; the artifacts below tmp_path
    option, keys = families.models()["tagger"]
    sets = (*overrides("tagger", option, keys), "export.exporter=dynamo", f"paths.build={tmp_path}/build")
    cfg = compose(*sets, f"paths.reports={tmp_path}/reports")
    run_stage(export, cfg)
    (output,) = onnx.load(cfg.paths.onnx).graph.output
    assert [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim][1:] == ["seq", 9]
    assert read_json(cfg.paths.export_report)["axes_checked"] == {"seq": 16}
