"""precision stage: model.sim.onnx (+ calibration data, backend.json) -> model.<precision>.onnx, precision.json.

Precision is decided here, in the ONNX graph, and the backend's builder follows it (TensorRT 11 has no FP16/INT8
builder flags and no calibrators). fp32 passes the graph through; fp16 casts it keeping float32 I/O and fragile
ops; bf16 writes what the backend needs (a bfloat16 graph for TensorRT, the float32 graph OpenVINO runs in
bf16) or stops in one line where it has no bf16; int8 calibrates once and writes explicit Q/DQ in the encoding the chosen backend runs fast, then, when
``precision.int8.fallback`` is on and the task budget is missed, keeps the most sensitive nodes in float.
precision.json holds the calibration table (tensor -> range, scale, zero point) and its provenance.
"""

import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from stages.core import calibration, fallback
from stages.core.artifacts import atomic_path, read_json, sha256, write_json
from stages.core.batches import feeds
from stages.core.bfloat16 import write_bf16
from stages.core.data import data_source, load_dataset
from stages.core.errors import PipelineError
from stages.core.float16 import float16_overflow, write_fp16
from stages.core.onnx_io import load_onnx, op_counts, ort_outputs
from stages.core.quantize import (
    ENCODINGS,
    activation_table,
    quantized_nodes,
    with_qdq_opset,
    write_int8,
)
from stages.core.run import run_stage

CALIBRATION = "precision.int8.calibration"  # where the calibration settings live, for error messages

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
AUTO = "auto"


def encoding_for(requested: str, choice_file: str) -> str:
    """``precision.int8.encoding``, with ``auto`` resolved to the chosen backend's (from ``paths.backend_choice``)."""
    if requested == AUTO:
        requested = read_json(choice_file)["int8_encoding"]
    if requested not in ENCODINGS:
        raise PipelineError(f"precision.int8.encoding: {requested!r} is not one of {', '.join([AUTO, *ENCODINGS])}")
    return requested


def bf16(cfg: DictConfig, source: Path, out: Path) -> dict[str, Any]:
    """The graph precision=bf16 needs for the chosen backend (``paths.backend_choice``): a bfloat16 graph
    (TensorRT), the float32 graph its runtime executes in bfloat16 (OpenVINO), or one line saying why not."""
    choice = read_json(cfg.paths.backend_choice)
    form = choice["bf16"]
    if form == "graph":
        return {"bf16": form, "kept_float32": write_bf16(source, list(cfg.precision.bf16.keep_float32), out)}
    if form == "runtime":
        shutil.copyfile(source, out)
        return {"bf16": form}
    raise PipelineError(f"precision=bf16: {choice['bf16_reason']}")


def int8(cfg: DictConfig, source: Path, out: Path) -> dict[str, Any]:
    """Calibrate ``source``, encode it as Q/DQ into ``out`` (with the fallback loop); return the report fields."""
    settings = cfg.precision.int8
    encoding = encoding_for(settings.encoding, cfg.paths.backend_choice)
    method = calibration.method_of(settings.calibration, CALIBRATION)
    batches, data = calibration.calibration_batches(cfg.model, settings.calibration, CALIBRATION)
    with tempfile.TemporaryDirectory(prefix="engineforge-opset-") as tmp:
        graph, opset = with_qdq_opset(source, Path(tmp))
        ranges = calibration.calibrate(graph, batches, settings.calibration, CALIBRATION)
        encode = partial(write_int8, graph, ranges, method, encoding, settings)
        evaluate = fallback.Evaluator(
            cfg.model,
            cfg.precision.task_budget,
            settings.fallback_search.batch_size,
            graph,
            load_dataset(cfg.model, "test"),
        )
        record = fallback.run(
            out, encode, evaluate, bool(settings.fallback), settings.fallback_search, list(settings.op_types)
        )
    model = load_onnx(out)
    return {
        "encoding": encoding,
        "opset_upgraded_from": opset if graph != source else None,
        "quantized_nodes": len(quantized_nodes(model, list(settings.op_types))),
        "calibration": {
            "provenance": calibration.provenance(source, data, settings.calibration),
            "tensors": activation_table(model, ranges),
        },
        "fallback": record,
    }


def check_float16_range(cfg: DictConfig, source: Path, fp16: Path) -> None:
    """Refuse, in one line naming the first overflowing node, a float16 model that gives Inf or NaN on eval
    samples where the float32 model does not."""
    batches = feeds(cfg.model, load_dataset(cfg.model, "test"), 8, limit=32)
    if not all(np.isfinite(v).all() for v in ort_outputs(source, batches, as_written=True).values()):
        return  # the float32 model itself is not finite here: compare names the output
    found = float16_overflow(fp16, batches)
    if found:
        raise PipelineError(
            f"precision=fp16: node {found[0]!r} ({found[1]}) gives Inf or NaN in float16 on "
            f"{data_source(cfg.model, 'test')} (float32 is finite: values beyond float16's 65504); add {found[1]} "
            "to precision.fp16.keep_float32 or use precision=fp32"
        )


def main(cfg: DictConfig) -> str:
    """Write ``paths.simplified`` at ``precision.name`` to ``paths.precise`` and describe it in precision.json."""
    name = cfg.precision.name
    if name not in PRECISIONS:
        raise PipelineError(f"precision.name: {name!r} is not one of {', '.join(PRECISIONS)}")
    source = Path(cfg.paths.simplified)
    load_onnx(source)
    report: dict[str, Any] = {"precision": name, "source_sha256": sha256(source), "calibration": None}
    with atomic_path(cfg.paths.precise) as tmp:
        if name == "fp32":
            shutil.copyfile(source, tmp)
        elif name == "fp16":
            report["kept_float32"] = write_fp16(source, list(cfg.precision.fp16.keep_float32), tmp)
            check_float16_range(cfg, source, tmp)
        elif name == "bf16":
            report |= bf16(cfg, source, tmp)
        else:
            report |= int8(cfg, source, tmp)
        result = load_onnx(tmp)
    report |= {"sha256": sha256(cfg.paths.precise), "ops": op_counts(result)}
    write_json(cfg.paths.precision_report, report)
    done = {
        "fp32": "graph unchanged",
        "fp16": f"float16, float32 I/O, {len(report.get('kept_float32', []))} op types kept in float32",
        "bf16": "bfloat16 graph, float32 I/O" if report.get("bf16") == "graph" else "float32 graph, run in bf16",
    }
    if name == "int8":
        kept = report["fallback"]["rounds"][report["fallback"]["kept"]]
        done["int8"] = (
            f"{report['encoding']} Q/DQ on {report['quantized_nodes']} nodes, "
            f"{kept['metric']} {kept['candidate']:.4f} (reference {kept['reference']:.4f})"
            + (f", {kept['excluded']} nodes kept in float" if kept["excluded"] else "")
        )
    return f"{name}: {done[name]} -> {cfg.paths.precise}"


if __name__ == "__main__":
    run_stage("precision", main)
