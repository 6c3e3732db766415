"""Architectures nobody here wrote, to run through the pipeline as a user would: Hugging Face ``transformers``
models built from their configs (seeded weights, no hub), a two-output network, and the ONNX graphs that ship in
the ``onnx`` package (opset 9, batch fixed at 1).

Each entry of ``MODELS`` is a model option over ``model=custom`` (a factory here) or ``model=onnx`` (a file);
``python -m engineforge.coverage`` runs them all at every precision and writes docs/coverage.md. The factories
hand ``forward(*args)`` wrappers to the exporter, the way people wrap models that take keyword arguments.
"""

from pathlib import Path
from typing import Any

import torch
from torch import nn

CODE = "examples/zoo.py"  # the factories' file: DVC watches it, and it is the weights (seeded) too


class Positional(nn.Module):
    """``forward(*args)`` -> a transformers model called with keyword arguments, returning ``.logits``."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model.eval(), names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, args, strict=True))).logits


def _seeded() -> None:
    torch.manual_seed(0)


def bert() -> nn.Module:
    """A BERT-style text classifier: 2 layers, hidden 64, 4 heads, 4 classes; input_ids and attention_mask."""
    from transformers import BertConfig, BertForSequenceClassification

    _seeded()
    config = BertConfig(  # type: ignore[call-arg]  # num_labels reaches PretrainedConfig through **kwargs
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, num_labels=4,
    )  # fmt: skip
    return Positional(BertForSequenceClassification(config), ["input_ids", "attention_mask"])


def vit() -> nn.Module:
    """A ViT image classifier: 32x32 RGB, patches of 8, 2 layers, hidden 64, 10 classes."""
    from transformers import ViTConfig, ViTForImageClassification

    _seeded()
    config = ViTConfig(  # type: ignore[call-arg]  # num_labels reaches PretrainedConfig through **kwargs
        image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_labels=10,
    )  # fmt: skip
    return Positional(ViTForImageClassification(config), ["pixel_values"])


def convnet() -> nn.Module:
    """transformers' ResNet (bottleneck stages 16-32-64-128), 64x64 RGB, 10 classes."""
    from transformers import ResNetConfig, ResNetForImageClassification

    _seeded()
    config = ResNetConfig(  # type: ignore[call-arg]  # num_labels reaches PretrainedConfig through **kwargs
        embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_labels=10
    )
    return Positional(ResNetForImageClassification(config), ["pixel_values"])


def gpt2() -> nn.Module:
    """A decoder-only LM (GPT-2 layout, causal attention): 2 layers, hidden 64, vocab 1000; logits per token."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _seeded()
    config = GPT2Config(
        vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=4, use_cache=False, bos_token_id=1,
        eos_token_id=2,
    )  # fmt: skip
    return Positional(GPT2LMHeadModel(config), ["input_ids", "attention_mask"])


def llama() -> nn.Module:
    """A Llama-style decoder LM (RoPE, RMSNorm, SwiGLU, grouped-query attention): 2 layers, hidden 64, 4 query and 2
    key/value heads, vocab 1000; logits per token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _seeded()
    config = LlamaConfig(
        vocab_size=1000, hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, use_cache=False, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return Positional(LlamaForCausalLM(config), ["input_ids", "attention_mask"])


def t5() -> nn.Module:
    """A T5 encoder (relative position buckets, RMS-style T5LayerNorm) with a token-classification head: 2 layers,
    d_model 64, 4 heads of 16, 5 labels per token. torch 2.13's dynamo exporter cannot decompose its reshape
    after a transpose under symbolic shapes; the TorchScript exporter can."""
    from transformers import T5Config, T5ForTokenClassification

    _seeded()
    config = T5Config(  # type: ignore[call-arg]  # num_labels reaches PretrainedConfig through **kwargs
        vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, num_labels=5,
    )  # fmt: skip
    return Positional(T5ForTokenClassification(config), ["input_ids", "attention_mask"])


def swin() -> nn.Module:
    """A shifted-window vision transformer: 64x64 RGB, patches of 4, windows of 4, stages of 2+2 blocks, 10
    classes (dynamo cannot decompose its window reshapes under a symbolic batch; TorchScript can)."""
    from transformers import SwinConfig, SwinForImageClassification

    _seeded()
    config = SwinConfig(  # type: ignore[call-arg]  # num_labels reaches PretrainedConfig through **kwargs
        image_size=64, patch_size=4, embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=4, num_labels=10,
    )  # fmt: skip
    return Positional(SwinForImageClassification(config), ["pixel_values"])


def convnext() -> nn.Module:
    """A ConvNeXt CNN (7x7 depthwise convolutions, LayerNorm, GELU, layer scale): 64x64 RGB, 10 classes."""
    from transformers import ConvNextConfig, ConvNextForImageClassification

    _seeded()
    config = ConvNextConfig(  # type: ignore[call-arg]  # num_labels reaches PretrainedConfig through **kwargs
        hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1], num_labels=10
    )
    return Positional(ConvNextForImageClassification(config), ["pixel_values"])


