"""precision stage: model.sim.onnx (+ calibration data, env.json) -> paths.precise/<precision>.<backend>.onnx (one
graph per candidate: each backend env.json lists, at each precision ``precision.name`` races), precision.json.

Precision is decided here, in the ONNX graph, and the backend's builder follows it (TensorRT 11 has no FP16/INT8
builder flags and no calibrators). fp32 passes the graph through; fp16 casts it keeping float32 I/O and fragile
ops; bf16 writes what the backend needs (a bfloat16 graph for TensorRT, the float32 graph OpenVINO runs in
bf16) or stops in one line where it has no bf16; int8 calibrates once and writes explicit Q/DQ in the encoding
each backend runs fast, then, when ``precision.int8.fallback`` is on and the task budget is missed on that backend's
own runtime, keeps its most sensitive nodes in float (within ``fallback_search.budget_s``). ``precision=auto``
writes every precision for every candidate backend; a precision a backend does not run is recorded as skipped.
precision.json holds each candidate's record, the calibration table (tensor -> range, scale, zero point) and its
provenance.
"""

import tempfile
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from stages.core import calibration, fallback, precisions
from stages.core.artifacts import atomic_path, read_json, write_json
from stages.core.batches import feeds
from stages.core.bfloat16 import bf16_for
from stages.core.data import data_source, load_dataset
from stages.core.errors import PipelineError
from stages.core.float16 import check_float16_range, write_fp16
from stages.core.graph_files import copy_graph, files_sha256, remove_graph
from stages.core.nncf_quantize import NNCF, write_nncf
from stages.core.onnx_io import load_onnx, op_counts
from stages.core.quantize import (
    ENCODINGS,
    activation_table,
    quantized_nodes,
    with_qdq_opset,
    write_int8,
)
from stages.core.reference import read_reference
from stages.core.run import run_stage
from stages.runtime import registry
from stages.runtime.records import host_facts, read_candidates
from stages.select.candidate import Candidate, build_spec, graph_file, runtime_outputs

CALIBRATION = "precision.int8.calibration"  # where the calibration settings live, for error messages

AUTO = "auto"  # precision.int8.encoding: the backend's own
BACKEND_FREE = ("fp32", "fp16")  # graphs the precision stage writes the same for every backend


def encoding_for(requested: str, capabilities: dict[str, Any]) -> str:
    """``precision.int8.encoding``, with ``auto`` resolved to the backend's own (its env.json capabilities)."""
    if requested == AUTO:
        requested = capabilities["int8_encoding"]
    if requested not in (*ENCODINGS, NNCF):
        known = ", ".join([AUTO, *ENCODINGS, NNCF])
        raise PipelineError(f"precision.int8.encoding: {requested!r} is not one of {known}")
    return requested


class Calibrated:
    """One calibration of the float graph (made on first use), shared by every backend's int8 graph."""

    def __init__(self, cfg: DictConfig, settings: DictConfig, source: Path, folder: Path) -> None:
        """Args:
        cfg: the stage's config (the model, for its calibration split).
        settings: the int8 option's ``int8`` section.
        source: the float graph.
        folder: where an opset-upgraded copy is written.
        """
        self.method = calibration.method_of(settings.calibration, CALIBRATION)
        self.batches, self.data = calibration.calibration_batches(cfg.model, settings.calibration, CALIBRATION)
        self.graph, self.opset = with_qdq_opset(source, folder)
        self.settings = settings.calibration
        test = load_dataset(cfg.model, "test")
        run = read_reference(cfg.paths.reference)  # the reference stage's run, never repeated here
        self.reference = fallback.Reference(cfg.model, settings.fallback_search.batch_size, run, test)

    @cached_property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """ONNX Runtime's calibration of every tensor, measured when an encoding first needs it (NNCF does not)."""
        return calibration.calibrate(self.graph, self.batches, self.settings, CALIBRATION)


def int8(
    cfg: DictConfig, option: DictConfig, chosen: Candidate, calibrated: Calibrated, source: Path, out: Path
) -> dict[str, Any]:
    """Encode the calibrated graph as Q/DQ in ``chosen``'s encoding into ``out``, with the fallback loop judged on
    ``chosen``'s own runtime; return the candidate's report fields."""
    settings = option.int8
    encoding = encoding_for(settings.encoding, dict(chosen.record["capabilities"]))
    if encoding == NNCF:  # NNCF measures its own ranges, on the same calibration draw
        encode = partial(write_nncf, calibrated.graph, calibrated.batches, list(settings.op_types))
    else:
        encode = partial(write_int8, calibrated.graph, calibrated.ranges, calibrated.method, encoding, settings)
    spec = build_spec(
        cfg.model,
        "int8",
        [settings.fallback_search.batch_size],
        chosen.record,
        None,  # no timing cache: a judge
    )
    evaluate = fallback.Evaluator(calibrated.reference, option, runtime_outputs(chosen.backend, spec))
    record = fallback.run(
        out, encode, evaluate, bool(settings.fallback), settings.fallback_search, list(settings.op_types)
    )
    model = load_onnx(out)
    return {
        "encoding": encoding,
        "opset_upgraded_from": calibrated.opset if calibrated.graph != source else None,
        "quantized_nodes": len(quantized_nodes(model, list(settings.op_types))),
        "tensors": activation_table(model, {} if encoding == NNCF else calibrated.ranges),  # NNCF's own ranges
        "fallback": record | {"judged_on": chosen.backend.name},
    }


