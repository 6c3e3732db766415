"""digits: a small CNN for scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes)."""

import numpy as np
import torch
from torch import nn

SEED = 0
TEST_FRACTION = 0.2  # 360 held-out test images: the eval split; the other 1437 are the train/calibration split


def build() -> nn.Module:
    """Return the untrained architecture: three conv blocks and a linear classifier over 10 digits."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 2 * 2, 10),
    )


def dataset(split: str) -> dict[str, np.ndarray]:
    """Return ``{"image": N x 1 x 8 x 8 float32 in [0, 1], "labels": N int64}`` for ``train`` or ``test``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SEED, stratify=labels
    )
    if split == "train":
        return {"image": x_train, "labels": y_train}
    if split == "test":
        return {"image": x_test, "labels": y_test}
    raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")


def train(epochs: int = 40) -> tuple[nn.Module, float]:
    """Train from a fixed seed on the train split; return the model and its test accuracy."""
    data = dataset("train")
    x, y = torch.from_numpy(data["image"]), torch.from_numpy(data["labels"])
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
        scheduler.step()
    return model.eval(), accuracy(model)


def accuracy(model: nn.Module) -> float:
    """Top-1 accuracy of ``model`` on the test split."""
    return top1(model, dataset("test"))


def top1(model: nn.Module, data: dict[str, np.ndarray], chunks: int = 1) -> float:
    """Top-1 of ``model`` on ``data`` (``image``, ``labels``), run in ``chunks`` batches to bound memory."""
    with torch.inference_mode():
        logits = torch.cat([model.eval()(torch.from_numpy(b)) for b in np.array_split(data["image"], chunks)])
    return float((logits.argmax(1).numpy() == data["labels"]).mean())
