"""Data a user brings from code (``model.data.factory``): a dict of arrays, a Dataset or a DataLoader."""

import numpy as np
import pytest

from stages.core.data import data_source, load_dataset
from stages.core.errors import PipelineError
from tests.helpers import ROOT, compose


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def tiny_overrides(factory: str, code: str = "tests/fixtures") -> tuple[str, ...]:
    """model=custom on the tiny model's factory, with data from ``tests.fixtures.data_factories:<factory>``."""
    return (
        "model=custom",
        "model.factory=tests.fixtures.tiny:build",
        f"model.code={code}",
        f"model.weights={code}",
        "model.inputs=[{name:x,shape:[batch,6],dtype:float32},{name:scale,shape:[batch,1],dtype:float32}]",
        "model.task.metric=top1",
        f"++model.data.factory=tests.fixtures.data_factories:{factory}",
    )


TINY = tiny_overrides("arrays")


def tiny(factory: str, code: str = "tests/fixtures"):
    """The model section of ``tiny_overrides``."""
    return compose(*tiny_overrides(factory, code)).model


@pytest.mark.parametrize("factory", ["arrays", "dataset", "loader"])
def test_every_form_gives_the_same_arrays_and_labels(factory):
    model = tiny(factory)
    data = load_dataset(model, "test")
    want = load_dataset(tiny("arrays"), "test")
    assert set(data) == {"x", "scale", "labels"}
    for key, value in want.items():
        np.testing.assert_array_equal(data[key], value)
    assert data_source(model, "test") == f"tests.fixtures.data_factories:{factory}('eval')"


def test_calibration_falls_back_to_the_eval_data_when_the_factory_has_none():
    model = tiny("arrays")
    np.testing.assert_array_equal(load_dataset(model, "train")["x"], load_dataset(model, "test")["x"])
    assert data_source(model, "train") == "tests.fixtures.data_factories:arrays('eval')"  # where it came from


def test_the_report_names_the_eval_file_calibration_falls_back_to(tmp_path):
    """An eval ``.npz`` and a factory with no calibration data: calibration uses the file, and says so."""
    eval_file = tmp_path / "eval.npz"
    np.savez(eval_file, **{k: v[:16] for k, v in load_dataset(tiny("arrays"), "test").items()})
    model = compose(*TINY, f"++model.data.eval={eval_file}").model
    np.testing.assert_array_equal(load_dataset(model, "train")["x"], np.load(eval_file)["x"])
    assert data_source(model, "train") == str(eval_file)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("one_part", r"model.data.factory\('eval'\): items have 1 parts; expected \(x, scale\[, label\]\)"),
        ("not_data", r"model.data.factory\('eval'\) returned int: return a dict of arrays or a Dataset"),
        ("nope", r"model.data.factory: module tests.fixtures.data_factories has no function 'nope'"),
    ],
)
def test_a_factory_that_does_not_fit_is_one_line(factory, message):
    with pytest.raises(PipelineError, match=message):
        load_dataset(tiny(factory), "test")


def test_a_factory_outside_model_code_is_refused():
    """DVC watches model.code: data made by code outside it would not rerun the stages when it changes."""
    with pytest.raises(PipelineError, match=r"model.code: tests/fixtures/tiny.py does not hold .*model.data.factory"):
        load_dataset(tiny("arrays", code="tests/fixtures/tiny.py"), "test")