def write(
    cfg: DictConfig, option: DictConfig, chosen: Candidate, calibrated: Any, source: Path, out: Path
) -> dict[str, Any]:
    """Write ``chosen``'s graph at its precision to ``out``; return its report fields."""
    capabilities = dict(chosen.record["capabilities"])
    if chosen.precision == "fp32":
        copy_graph(source, out)
        return {}
    if chosen.precision == "fp16":
        kept = write_fp16(source, list(option.fp16.keep_float32), out)
        batches = feeds(cfg.model, load_dataset(cfg.model, "test"), 8, limit=32)
        check_float16_range(source, out, batches, data_source(cfg.model, "test"))
        return {"kept_float32": kept}
    if chosen.precision == "bf16":
        return bf16_for(capabilities, list(option.bf16.keep_float32), source, out)
    return int8(cfg, option, chosen, calibrated(), source, out)


def missed(fell: dict[str, Any], entry: dict[str, Any]) -> str:
    """Why the fallback stopped short of the gate, for the stage's line: off, out of its time budget, or at its
    node limit."""
    if not fell["enabled"]:
        return "; the fallback is off (precision.int8.fallback)"
    following = f" (it would keep {', '.join(fell['next'])} in float next)" if fell.get("next") else ""
    if fell["out_of_budget"]:
        ranked = f"ranking {len(fell['sensitivity'])} of {entry['quantized_nodes']} nodes"
        key = "precision.int8.fallback_search.budget_s"
        return f"; the fallback ran out of its {fell['budget_s']:.0f} s after {ranked}{following}: raise {key}"
    return f"; the fallback reached precision.int8.fallback_search.max_nodes{following}"


def describe(entry: dict[str, Any]) -> str:
    """One candidate graph in a few words."""
    done = {
        "fp32": "graph unchanged",
        "fp16": f"float16, float32 I/O, {len(entry.get('kept_float32', []))} op types kept in float32",
        "bf16": "bfloat16 graph, float32 I/O" if entry.get("bf16") == "graph" else "float32 graph, run in bf16",
    }
    if entry["precision"] == "int8":
        fell = entry["fallback"]
        kept = fell["rounds"][fell["kept"]]
        done["int8"] = (
            f"{entry['encoding']} Q/DQ on {entry['quantized_nodes']} nodes, {kept['metric']} {kept['candidate']:.4f} "
            f"(reference {kept['reference']:.4f}) on {fell['judged_on']}"
            + (f", {kept['excluded']} nodes kept in float" if kept["excluded"] else "")
            + ("" if kept["passed"] else f", FAILS the gate ({kept['failure']}){missed(fell, entry)}")
        )
    return f"{entry['precision']} for {entry['backend']}: {done[entry['precision']]}"


def main(cfg: DictConfig) -> str:
    """Write ``paths.simplified`` at each raced precision, for each candidate backend, into the folder
    ``paths.precise``, and describe every graph in precision.json."""
    options = precisions.options(cfg.precision)
    found = read_candidates(read_json(cfg.paths.env), cfg.paths.env)
    source = Path(cfg.paths.simplified)
    load_onnx(source)
    report: dict[str, Any] = {
        "precision": cfg.precision.name,
        "source_sha256": files_sha256(source),
        "calibration": None,
    }
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with atomic_path(cfg.paths.precise, directory=True) as folder, tempfile.TemporaryDirectory() as tmp:
        shared: dict[str, Calibrated] = {}
        same_for_all: dict[str, tuple[Path, dict[str, Any]]] = {}  # fp32, fp16: one graph whatever the backend

        def calibrated() -> Calibrated:
            if not shared:
                shared["int8"] = Calibrated(cfg, options["int8"].int8, source, Path(tmp))
            return shared["int8"]

        for name, record in found.items():
            for precision, option in options.items():
                chosen = Candidate(registry.get(name), precision, record)
                supported = chosen.capabilities.supports(precision)
                out = folder / graph_file(precision, name)
                try:
                    if not supported.ok:
                        raise PipelineError(f"precision={precision} on {name}: {supported.reason}")
                    if precision in same_for_all:
                        copy_graph(same_for_all[precision][0], out)
                        fields = same_for_all[precision][1]
                    else:
                        fields = write(cfg, option, chosen, calibrated, source, out)
                    if precision in BACKEND_FREE:
                        same_for_all[precision] = (out, fields)
                except PipelineError as e:  # a one-line refusal: ours, or its runtime's to run the graph it judges
                    if len(options) == 1 and len(found) == 1:  # the one candidate: its problem, in one line
                        raise
                    remove_graph(out)
                    skipped.append({"candidate": chosen.key, "reason": str(e)})
                    continue
                entry = {"backend": name, "precision": precision, "file": out.name, "sha256": files_sha256(out)}
                entries.append(entry | fields | {"ops": op_counts(load_onnx(out, weights=False))})
        if not entries:  # one precision: its first problem is the user's; auto: say that nothing was left
            why = skipped[0]["reason"]
            raise PipelineError(why if len(options) == 1 else f"precision=auto: no candidate graph ({why})")
    if shared:
        int8s = [e for e in entries if e["precision"] == "int8"]  # ONNX Runtime's calibration first: its min and max
        first = next((e for e in int8s if e["encoding"] != NNCF), int8s[0] if int8s else None)
        provenance = calibration.provenance(source, shared["int8"].data, options["int8"].int8.calibration)
        report["calibration"] = {"provenance": provenance, "tensors": first.pop("tensors") if first else {}}
        for entry in entries:
            entry.pop("tensors", None)
    report |= {"candidates": entries, "skipped": skipped}
    write_json(cfg.paths.precision_report, report)  # no time or memory here: build and compare read this file
    lines = "; ".join(describe(e) for e in entries)
    return f"{lines} -> {cfg.paths.precise}/" + (f" ({len(skipped)} skipped: see precision.json)" if skipped else "")


if __name__ == "__main__":
    run_stage("precision", main, facts=host_facts)