class SegNet(nn.Module):
    """An encoder-decoder segmentation net with a skip connection (UNet-like): any even height and width, 4 classes
    per pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.low = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.head = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skip = self.down(image)
        return self.head(torch.cat([skip, self.up(self.low(skip))], dim=1))


def segnet() -> nn.Module:
    """``SegNet`` with seeded weights and BatchNorm statistics, in eval mode."""
    _seeded()
    net = SegNet()
    for name, buffer in net.named_buffers():  # trained-looking BatchNorm statistics instead of 0 and 1
        if name.endswith("running_mean"):
            buffer.uniform_(-0.2, 0.2)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    return net.eval()


class TwoHeads(nn.Module):
    """A small CNN with two outputs: class logits and an L2-normalised embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.classes, self.embed = nn.Linear(32, 10), nn.Linear(32, 16)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(image)
        return self.classes(features), nn.functional.normalize(self.embed(features), dim=1)


def two_heads() -> nn.Module:
    """``TwoHeads`` with seeded weights, in eval mode."""
    _seeded()
    return TwoHeads().eval()


def tokens(role: str) -> torch.utils.data.Dataset:
    """The data factory of the token models (``model.data.factory=examples.zoo:tokens``): a Dataset of
    ``(input_ids, attention_mask)`` samples, 32 tokens each, right-padded after 8 to 32 real tokens (a left-padded
    first token has no position to attend to, and PyTorch and ONNX Runtime fill such rows differently)."""
    return token_samples(role, 32, (3, 1000), 8)


def token_samples(role: str, length: int, ids: tuple[int, int], least: int) -> torch.utils.data.Dataset:
    """128 eval or 256 calibration samples of ``length`` token ids drawn from ``ids`` (low, high), each right-padded
    after ``least`` to ``length`` real tokens, with their attention mask; seeded by ``role``."""
    generator = torch.Generator().manual_seed({"eval": 0, "calibration": 1}[role])
    count = {"eval": 128, "calibration": 256}[role]
    drawn = torch.randint(*ids, (count, length), generator=generator)
    lengths = torch.randint(least, length + 1, (count, 1), generator=generator)
    mask = (torch.arange(length)[None, :] < lengths).long()
    return torch.utils.data.TensorDataset(drawn * mask, mask)


