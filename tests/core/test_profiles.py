"""resolve_profiles: the default profile from the model's dynamic axes, configured ones checked against it."""

import pytest
from omegaconf import OmegaConf

from stages.core.errors import PipelineError
from stages.core.profiles import resolve_profiles

MODEL = OmegaConf.create(
    {
        "max_batch": 64,
        "dims": {"seq": 16},
        "inputs": [{"name": "ids", "shape": ["batch", "seq"], "dtype": "int64"}],
    }
)
KEY = "backend.x.profiles"


def test_the_default_covers_every_batch_and_is_tuned_for_the_largest_benchmark_batch():
    """Batch 1 .. max_batch; every other dynamic axis only at its model.dims size, the size the model is declared
    to take (not 1, which an image net with a skip connection cannot take)."""
    (profile,) = resolve_profiles(None, MODEL, [1, 8, 32], KEY)
    assert profile == {"ids": {"min": [1, 16], "opt": [32, 16], "max": [64, 16]}}
    assert resolve_profiles([], MODEL, [128], KEY)[0]["ids"]["opt"] == [64, 16]  # capped at max_batch


def test_configured_profiles_are_kept_in_order():
    two = [
        {"ids": {"min": [1, 1], "opt": [1, 8], "max": [4, 8]}},
        {"ids": {"min": [8, 1], "opt": [8, 8], "max": [8, 16]}},
    ]
    assert [p["ids"]["max"] for p in resolve_profiles(two, MODEL, [1], KEY)] == [[4, 8], [8, 16]]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"x": {}}, r"backend.x.profiles\[0\]: needs exactly the inputs ids, got x"),
        ({"ids": {"min": [1], "opt": [1, 1], "max": [1, 1]}}, r"\[0\].ids.min: \[1\] has rank 1"),
        ({"ids": {"min": [2, 1], "opt": [1, 1], "max": [4, 4]}}, r"\[0\].ids: needs 1 <= min <= opt <= max"),
    ],
)
def test_a_bad_profile_is_one_line_naming_its_entry(entry, message):
    with pytest.raises(PipelineError, match=message):
        resolve_profiles([entry], MODEL, [1], KEY)


def test_a_fixed_axis_cannot_move():
    fixed = OmegaConf.merge(MODEL, {"inputs": [{"name": "ids", "shape": ["batch", 16], "dtype": "int64"}]})
    with pytest.raises(PipelineError, match=r"\[0\].ids.max: axis 1 is fixed at 16 in the model, not 32"):
        resolve_profiles([{"ids": {"min": [1, 16], "opt": [1, 16], "max": [1, 32]}}], fixed, [1], KEY)


def test_feeds_take_exactly_the_first_limit_samples_and_a_fixed_batch_only_whole_batches():
    """The judges take the first samples of one reference run: a limit that is not a multiple of the batch ends in a
    partial batch, never in the samples after it; a model that fixes its batch drops what does not fill one."""
    import numpy as np
    from omegaconf import OmegaConf

    from stages.core.batches import feeds

    data = {"x": np.arange(20, dtype=np.float32).reshape(20, 1)}
    dynamic = OmegaConf.create({"name": "m", "inputs": [{"name": "x", "shape": ["batch", 1], "dtype": "float32"}]})
    assert [len(b["x"]) for b in feeds(dynamic, data, 8, limit=12)] == [8, 4]
    assert np.concatenate([b["x"] for b in feeds(dynamic, data, 8, limit=12)]).ravel().tolist() == list(range(12))
    fixed = OmegaConf.create({"name": "m", "inputs": [{"name": "x", "shape": [4, 1], "dtype": "float32"}]})
    assert [len(b["x"]) for b in feeds(fixed, data, 8, limit=10)] == [4, 4]
