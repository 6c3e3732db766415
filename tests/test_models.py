"""The built-in models: accuracy of the committed weights, reproducible training, clear weight errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from engineforge.train import FLOOR, train
from models import digits, textenc
from stages.core.artifacts import sha256
from stages.core.batches import batch_of, feeds
from stages.core.data import load_dataset
from stages.core.device import cpu_fingerprint, cpu_kind, cpu_label
from stages.core.errors import PipelineError
from stages.core.model import load_model
from tests.helpers import ROOT, compose
from tests.training import committed_record, same_training_kind

KINDS = json.loads((ROOT / "tests/fixtures/cpu_kinds.json").read_text())


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_digits_committed_weights_reach_97_percent():
    model = load_model(compose().model)
    assert digits.accuracy(model) >= 0.97
    test = digits.dataset("test")
    assert test["image"].shape == (360, 1, 8, 8) and test["labels"].shape == (360,)


def test_digits_training_reproduces_the_committed_weights(tmp_path: Path):
    """Bit for bit where the committed weights were trained (same torch, same kind of CPU); elsewhere PyTorch's
    kernels sum in another order (measured: the weights differ by up to 0.0083 on an AVX-512/AMX Xeon and by up to
    0.075 on this EPYC with ATen or oneDNN forced to other kernels), and the guarantee is the accuracy floor."""
    record = committed_record("digits")
    assert record["sha256"] == sha256(ROOT / "models/weights/digits.pt"), "digits.json is not the record of digits.pt"
    acc = train("digits", tmp_path)
    assert acc >= FLOOR["digits"]
    if not same_training_kind(record, torch.__version__, cpu_fingerprint()):
        pytest.skip(
            f"bit for bit only on {cpu_label(record['trained_on'])} with torch {record['torch']}; this machine is "
            f"another kind, where the floor is the guarantee (top-1 {acc:.4f} >= {FLOOR['digits']})"
        )
    fresh = torch.load(tmp_path / "digits.pt", weights_only=True)
    committed = torch.load(ROOT / "models/weights/digits.pt", weights_only=True)
    assert fresh.keys() == committed.keys()
    for key in committed:
        torch.testing.assert_close(fresh[key], committed[key], rtol=0, atol=0)
    assert json.loads((tmp_path / "digits.json").read_text()) == record


@pytest.mark.parametrize("kind", KINDS["kinds"], ids=lambda k: k["label"])
def test_training_guarantee_by_kind_of_cpu(kind):
    """Which guarantee holds where, for every kind seen (tests/fixtures/cpu_kinds.json): bit for bit only on the
    kind and torch the weights were trained with, the floor elsewhere (what each kind's retraining reached is
    recorded there, and checked on the machine at hand by the test above)."""
    record = committed_record("digits")
    same = cpu_kind(kind["cpu"]) == cpu_kind(record["trained_on"])
    assert same_training_kind(record, record["torch"], kind["cpu"]) is same
    assert not same_training_kind(record, "2.12.0+cpu", kind["cpu"])


def test_textenc_is_dynamic_in_batch_and_sequence():
    model = load_model(compose("model=textenc").model)
    with torch.inference_mode():
        for batch, seq in [(1, 8), (5, 32), (3, 64)]:
            data = textenc.dataset("test", seq=seq)
            logits = model(
                torch.from_numpy(data["input_ids"][:batch]), torch.from_numpy(data["attention_mask"][:batch])
            )
            assert logits.shape == (batch, textenc.TOPICS)
    assert textenc.accuracy(model) > 0.5  # well above the 0.25 of chance on four topics


def test_padding_does_not_change_textenc_outputs():
    model = load_model(compose("model=textenc").model)
    data = textenc.dataset("test", seq=16)
    ids, mask = torch.from_numpy(data["input_ids"][:4]), torch.from_numpy(data["attention_mask"][:4])
    padded_ids = torch.cat([ids, torch.zeros(4, 8, dtype=torch.int64)], 1)
    padded_mask = torch.cat([mask, torch.zeros(4, 8, dtype=torch.int64)], 1)
    with torch.inference_mode():
        torch.testing.assert_close(model(ids, mask), model(padded_ids, padded_mask), rtol=1e-4, atol=1e-5)


def test_missing_weights_file_names_the_file():
    cfg = compose("model.weights=models/weights/nope.pt").model
    with pytest.raises(PipelineError, match=r"model.weights: no such file models/weights/nope.pt"):
        load_model(cfg)


def test_weights_that_do_not_fit_name_the_first_layer():
    cfg = compose("model=textenc", "model.weights=models/weights/digits.pt").model
    with pytest.raises(PipelineError, match=r"has no tensor for layer 'positions'"):
        load_model(cfg)


def test_unknown_recipe_lists_the_models():
    cfg = compose("model.code=models/nope.py").model
    with pytest.raises(
        PipelineError, match=r"model.code: no such file models/nope.py .*custom, digits, onnx, resnet18, textenc"
    ):
        load_model(cfg)


def test_data_that_does_not_fit_the_inputs_names_the_array():
    cfg = compose().model
    wrong = OmegaConf.merge(cfg, {"inputs": [{"name": "image", "shape": ["batch", 1, 8, 9], "dtype": "float32"}]})
    with pytest.raises(PipelineError, match=r"test data of model 'digits': array 'image' has shape \[360, 1, 8, 8\]"):
        load_dataset(wrong, "test")


def test_feeds_and_batches_cover_the_data():
    cfg = compose().model
    data = load_dataset(cfg, "test")
    batches = feeds(cfg, data, 32)
    assert sum(len(b["image"]) for b in batches) == 360 and len(batches) == 12
    big = batch_of(cfg, data, 1000)
    assert big["image"].shape == (1000, 1, 8, 8)
    np.testing.assert_array_equal(big["image"][360], data["image"][0])


def test_resnet18_is_trained_compute_bound_and_small_enough_to_commit():
    """At least 0.3 G multiply-accumulates per image, at most 12 MB of weights, at least 97 % test top-1."""
    from models import resnet18

    model = load_model(compose("model=resnet18").model)
    assert resnet18.multiply_accumulates() >= 0.3e9
    assert (ROOT / "models/weights/resnet18.pt").stat().st_size <= 12 * 2**20
    assert resnet18.accuracy(model) >= FLOOR["resnet18"]
    test = resnet18.dataset("test")
    assert test["image"].shape == (360, 1, 48, 48) and test["labels"].shape == (360,)