def pictures(count: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Photo-like RGB images, normalised as ImageNet models expect: smooth colour gradients with a few flat
    rectangles (edges and textureless regions, as real pictures have), values in [0, 1] before normalising."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    a, b, c = (torch.rand(count, 3, 1, 1, generator=generator) for _ in range(3))
    images = (a + b * x + c * y) / 2
    for _ in range(3):
        top, left = torch.randint(0, height // 2, (2,), generator=generator).tolist()
        h, w = torch.randint(height // 8, height // 2, (2,), generator=generator).tolist()
        images[:, :, top : top + h, left : left + w] = torch.rand(count, 3, 1, 1, generator=generator)
    images = (images + 0.03 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (images - mean[:, None, None]) / std[:, None, None]


def photos(role: str) -> torch.utils.data.Dataset:
    """The data factory of the 64x64 image models: photo-like images, 128 eval and 512 calibration samples."""
    count, seed = {"eval": (128, 0), "calibration": (512, 1)}[role]
    return torch.utils.data.TensorDataset(pictures(count, 64, 64, seed))


def scenes(role: str) -> torch.utils.data.Dataset:
    """The data factory of the segmentation net: 64 (high) x 48 photo-like images, 128 eval samples and, as a
    user's small dataset has, only 128 calibration samples (fewer than int8's default 512)."""
    return torch.utils.data.TensorDataset(pictures(128, 64, 48, {"eval": 0, "calibration": 1}[role]))


def factory_keys(
    source: str, name: str, inputs: list[dict[str, Any]], code: str | None = None, **keys: Any
) -> dict[str, Any]:
    """The ``model=custom`` keys of factory ``name`` in the module file ``source`` (its seeded weights are the code).

    Args:
        source: the module's file (``examples/zoo.py``).
        name: the factory function.
        inputs: ``model.inputs``.
        code: what DVC watches (default ``source``; ``examples``, the folder, for a module that uses another's
            factories or data).
        keys: any other model keys (``dims``, ``max_batch``, ``data``).

    Returns:
        dict: the keys.
    """
    module = source.removesuffix(".py").replace("/", ".")
    watched = code or source
    return {"factory": f"{module}:{name}", "code": watched, "weights": watched, "inputs": inputs, **keys}


def _factory(name: str, inputs: list[dict[str, Any]], **keys: Any) -> dict[str, Any]:
    return factory_keys(CODE, name, inputs, **keys)


TOKEN_DATA = "examples.zoo:tokens"
TOKENS = [
    {"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64"},
    {"name": "attention_mask", "shape": ["batch", "seq"], "dtype": "int64"},
]


def image(size: int) -> list[dict[str, Any]]:
    """One float32 RGB image input of ``size`` x ``size``, dynamic batch."""
    return [{"name": "pixel_values", "shape": ["batch", 3, size, size], "dtype": "float32"}]


ONNX_ZOO = ("resnet50", "squeezenet", "shufflenet", "densenet121", "inception_v2", "bvlc_alexnet")


def onnx_zoo_path(name: str) -> str:
    """The path of ``light_<name>.onnx`` inside the installed ``onnx`` package."""
    import onnx

    return str(Path(onnx.__file__).parent / "backend/test/data/light" / f"light_{name}.onnx")


def models() -> dict[str, tuple[str, dict[str, Any]]]:
    """Name -> (model option, its keys) for every model of the corpus; ``outputs`` stays null (read from the graph)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {
        "bert": ("custom", _factory("bert", TOKENS, dims={"seq": 32}, max_batch=32, data={"factory": TOKEN_DATA})),
        "vit": ("custom", _factory("vit", image(32), max_batch=32)),
        "convnet": ("custom", _factory("convnet", image(64), max_batch=32)),
        "gpt2": ("custom", _factory("gpt2", TOKENS, dims={"seq": 32}, max_batch=32, data={"factory": TOKEN_DATA})),
        "llama": ("custom", _factory("llama", TOKENS, dims={"seq": 32}, max_batch=32, data={"factory": TOKEN_DATA})),
        "t5": ("custom", _factory("t5", TOKENS, dims={"seq": 32}, max_batch=32, data={"factory": TOKEN_DATA})),
        "swin": ("custom", _factory("swin", image(64), max_batch=32)),
        "convnext": ("custom", _factory("convnext", image(64), max_batch=32, data={"factory": "examples.zoo:photos"})),
        "segnet": ("custom", _factory("segnet", [{"name": "image", "shape": ["batch", 3, "height", "width"],
                                                  "dtype": "float32"}], dims={"height": 64, "width": 48},
                                      max_batch=32, data={"factory": "examples.zoo:scenes"})),
        "two_heads": ("custom", _factory("two_heads", [{"name": "image", "shape": ["batch", 3, 32, 32],
                                                        "dtype": "float32"}], max_batch=32)),
    }  # fmt: skip
    for name in ONNX_ZOO:
        found[name] = ("onnx", {"path": onnx_zoo_path(name), "max_batch": 1})
    return found
