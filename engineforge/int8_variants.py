"""INT8 speed investigation: one model's FP32 graph against Q/DQ variants of it, timed interleaved on ONNX Runtime.

Not a DVC stage: the command behind the int8 findings of docs/performance.md. Run it after the pipeline has simplified the model::

    dvc exp run -S model=resnet18            # or any run that leaves build/<model>/simplified/model.sim.onnx
    python -m engineforge.int8_variants -S model=resnet18 --batch 32

Variants share the pipeline's calibration (``stages.core.calibration``) and encoder (``stages.core.quantize``) and
differ in one setting each: weight granularity, op placement, encoding, ONNX Runtime's quantization pre-processing,
threads. Prints a Markdown table: p50 latency and speed-up over FP32 at the same thread count.
"""

import argparse
import tempfile
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
from omegaconf import DictConfig, OmegaConf

from stages.core import calibration
from stages.core.batches import batch_of, check_batch
from stages.core.data import load_dataset
from stages.core.markdown import table
from stages.core.quantize import write_int8
from stages.core.run import compose, quiet_libraries
from stages.core.timing import TimedCall, measure

CALIBRATION = "precision.int8.calibration"

# label -> (int8 setting overrides, encoding, pre-process first, threads)
VARIANTS = {
    "u8s8, per-channel weights (the pipeline's form)": ({}, "u8s8", False, 2),
    "u8s8, per-tensor weights": ({"per_channel": False}, "u8s8", False, 2),
    "u8s8 after quant_pre_process": ({}, "u8s8", True, 2),
    "u8s8, Conv/Gemm/MatMul only": ({"op_types": ["Conv", "Gemm", "MatMul"]}, "u8s8", False, 2),
    "u8s8, 7-bit weights (reduce_range)": ({"reduce_range": True}, "u8s8", False, 2),
    "s8s8 (TensorRT's symmetric form)": ({}, "s8s8", False, 2),
    "u8s8, 1 thread": ({}, "u8s8", False, 1),
}


def session(path: Path, threads: int):
    """A CPU InferenceSession at ONNX Runtime's default optimization level."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = threads, 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> None:
    """Build every variant, time them interleaved, print the table."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    parser = argparse.ArgumentParser(prog="python -m engineforge.int8_variants", description=__doc__.splitlines()[0])
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="Hydra override, as in dvc exp run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per variant per round")
    args = parser.parse_args(argv)
    quiet_libraries()
    cfg = compose("precision=int8", *args.overrides)
    int8, source = cfg.precision.int8, Path(cfg.paths.simplified)
    batches, _ = calibration.calibration_batches(cfg.model, int8.calibration, CALIBRATION)
    check_batch(cfg.model, args.batch, "--batch")
    feed = batch_of(cfg.model, load_dataset(cfg.model, "test"), args.batch)
    with tempfile.TemporaryDirectory(prefix="engineforge-variants-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(source), str(pre))
        ranges = {s: calibration.calibrate(s, batches, int8.calibration, CALIBRATION) for s in (source, pre)}
        method = calibration.method_of(int8.calibration, CALIBRATION)
        sessions = {"fp32": session(source, 2), "fp32, 1 thread": session(source, 1)}
        for i, (label, (overrides, encoding, preprocess, threads)) in enumerate(VARIANTS.items()):
            src, out = (pre if preprocess else source), Path(tmp) / f"v{i}.onnx"
            variant = cast(DictConfig, OmegaConf.merge(int8, overrides))  # merging two DictConfigs gives one
            write_int8(src, ranges[src], method, encoding, variant, out)
            sessions[label] = session(out, threads)
        times: dict[str, list[np.ndarray]] = {name: [] for name in sessions}
        for _ in range(args.rounds):  # interleaved, so the machine's drift hits every variant alike
            for name, sess in sessions.items():
                times[name].append(
                    measure(TimedCall(partial(sess.run, None, feed)), 0.2, args.seconds, 3)["latency_ms"]
                )
    p50 = {name: float(np.median(np.concatenate(runs))) for name, runs in times.items()}
    rows = []
    for name, value in p50.items():
        base = p50["fp32, 1 thread" if "1 thread" in name else "fp32"]
        rows.append([name, f"{value:.1f}", f"{base / value:.2f}×"])
    print(f"{cfg.model.name}, batch {args.batch}, {args.rounds} interleaved rounds of {args.seconds:g} s")
    print(table(["variant", "p50 ms", "vs fp32 (same threads)"], rows))


if __name__ == "__main__":
    main()
