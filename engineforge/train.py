"""Reproduce the committed weights: ``python -m engineforge.train [digits|textenc|resnet18 ...]`` (seeded, one thread).

Writes ``models/weights/<name>.pt`` (a state_dict) and ``<name>.json``, the record of that training: test top-1,
the weights' sha256, the torch version and the CPU it ran on. Training is seeded and single-threaded, so it is bit
for bit on the same kind of CPU (``stages.core.device.cpu_kind``) and toolchain; on another kind PyTorch's kernels
sum in another order and the weights differ in their last bits, while the accuracy stays above ``FLOOR``.
"""

import argparse
import importlib
from pathlib import Path

import torch

from stages.core.artifacts import sha256, to_json, write_text
from stages.core.device import cpu_fingerprint

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights"
MODELS = ("digits", "textenc", "resnet18")
# Test top-1 that retraining must reach on any CPU (textenc: 0.5, twice chance on its four topics).
FLOOR = {"digits": 0.97, "textenc": 0.5, "resnet18": 0.97}


def train(name: str, out_dir: Path = WEIGHTS) -> float:
    """Train model ``name`` deterministically, save its state_dict to ``out_dir/<name>.pt`` and the record of the
    run to ``out_dir/<name>.json``.

    Args:
        name: one of ``MODELS``.
        out_dir: the folder to write into.

    Returns:
        The test top-1 of the trained model.
    """
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: one float reduction order for a given kind of CPU
    try:
        model, acc = importlib.import_module(f"models.{name}").train()
    finally:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / f"{name}.pt")
    cpu = {k: v for k, v in cpu_fingerprint().items() if k != "cores"}
    record = {"sha256": sha256(out_dir / f"{name}.pt"), "top1": acc, "torch": torch.__version__, "trained_on": cpu}
    write_text(out_dir / f"{name}.json", to_json(record))
    return acc


def main() -> None:
    """Train the models named on the command line (default: every one of ``MODELS``) and print each's accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"models to train (default: {' '.join(MODELS)})")
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    for name in args.names or MODELS:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}: choose from {', '.join(MODELS)}")
        print(f"{name}: test accuracy {train(name, args.out_dir):.4f}")


if __name__ == "__main__":
    main()
