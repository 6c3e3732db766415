"""resnet18: a ResNet-18-shaped CNN at 3 x 224 x 224 with seeded weights, for measuring where compute dominates.

No trained weights: ``build()`` initialises every layer from a fixed seed and then sets each BatchNorm's running
statistics from a forward pass over seeded synthetic images, so every layer sees normalised activations and the
logits differ from image to image (a seeded net with default BatchNorm statistics sends every input to one class,
which would make argmax agreement meaningless). The recipe file therefore *is* the weights: conf/model/resnet18.yaml
names it as ``weights``. The data are smooth random colour fields (low-frequency noise upsampled to 224 x 224 plus
a little pixel noise), normalised like ImageNet inputs; there are no labels, so the task metric is argmax agreement
with the FP32 reference.
"""

import numpy as np
import torch
from torch import nn

SEED = 0
CLASSES = 10
SIZE = 224
SPLIT_SIZES = {"train": 512, "test": 256}  # train: calibration; test: eval
SPLIT_SEEDS = {"train": 1, "test": 2, "bn": 3}
BN_IMAGES = 32
GRIDS = (
    2,
    4,
    7,
    14,
    28,
    56,
)  # coarse grid sizes: from large blobs to fine texture  # synthetic images whose statistics become the BatchNorm running statistics


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
    """torchvision's ResNet-18 layout: stem, four stages of two BasicBlocks, global pooling, one linear layer."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        widths, blocks, cin = (64, 128, 256, 512), [], 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks += [BasicBlock(cin, width, stride), BasicBlock(width, width, 1)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, classes)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The 512 pooled features the classifier reads."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(image)), 1), 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(image))


def build() -> nn.Module:
    """Return the network with seeded weights and BatchNorm statistics of seeded synthetic images (eval mode)."""
    torch.manual_seed(SEED)
    net = ResNet18()
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the statistics pass
    for block in net.blocks:  # damped residual branches (like torchvision's zero_init_residual, but not zero)
        nn.init.uniform_(block.bn2.weight, 0.1, 0.3)
    sample = torch.from_numpy(images(BN_IMAGES, SPLIT_SEEDS["bn"]))
    net.train()
    with torch.no_grad():
        net(sample)
        net.eval()
        features = net.features(sample)  # standardise the classifier's inputs, as BatchNorm does for the convs
        mean, std = features.mean(0), features.std(0) + 1e-3
        weight = torch.randn(net.fc.weight.shape) / (std * features.shape[1] ** 0.5)
        net.fc.weight.copy_(weight)
        net.fc.bias.copy_(-weight @ mean)
    return net


def images(count: int, seed: int) -> np.ndarray:
    """``count`` random colour fields, N x 3 x 224 x 224 float32: each image has its own spatial scale, colour
    balance, contrast and noise level, so images differ as much in their deep features as natural photos do."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, SIZE, SIZE), dtype=np.float32)
    for i in range(count):
        grid = int(rng.choice(GRIDS))
        coarse = torch.from_numpy(rng.standard_normal((1, 3, grid, grid), dtype=np.float32))
        field = nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=False)[0].numpy()
        gain = rng.uniform(0.2, 1.5, (3, 1, 1)).astype(np.float32)
        offset = rng.uniform(-1.0, 1.0, (3, 1, 1)).astype(np.float32)
        noise = rng.uniform(0.0, 0.5) * rng.standard_normal((3, SIZE, SIZE), dtype=np.float32)
        out[i] = gain * field + offset + noise
    return out


def dataset(split: str) -> dict[str, np.ndarray]:
    """Return ``{"image": N x 3 x 224 x 224 float32}`` for ``train`` (calibration) or ``test`` (eval); no labels."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    return {"image": images(SPLIT_SIZES[split], SPLIT_SEEDS[split])}
