"""One gate: the int8 fallback's rounds, the build's race and compare judge the same outputs by the same rule.

Each case is a pair of real ONNX graphs, the fp32 reference and a candidate, whose outputs sit where the three
judges once disagreed: Polygraphy's elementwise compare (compare's old rule) scales rtol by the candidate, the
race's by the reference, and the fallback's rounds applied no float32 floors.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper

from stages import build, compare, reference
from stages.core import fallback
from stages.core.data import load_dataset
from stages.core.errors import PipelineError
from stages.core.reference import read_reference
from stages.runtime import registry
from stages.runtime.engine import Engine
from stages.select.candidate import Candidate, build_spec, runtime_outputs
from stages.select.race import Heat, build_and_gate
from tests.helpers import compose, env_record
from tests.test_faults import graph_file

REFERENCE = registry.get(registry.REFERENCE)


def scaled(path: Path, factor: float, shift: float, softmax: bool) -> Path:
    """y = x * factor + shift * [0, 1, 2, 3], or the softmax of it over the last axis."""
    scale = numpy_helper.from_array(np.full(4, factor, np.float32), "scale")
    bias = numpy_helper.from_array(np.arange(4, dtype=np.float32) * np.float32(shift), "bias")
    nodes = [helper.make_node("Mul", ["x", "scale"], ["z0"]), helper.make_node("Add", ["z0", "bias"], ["z"])]
    nodes.append(
        helper.make_node("Softmax", ["z"], ["y"], axis=-1) if softmax else helper.make_node("Identity", ["z"], ["y"])
    )
    return graph_file(path, nodes, [scale, bias])


def eval_data(softmax: bool) -> np.ndarray:
    """Positive inputs whose last column is the largest: scaling and the candidate's shift keep every argmax. For
    the softmax case, columns 2e-7 apart at 0.5: logits near 5e5, 0.2 apart, a few float32 spacings (0.03)."""
    rng = np.random.default_rng(0)
    if softmax:
        return (0.5 + np.arange(4) * 2e-7 + rng.random((16, 1)) * 1e-7).astype(np.float32)
    return (0.5 + np.arange(4) * 0.5 + rng.random((16, 4)) * 0.1).astype(np.float32)


# (reference factor, candidate factor, candidate shift, softmax, atol, rtol)
CASES = {
    # |c - r| = 0.5 |r|: beyond rtol 0.4 x |reference|, within rtol 0.4 x |candidate| (= 0.6 |r|)
    "rtol scaled by the reference": (1.0, 1.5, 0.0, False, 0.01, 0.4),
    # logits near 5e5 moved by one float32 spacing: the softmax moves by ~0.01, far beyond atol 1e-4 but within
    # float32's own floor there (~0.5), to which the gate raises atol
    "float32 floor of a softmax": (1.0e6, 1.0e6, 0.03, True, 1e-4, 1e-4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_fallback_the_race_and_compare_give_the_same_verdict(case, tmp_path, monkeypatch):
    """Each judge runs its own batches (the fallback 5 at a time, compare 8, the race its first 12 samples) over
    labelled eval data; the reference stage ran once, and each takes the first samples it judged."""
    factor, candidate_factor, shift, softmax, atol, rtol = CASES[case]
    monkeypatch.chdir(tmp_path)
    x = eval_data(softmax)
    np.savez(tmp_path / "eval.npz", x=x, labels=np.full(len(x), 3))  # the last column is every sample's largest
    scaled(tmp_path / "ref.onnx", factor, 0.0, softmax)
    graph = scaled(tmp_path / "candidate.onnx", candidate_factor, shift, softmax)
    overrides = ("model.data.eval=eval.npz", f"precision.tolerance.atol={atol}", f"precision.tolerance.rtol={rtol}")
    cfg = compose("model=onnx", "model.path=ref.onnx", "model.task.metric=top1", "compare.batch_size=8", *overrides)
    Path(cfg.paths.simplified).parent.mkdir(parents=True)
    shutil.copyfile("ref.onnx", cfg.paths.simplified)
    reference.main(cfg)  # the one reference run (the stage, with the whole composed config)
    run, option, data = read_reference(cfg.paths.reference), cfg.precision, load_dataset(cfg.model, "test")
    record = env_record(REFERENCE, cfg)
    spec = build_spec(cfg.model, "fp32", [8], record, None)

    judged = fallback.Reference(cfg.model, 5, run, data)
    rounds = fallback.Evaluator(judged, option, runtime_outputs(REFERENCE, spec)).verdict(graph)
    entry = (Candidate(REFERENCE, "fp32", record), graph, spec)
    span = (1, cfg.model.max_batch)
    heat = Heat(span, (8,), (8,), [entry], build.judge(cfg, 12, span))
    raced = build_and_gate(heat, "onnx", None, tmp_path / "race")[0][0]["gate"]
    with Engine.open(tmp_path / "race" / "fp32.onnxruntime") as engine:
        batches, outputs = run.judged(cfg.model, data, cfg.compare.batch_size)
        compared = compare.verdict(engine, cfg.model, option, outputs, run.scales, batches, data["labels"])

    assert (rounds["samples"], raced["samples"], compared["samples"]) == (16, 12, 16)
    short, _ = run.judged(cfg.model, data, 5, least=2)  # 5+5+5+1: a range from batch 2 is never given 1 sample
    assert [len(next(iter(b.values()))) for b in short] == [5, 5, 5]
    assert rounds["passed"] == raced["passed"] == compared["passed"]
    said = {str(v["failure"]).split(" by up to")[0] for v in (rounds, raced, compared)}  # the worst element varies
    assert len(said) == 1, said
    expected = case == "float32 floor of a softmax"  # the floor lets float32's own spread pass; 0.5 |r| fails
    assert compared["passed"] is expected, compared["failures"]


def test_a_reference_made_from_other_eval_data_is_refused_in_one_line(tmp_path, monkeypatch):
    """A stage run by hand after the eval data changed would judge outputs of other samples: every judge checks
    the reference's digest of the eval inputs first."""
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "eval.npz", x=eval_data(False))
    scaled(tmp_path / "ref.onnx", 1.0, 0.0, False)
    cfg = compose("model=onnx", "model.path=ref.onnx", "model.data.eval=eval.npz")
    Path(cfg.paths.simplified).parent.mkdir(parents=True)
    shutil.copyfile("ref.onnx", cfg.paths.simplified)
    reference.main(cfg)
    run, data = read_reference(cfg.paths.reference), load_dataset(cfg.model, "test")
    fallback.Reference(cfg.model, 8, run, data)  # the same data: accepted
    data["x"] = data["x"] + 1
    with pytest.raises(PipelineError, match=r"^the reference run was made from other eval data: run `dvc repro`$"):
        fallback.Reference(cfg.model, 8, run, data)


def test_int8_tolerance_scales_with_the_outputs_spread_and_fp32s_does_not():
    """The same relative error passes int8 on logits spread wide and on logits spread narrow, where a fixed atol
    fails one and waves anything through on the other; an error of a whole spread (a broken calibration) fails."""
    from stages.core.gate import output_check
    from stages.core.reference import Scales

    rng = np.random.default_rng(0)
    int8, fp32 = compose("precision=int8").precision, compose("precision=fp32").precision
    for spread in (4.3, 0.17):  # ResNet-50's and BERT-base's logits (docs/precision.md)
        want = (rng.standard_normal((64, 10)) * spread).astype(np.float32)
        scales = Scales({}, {"y": float(np.std(want))})
        good = want + np.float32(0.2 * spread) * np.sign(rng.standard_normal(want.shape)).astype(np.float32)
        broken = want + np.float32(1.3 * spread)
        assert output_check(int8, {"y": want}, {"y": good}, scales)[1] == [], spread
        assert output_check(int8, {"y": want}, {"y": broken}, scales)[1], spread
        assert output_check(fp32, {"y": want}, {"y": good}, scales)[1]  # fp32: rounding, not range: no spread
