"""A user's own model, for README "Bring your own model": an MLP on the 8x8 digits, flattened to 64 features.

``build`` is the factory (``model.factory=examples.mlp:build``). Running the module trains it briefly and writes
what a user brings: the weights, eval and calibration data as ``.npz`` (arrays named as the inputs, plus
``labels``), and the same model as a plain ONNX file for ``model=onnx``::

    python -m examples.mlp        # -> examples/data/mlp.pt, mlp_eval.npz, mlp_calibration.npz, mlp.onnx
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUT = Path("examples/data")


def build() -> nn.Module:
    """The factory: an untrained 64 -> 64 -> 10 MLP."""
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def digits() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train, test) as dicts of ``x`` (N x 64 float32 in [0, 1]) and ``labels``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x, y = (data.data / 16.0).astype(np.float32), data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return {"x": x_train, "labels": y_train}, {"x": x_test, "labels": y_test}


def main(out: Path = OUT) -> None:
    """Train for a few seconds and write the weights, the data and an ONNX copy into ``out``."""
    torch.manual_seed(0)
    train, test = digits()
    net = build()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.from_numpy(train["x"]), torch.from_numpy(train["labels"])
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    out.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter's notice
    torch.save(net.state_dict(), out / "mlp.pt")
    np.savez(out / "mlp_eval.npz", allow_pickle=False, **test)
    np.savez(out / "mlp_calibration.npz", allow_pickle=False, **train)
    torch.onnx.export(
        net.eval(),
        (torch.from_numpy(test["x"][:2]),),
        str(out / "mlp.onnx"),
        input_names=["x"],
        output_names=["scores"],
        dynamic_axes={"x": {0: "n"}, "scores": {0: "n"}},
        dynamo=False,  # the legacy exporter: a file as another tool would write it
    )
    accuracy = (net(torch.from_numpy(test["x"])).argmax(1).numpy() == test["labels"]).mean()
    print(
        f"examples.mlp: test accuracy {accuracy:.3f}; wrote {out}/mlp.pt, mlp_eval.npz, mlp_calibration.npz, mlp.onnx"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
