"""Architectures nobody here wrote (examples/zoo.py): transformers models behind ``forward(*args)``, a two-output
network, and the onnx package's opset-9 graphs with a fixed batch, through the real stages at every precision."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from omegaconf import OmegaConf

from engineforge.coverage import PRECISIONS, call_stage, overrides, run_model
from examples import zoo
from stages import build as build_stage
from stages import compare, env, export, precision, reference, simplify
from stages.core import report_parts
from stages.core.artifacts import read_json
from stages.core.batches import feeds
from stages.core.data import load_dataset
from stages.core.errors import PipelineError
from stages.core.specs import InputSpec, signature_shapes
from tests.helpers import ROOT, compose, graph_entry, only_graph

MODELS = zoo.models()


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def zoo_cfg(name: str, out: Path, *more: str):
    """``name``'s config with every artifact below ``out``."""
    return compose(*overrides(name, *MODELS[name]), f"paths.build={out}/build", f"paths.reports={out}/reports", *more)


def spec(name: str, *shape: int | str) -> InputSpec:
    return InputSpec(name, shape, np.dtype("float32"))


def test_dynamic_shapes_follow_the_forward_signature():
    """One entry per positional parameter, ``*args`` as one nested tuple, None for an input with no dynamic axis."""
    ids, mask, fixed = spec("ids", "batch", "seq"), spec("mask", "batch", "seq"), spec("w", 3)
    both = ({0: "batch", 1: "seq"}, {0: "batch", 1: "seq"})

    def named(ids, mask): ...
    def varargs(*args): ...
    def mixed(ids, *rest): ...
    def keyword_only(ids, *, mask=None): ...

    assert signature_shapes(named, [ids, mask]) == both
    assert signature_shapes(varargs, [ids, mask]) == (both,)
    assert signature_shapes(mixed, [ids, mask, fixed]) == (both[0], (both[1], None))
    with pytest.raises(PipelineError, match=r"2 inputs declared, but forward\(\) takes 1 positional .*mask left over"):
        signature_shapes(keyword_only, [ids, mask])


def test_a_transformers_model_behind_forward_args_exports_with_its_dynamic_axes(at_root, tmp_path):
    """BERT behind ``forward(*args)``: exported with batch and seq dynamic, checked against PyTorch on the data
    factory's samples at another batch, and the output named by the exporter (``model.outputs`` is null)."""
    cfg = zoo_cfg("bert", tmp_path)
    call_stage(export, cfg)
    graph = onnx.load(cfg.paths.onnx).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"input_ids": ["batch", "seq"], "attention_mask": ["batch", "seq"]}
    report = read_json(cfg.paths.export_report)
    assert report["data"] == "examples.zoo:tokens('eval')" and report["check"]["samples"] >= 64
    assert (report["exporter"], report["exporter_failed"]) == ("dynamo", [])  # auto: dynamo first
    assert list(report["check"]["outputs"]) == [graph.output[0].name]


def test_outputs_read_from_the_graph_reach_compare(at_root, tmp_path):
    """Two outputs, none declared: export names them, compare gates both and the task metric reads the first."""
    cfg = zoo_cfg("two_heads", tmp_path)
    for module in (env, export, simplify, reference, precision, build_stage, compare):
        call_stage(module, cfg)
    accuracy = read_json(cfg.paths.accuracy)
    names = [o.name for o in onnx.load(cfg.paths.simplified).graph.output]
    assert len(names) == 2 and sorted(accuracy["outputs"]) == sorted(names) and accuracy["passed"]


def test_a_fixed_batch_model_without_data_gets_samples_in_its_batch(tmp_path):
    """The onnx package's graphs fix batch 1: seeded data has 128 eval / 512 calibration samples all the same,
    fed one at a time; a last partial batch of a larger fixed batch is left out."""
    cfg = zoo_cfg("squeezenet", tmp_path)
    test, train = load_dataset(cfg.model, "test"), load_dataset(cfg.model, "train")
    assert test["data_0"].shape == (128, 3, 224, 224) and train["data_0"].shape == (512, 3, 224, 224)
    batches = feeds(cfg.model, test, 32, limit=10)
    assert len(batches) == 10 and all(b["data_0"].shape[0] == 1 for b in batches)
    four = OmegaConf.merge(cfg.model, {"inputs": [{"name": "data_0", "shape": [4, 3, 224, 224], "dtype": "float32"}]})
    assert [len(b["data_0"]) for b in feeds(four, test, 32, limit=10)] == [4, 4]


@pytest.mark.parametrize("name", ["vit", "llama"])
def test_int8_by_default_quantizes_the_compute_and_keeps_the_rest_in_float(name, at_root, tmp_path):
    """A ViT (LayerNormalization) and a Llama-style decoder (RMSNorm as Pow/ReduceMean/Sqrt/Reciprocal/Mul, SiLU,
    rotary embeddings) at the default int8 settings: both are found to hold attention by structure, so MatMul reads
    Q/DQ copies and Softmax, the norms, GELU (Erf) and the residual Adds read float, also where they share a
    tensor with a quantized MatMul."""
    cfg = zoo_cfg(name, tmp_path, "backend=onnxruntime", "precision=int8", "precision.int8.calibration.samples=64")
    for module in (env, export, simplify, reference, precision):
        call_stage(module, cfg)
    model = onnx.load(only_graph(cfg))
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    readers = {n.op_type for n in model.graph.node if set(n.input) & dequantized}
    assert "MatMul" in readers and not readers & {"Softmax", "LayerNormalization", "Add", "Erf", "Pow", "Mul"}
    float_readers = {n.op_type for n in model.graph.node if set(n.input) & quantized} - {"QuantizeLinear"}
    assert "Add" in float_readers  # the residual stream, beside the quantized MatMul that shares its input


