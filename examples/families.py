"""More architecture families for the corpus, one per class the pipeline must hold on (speech, state-space,
recurrent, two-tower, a CNN whose pooling OpenVINO refuses), built from configs with seeded weights (no hub), small
enough for a coverage run: ``engineforge.coverage`` runs them beside ``examples.zoo``'s.
"""

from typing import Any, cast

import torch
from torch import nn

from examples.zoo import TOKEN_DATA, TOKENS, Positional, factory_keys, image

CODE = "examples/families.py"  # the factories' file: DVC watches it, and it is the weights (seeded) too


def wav2vec2() -> nn.Module:
    """A speech classifier (wav2vec 2.0 layout: a convolutional feature encoder over raw audio, then a
    transformer): 2 layers, hidden 64, 4 classes; input 1 s of 16 kHz audio."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    config = Wav2Vec2Config(  # type: ignore[call-arg]  # num_labels reaches PretrainedConfig through **kwargs
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
        num_labels=4, do_stable_layer_norm=True, feat_extract_norm="layer", apply_spec_augment=False,
    )  # fmt: skip
    return Positional(Wav2Vec2ForSequenceClassification(config), ["input_values"])


def mamba() -> nn.Module:
    """A state-space language model (Mamba: selective scan): 2 layers, hidden 64, vocab 1000; logits per token."""
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    config = MambaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, state_size=8, use_cache=False)
    return Positional(MambaForCausalLM(config), ["input_ids"])


class Tagger(nn.Module):
    """A bidirectional LSTM tagger: embedding 1000 x 32, one bi-LSTM layer of 32 per direction, 9 tags per token."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.lstm = nn.Embedding(1000, 32), nn.LSTM(32, 32, batch_first=True, bidirectional=True)
        self.tags = nn.Linear(64, 9)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.tags(self.lstm(self.embed(input_ids))[0])


def tagger() -> nn.Module:
    """``Tagger`` with seeded weights, in eval mode."""
    torch.manual_seed(0)
    return Tagger().eval()


class TwoTower(nn.Module):
    """CLIP: a text tower and an image tower; each (text, image) pair's scaled cosine similarity, ``[batch, 1]`` (a
    retrieval re-ranker's score; ``logits_per_image`` would be ``[batch, batch]``, which no batch can be cut from)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        scale = self.model.get_parameter("logit_scale").exp()
        return (out.text_embeds * out.image_embeds).sum(-1, keepdim=True) * scale


def clip() -> nn.Module:
    """A two-tower text+image model (CLIP layout): towers of 2 layers, hidden 64, 32x32 images, vocab 1000."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    text = {
        "vocab_size": 1000,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
    }
    vision = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 8,
    }
    return TwoTower(CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)))  # fmt: skip


def efficientnet() -> nn.Module:
    """transformers' EfficientNet (its head pools with a kernel of 320 under ceil mode on a 2x2 map: OpenVINO's
    ONNX frontend refuses it, ONNX Runtime runs it), width and depth 0.25, 64x64 images, 10 classes."""
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    torch.manual_seed(0)
    config = EfficientNetConfig(  # type: ignore[call-arg]  # num_labels reaches PretrainedConfig through **kwargs
        image_size=64, width_coefficient=0.25, depth_coefficient=0.25, num_labels=10, hidden_dim=320,
    )  # fmt: skip
    return Positional(EfficientNetForImageClassification(config), ["pixel_values"])


def audio(role: str) -> torch.utils.data.Dataset:
    """1 s of 16 kHz audio per sample: a few seeded tones with noise, 64 eval and 128 calibration samples."""
    generator = torch.Generator().manual_seed({"eval": 0, "calibration": 1}[role])
    count = {"eval": 64, "calibration": 128}[role]
    t = torch.arange(16000) / 16000
    pitch = 100 + 800 * torch.rand(count, 3, 1, generator=generator)
    wave = torch.sin(2 * torch.pi * pitch * t).sum(1) / 3 + 0.05 * torch.randn(count, 16000, generator=generator)
    return torch.utils.data.TensorDataset(wave)


def pairs(role: str) -> torch.utils.data.Dataset:
    """Token ids with their mask and a 32x32 photo-like image per sample: the two-tower model's data."""
    from examples.zoo import pictures, tokens

    ids, mask = cast(torch.utils.data.TensorDataset, tokens(role)).tensors
    return torch.utils.data.TensorDataset(ids, mask, pictures(len(ids), 32, 32, {"eval": 0, "calibration": 1}[role]))


def _factory(name: str, inputs: list[dict[str, Any]], **keys: Any) -> dict[str, Any]:
    return factory_keys(CODE, name, inputs, code="examples", **keys)  # its data factories are the zoo's


def models() -> dict[str, tuple[str, dict[str, Any]]]:
    """Name -> (model option, its keys), as ``examples.zoo.models``."""
    ids = [TOKENS[0]]
    wave = [{"name": "input_values", "shape": ["batch", 16000], "dtype": "float32"}]
    return {
        "wav2vec2": ("custom", _factory("wav2vec2", wave, max_batch=16, data={"factory": "examples.families:audio"})),
        "mamba": ("custom", _factory("mamba", ids, dims={"seq": 32}, max_batch=32, data={"factory": TOKEN_DATA})),
        "tagger": ("custom", _factory("tagger", ids, dims={"seq": 32}, max_batch=32, data={"factory": TOKEN_DATA})),
        "clip": ("custom", _factory("clip", [*TOKENS, *image(32)], dims={"seq": 32}, max_batch=32,
                                    data={"factory": "examples.families:pairs"})),
        "efficientnet": ("custom", _factory("efficientnet", image(64), max_batch=32,
                                            data={"factory": "examples.zoo:photos"})),
    }  # fmt: skip
