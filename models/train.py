"""Reproduce the committed weights: ``python -m models.train [digits|textenc ...]`` (seeded, seconds on CPU).

Writes ``models/weights/<name>.pt`` (a state_dict) and prints the test accuracy.
"""

import argparse
import importlib
from pathlib import Path

import torch

WEIGHTS = Path(__file__).parent / "weights"
MODELS = ("digits", "textenc")


def train(name: str, out_dir: Path = WEIGHTS) -> float:
    """Train model ``name`` deterministically, save its state_dict to ``out_dir/<name>.pt``, return accuracy."""
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float reduction order on every machine
    try:
        model, acc = importlib.import_module(f"models.{name}").train()
    finally:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / f"{name}.pt")
    return acc


def main() -> None:
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