def test_an_opset_9_graph_is_upgraded_for_per_channel_int8(at_root, tmp_path):
    cfg = zoo_cfg(
        "squeezenet", tmp_path, "backend=onnxruntime", "precision=int8", "precision.int8.calibration.samples=16"
    )
    for module in (env, export, simplify, reference, precision):
        call_stage(module, cfg)
    assert graph_entry(cfg)["opset_upgraded_from"] == 9
    assert max(o.version for o in onnx.load(only_graph(cfg)).opset_import if o.domain == "") >= 13


def test_float16_overflow_names_the_first_node(at_root, tmp_path):
    """squeezenet's constant weights drive activations past float16's range: one line naming the node."""
    cfg = zoo_cfg("squeezenet", tmp_path, "precision=fp16")
    for module in (env, export, simplify, reference):
        call_stage(module, cfg)
    with pytest.raises(PipelineError, match=r"^precision=fp16: node '\w+' \(Conv\) gives Inf or NaN in float16 .*"):
        call_stage(precision, cfg)
    assert not Path(cfg.paths.precise).exists()


HEAVY = ("bvlc_alexnet",)  # minutes at every precision on 2 cores: `make test-heavy` (docs/development.md)


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.heavy) if n in HEAVY else n for n in MODELS])
def test_every_corpus_model_runs_at_every_precision_or_says_why_in_one_line(name, at_root, tmp_path):
    quick = (
        "benchmark.duration_s=0.05",
        "benchmark.warmup_ms=5",
        "benchmark.rounds=1",
        "benchmark.min_iterations=2",
        "backend.tune_s=1",
        "backend.race.duration_s=0.1",
        "backend.race.rounds=1",
        "backend.race.warmup_ms=5",
        "backend.race.min_iterations=2",
        "backend.race.samples=16",
        "compare.max_samples=16",
    )
    # int8 on the fewest calibration samples allowed, its fallback search bounded: whether a model runs, not how well
    small = ("precision.int8.calibration.samples=32", "precision.int8.fallback_search.budget_s=8")
    rows = run_model(name, *MODELS[name], PRECISIONS, tmp_path, quick, {"int8": small})
    assert [r["precision"] for r in rows] == list(PRECISIONS)
    for row in rows:
        assert row["result"] == "pass" or row["result"].startswith(("gate failed: ", "stopped: ")), row
        assert "\n" not in row["result"] and "Traceback" not in row["result"]
    assert rows[0]["result"] == "pass", rows[0]  # fp32 holds on every architecture (within float32's own floor)
    if "metric" in rows[0]:
        assert rows[0]["delta_pt"] == 0


def test_zoo_factories_are_seeded():
    first, second = zoo.two_heads(), zoo.two_heads()
    for key, value in first.state_dict().items():
        torch.testing.assert_close(value, second.state_dict()[key], rtol=0, atol=0)


def test_dynamic_height_and_width_are_checked_only_at_declared_sizes(at_root, tmp_path):
    """The segmentation net takes even sizes only: compare runs it at model.dims (64x48) for batch 1 and max_batch,
    and a profile edge it cannot take (height and width 1, as a hand-set profile may ask) is one gate line naming
    the shape and the keys, not a traceback."""
    cfg = zoo_cfg("segnet", tmp_path, "backend=onnxruntime", "precision=fp32", "compare.max_samples=16")
    for module in (env, export, simplify, reference, precision, build_stage, compare):
        call_stage(module, cfg)
    edges = [e for p in read_json(cfg.paths.accuracy)["parts"] for e in p["profile_edges"]]  # each range's engine
    assert [(e["edge"], e["shapes"]["image"], e["data"]) for e in edges] == [
        ("min", [1, 3, 64, 48], "eval"),
        ("max", [5, 3, 64, 48], "eval"),
        ("min", [6, 3, 64, 48], "eval"),
        ("max", [32, 3, 64, 48], "eval"),
    ]
    manifest = Path(cfg.paths.engine) / "manifest.json"
    record = read_json(manifest)
    record["profiles"][0]["image"]["min"] = [1, 3, 1, 1]
    manifest.write_text(json.dumps(record))
    with pytest.raises(PipelineError) as failed:
        call_stage(compare, cfg)
    line = str(failed.value)
    assert "\n" not in line and "profile 0 min shapes {'image': [1, 3, 1, 1]}: reference cannot run them (" in line
    assert "set model.dims to shapes the model takes" in line


def test_where_dynamo_cannot_export_auto_falls_back_to_torchscript_and_says_why(at_root, tmp_path):
    """The T5 encoder (a reshape after a transpose under symbolic shapes): auto exports it with TorchScript and
    records dynamo's root cause; dynamo alone stops in one line carrying that cause, not the step's text."""
    cfg = zoo_cfg("t5", tmp_path)
    call_stage(export, cfg)
    report = read_json(cfg.paths.export_report)
    assert report["exporter"] == "torchscript" and report["check"]["samples"] >= 64
    (failed,) = report["exporter_failed"]
    assert failed["exporter"] == "dynamo" and failed["error"].startswith("ValueError: Cannot view a tensor with shape")
    line, note = report_parts.exported(report)
    assert line.startswith("torch.onnx.export (torchscript exporter, torch 2.13")
    assert note.startswith("> **Exported by the torchscript exporter** after dynamo: ValueError: Cannot view a")
    with pytest.raises(PipelineError) as stopped:
        call_stage(export, zoo_cfg("t5", tmp_path / "dynamo", "export.exporter=dynamo"))
    line = str(stopped.value)
    assert line.startswith("torch.onnx.export failed for model 't5': dynamo: ValueError: Cannot view a tensor")
    assert "\n" not in line and "\x1b" not in line and "Failed to decompose" not in line
