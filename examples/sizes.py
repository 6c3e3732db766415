"""Models at the sizes people ship, built from their configs with seeded weights (no hub): ResNet-50 at 224x224,
BERT-base at sequence 128, and a 2.4 GB MLP past protobuf's 2 GiB limit. Kept out of the test suites (minutes and
gigabytes each); ``python -m engineforge.sizes`` runs them through `dvc repro` in a clone and writes the table of
stage time and peak memory in docs/performance.md.
"""

from typing import Any

import torch
from torch import nn

from examples.zoo import TOKENS, Positional, factory_keys, pictures, token_samples

CODE = "examples/sizes.py"  # the factories' file: DVC watches it, and it is the weights (seeded) too
WIDTH = 12288  # the MLP's width: four WIDTH x WIDTH layers are 604 M parameters, 2.42 GB in float32


def resnet50() -> nn.Module:
    """transformers' ResNetConfig defaults (ResNet-50: bottleneck stages 256-512-1024-2048, depths 3-4-6-3),
    1000 classes, 25.6 M parameters."""
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    return Positional(ResNetForImageClassification(ResNetConfig()), ["pixel_values"])


def bert_base() -> nn.Module:
    """transformers' BertConfig defaults (BERT-base: 12 layers, hidden 768, 12 heads), 2 classes, 110 M."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return Positional(BertForSequenceClassification(BertConfig()), ["input_ids", "attention_mask"])


def wide_mlp() -> nn.Module:
    """Four WIDTH x WIDTH linear layers with GELU between them: 604 M parameters, 2.42 GB in float32."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for index in range(4):
        layers += [nn.Linear(WIDTH, WIDTH)] + ([nn.GELU()] if index < 3 else [])
    return nn.Sequential(*layers).eval()


def photos224(role: str) -> torch.utils.data.Dataset:
    """Photo-like 224x224 images (``examples.zoo.pictures``): 128 eval, 512 calibration samples."""
    count, seed = {"eval": (128, 0), "calibration": (512, 1)}[role]
    return torch.utils.data.TensorDataset(pictures(count, 224, 224, seed))


def tokens128(role: str) -> torch.utils.data.Dataset:
    """Token ids of a 30522-word vocabulary, 128 per sample, right-padded after 16 to 128 real tokens."""
    return token_samples(role, 128, (1000, 30522), 16)


def vectors(role: str) -> torch.utils.data.Dataset:
    """Seeded unit-scale inputs for the MLP: 32 eval and 64 calibration samples."""
    generator = torch.Generator().manual_seed({"eval": 0, "calibration": 1}[role])
    return torch.utils.data.TensorDataset(
        torch.randn({"eval": 32, "calibration": 64}[role], WIDTH, generator=generator)
    )


def _factory(name: str, inputs: list[dict[str, Any]], data: str, **keys: Any) -> dict[str, Any]:
    data_keys = {"data": {"factory": f"examples.sizes:{data}"}}
    return {"name": name} | factory_keys(CODE, name, inputs, code="examples", **data_keys, **keys)  # uses the zoo


def models() -> dict[str, dict[str, Any]]:
    """Name -> the keys of a ``model=custom`` option, for every deployment-size model."""
    image = [{"name": "pixel_values", "shape": ["batch", 3, 224, 224], "dtype": "float32"}]
    return {
        "resnet50": _factory("resnet50", image, "photos224", max_batch=32),
        "bert_base": _factory("bert_base", TOKENS, "tokens128", dims={"seq": 128}, max_batch=32),
        "wide_mlp": _factory("wide_mlp", [{"name": "x", "shape": ["batch", WIDTH], "dtype": "float32"}], "vectors",
                             max_batch=8),
    }  # fmt: skip
