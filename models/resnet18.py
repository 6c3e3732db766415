"""resnet18: torchvision's ResNet-18 layout adapted to the 8x8 digits upscaled to 1 x 48 x 48, trained.

The compute-bound built-in model: four stages of two BasicBlocks (widths 32-64-128-256, a 3x3 stride-1 stem and no
max-pool, as small-image ResNets have), 0.32 G multiply-accumulates per image, trained on the digits train split
(the same 1437/360 split as ``models/digits.py``) to ~99 % test top-1. Weights: ``models/weights/resnet18.pt``
(11 MB), reproduced by ``python -m engineforge.train resnet18``. Inputs are the 8x8 images upscaled bilinearly and
centred (``(x - 0.5) / 0.5``); labels are the digits.
"""

from typing import cast

import numpy as np
import torch
from torch import nn

from models import digits

SEED = 0
SIZE = 48  # 8 x 8 digits upscaled 6x: enough pixels that compute, not per-call overhead, dominates
WIDTHS = (32, 64, 128, 256)
CLASSES = 10


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """Stem, four stages of two BasicBlocks (stride 2 from the second), global average pooling, one linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(WIDTHS[0]), nn.ReLU())
        blocks, cin = [], WIDTHS[0]
        for i, width in enumerate(WIDTHS):
            blocks += [BasicBlock(cin, width, 1 if i == 0 else 2), BasicBlock(width, width, 1)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(WIDTHS[-1], CLASSES)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(image)), 1)
        return self.fc(torch.flatten(features, 1))


def build() -> nn.Module:
    """Return the untrained network (weights come from ``models/weights/resnet18.pt``)."""
    torch.manual_seed(SEED)
    return ResNet18()


def dataset(split: str) -> dict[str, np.ndarray]:
    """Return ``{"image": N x 1 x 48 x 48 float32, "labels": N int64}`` for ``train`` or ``test``."""
    data = digits.dataset(split)
    small = torch.from_numpy(data["image"])
    large = nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return {"image": ((large - 0.5) / 0.5).numpy(), "labels": data["labels"]}


def train(epochs: int = 4) -> tuple[nn.Module, float]:
    """Train from a fixed seed on the train split (one-pixel random shifts); return the model and test accuracy."""
    data = dataset("train")
    x, y = torch.from_numpy(data["image"]), torch.from_numpy(data["labels"])
    generator = torch.Generator().manual_seed(SEED)
    model = build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    steps = epochs * -(-len(x) // 64)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=generator).split(64):
            shift = torch.randint(-3, 4, (2,), generator=generator).tolist()
            batch = torch.roll(x[idx], shifts=shift, dims=(2, 3))
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(batch), y[idx]).backward()
            optimizer.step()
            scheduler.step()
    return model.eval(), accuracy(model)


def accuracy(model: nn.Module) -> float:
    """Top-1 accuracy of ``model`` on the test split."""
    return digits.top1(model, dataset("test"), chunks=6)


def multiply_accumulates() -> int:
    """Multiply-accumulates of one forward pass of one image (convolutions and the linear layer)."""
    total, net = 0, ResNet18()

    def count(module: nn.Module, _: tuple, out: torch.Tensor) -> None:
        nonlocal total
        weight = cast(torch.Tensor, module.weight)  # the hook is on Conv2d and Linear only
        total += int(weight.numel() * (out.shape[2] * out.shape[3] if out.dim() == 4 else 1))

    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.register_forward_hook(count)
    with torch.inference_mode():
        net.eval()(torch.zeros(1, 1, SIZE, SIZE))
    return total
