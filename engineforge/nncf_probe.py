"""NNCF against the pipeline's int8 on this CPU: accuracy, speed and time to quantize, on the same calibration draw.

Not a DVC stage and not a dependency: the command behind docs/performance.md's NNCF table. It needs ``nncf`` (3.4.0
installs beside openvino 2026.4.1) and a pipeline run that left the model's int8 candidate graphs::

    dvc exp run -S model=resnet18 -S precision=int8
    pip install nncf==3.4.0 && python -m engineforge.nncf_probe -S model=resnet18

Rows: the pipeline's graph for each backend (its own encoding, its fallback judged on that runtime), and NNCF's
``quantize`` (default, full bias correction, the stem ignored) and ``quantize_with_accuracy_control`` on OpenVINO
from the float graph. Each is timed in interleaved rounds at batch 1 and 32 (2 threads, p50), and its logits are
compared with ONNX Runtime fp32 on the eval split. Prints a Markdown table.
"""

import argparse
import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from stages.core import calibration
from stages.core.artifacts import read_json
from stages.core.batches import batch_of, feeds
from stages.core.data import LABELS, load_dataset
from stages.core.markdown import table
from stages.core.onnx_io import ort_outputs
from stages.core.run import compose, quiet_libraries
from stages.core.timing import TimedCall, measure

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def ov_runner(model: Any) -> Runner:
    """A compiled OpenVINO model (f32 pinned, 2 threads, latency hint) as feed -> first output."""
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    request = compiled.create_infer_request()
    return lambda feed: np.array(request.infer(feed)[compiled.outputs[0]])


def ort_runner(path: Path) -> Runner:
    """An ONNX Runtime session (2 threads, every optimization) as feed -> first output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, feed)[0]


def main() -> None:
    """Quantize, check and time every row; print the table."""
    import nncf
    import openvino as ov

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="Hydra override, as dvc exp run -S")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per row and batch size")
    args = parser.parse_args()
    quiet_libraries()
    cfg = compose("precision=int8", *args.overrides)
    int8 = cfg.precision.int8
    batches, _ = calibration.calibration_batches(cfg.model, int8.calibration, "precision.int8.calibration")
    data = load_dataset(cfg.model, "test")
    evals = feeds(cfg.model, data, 32)
    reference = ort_outputs(Path(cfg.paths.simplified), evals)[cfg.model.task.output]
    labels = data[LABELS][: len(reference)]
    name = next(iter(batches[0]))
    calibration_set = nncf.Dataset(batches, lambda feed: feed[name])
    float_model = ov.Core().read_model(cfg.paths.simplified)
    stem = next(op.get_friendly_name() for op in float_model.get_ordered_ops() if op.get_type_name() == "Convolution")
    graphs = read_json(cfg.paths.precision_report)["candidates"]
    kept = next(g["fallback"]["excluded"] for g in graphs if g["backend"] == "openvino")  # judged on OpenVINO
    kept_scope = nncf.IgnoredScope(patterns=[f"^{re.escape(n)}(/WithoutBiases)?$" for n in kept], validate=False)

    def validate(compiled: Any, items: Any) -> float:
        out = np.concatenate([np.array(compiled(feed)[compiled.outputs[0]]) for feed in items])
        return float((out.argmax(1) == labels[: len(out)]).mean())

    made: dict[str, tuple[Runner, float | None]] = {
        "ONNX Runtime fp32": (ort_runner(Path(cfg.paths.simplified)), None),
        "pipeline int8, ONNX Runtime (its graph)": (
            ort_runner(Path(cfg.paths.precise) / "int8.onnxruntime.onnx"),
            None,
        ),
        "pipeline int8, OpenVINO (its graph, fallback on OpenVINO)": (
            ov_runner(str(Path(cfg.paths.precise) / "int8.openvino.onnx")),
            None,
        ),
    }
    nncf_rows: dict[str, Callable[[], Any]] = {
        "NNCF quantize, defaults": lambda: nncf.quantize(float_model, calibration_set, subset_size=len(batches) * 32),
        "NNCF quantize, full bias correction": lambda: nncf.quantize(
            float_model, calibration_set, subset_size=len(batches) * 32, fast_bias_correction=False
        ),
        f"NNCF quantize, stem ({stem}) ignored": lambda: nncf.quantize(
            float_model, calibration_set, subset_size=len(batches) * 32, ignored_scope=nncf.IgnoredScope(names=[stem])
        ),
        f"NNCF quantize, the pipeline's OpenVINO fallback nodes ({', '.join(kept)}) ignored": lambda: nncf.quantize(
            float_model, calibration_set, subset_size=len(batches) * 32, ignored_scope=kept_scope
        ),
        "NNCF quantize_with_accuracy_control (max drop 1 pt)": lambda: nncf.quantize_with_accuracy_control(
            float_model,
            calibration_set,
            nncf.Dataset(evals, lambda feed: feed[name]),
            validate,
            max_drop=0.01,
            subset_size=len(batches) * 32,
        ),
    }
    for label, quantize in nncf_rows.items():
        started = time.perf_counter()
        quantized = quantize()
        made[label] = (ov_runner(quantized), time.perf_counter() - started)
    rows: list[list[str]] = []
    p50: dict[str, dict[int, list[np.ndarray]]] = {label: {1: [], 32: []} for label in made}
    for _ in range(3):  # interleaved rounds
        for label, (run, _) in made.items():
            for batch in (1, 32):
                call = TimedCall(partial(run, batch_of(cfg.model, data, batch)))
                p50[label][batch].append(measure(call, 0.2, args.seconds / 3, 5)["latency_ms"])
    base = {b: float(np.median(np.concatenate(p50["ONNX Runtime fp32"][b]))) for b in (1, 32)}
    for label, (run, spent) in made.items():
        out = np.concatenate([run(feed) for feed in evals])
        times = {b: float(np.median(np.concatenate(p50[label][b]))) for b in (1, 32)}
        rows.append(
            [
                label,
                f"{np.abs(out - reference).max():.3g}",
                f"{100 * (out.argmax(1) == labels).mean():.2f} %",
                *(f"{times[b]:.2f} ms ({base[b] / times[b]:.2f}×)" for b in (1, 32)),
                "—" if spent is None else f"{spent:.1f} s",
            ]
        )
    head = ["int8 form", "max abs logit error", "top-1", "p50 bs1 (vs ORT fp32)", "p50 bs32", "time to quantize"]
    print(table(head, rows))


if __name__ == "__main__":
    main()
