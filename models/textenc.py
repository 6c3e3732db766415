"""textenc: a small transformer-encoder text classifier over synthetic token data (4 topics).

Two inputs (``input_ids`` int64, ``attention_mask`` int64), dynamic batch and sequence axes. Each synthetic
sequence has a topic; about a third of its tokens come from that topic's band of the vocabulary, the rest are
uniform noise, and a random tail is padding. The label is the topic.
"""

import math

import numpy as np
import torch
from torch import nn

SEED = 0
VOCAB = 512
MAX_LEN = 64  # positional table size: the longest sequence the model accepts
TOPICS = 4
DIM, HEADS, FF, LAYERS = 64, 4, 128, 2
SPLIT_SIZES = {"train": 4096, "test": 512}


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + MLP block with an additive padding mask."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, FF), nn.GELU(), nn.Linear(FF, DIM))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, s, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, s, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(DIM // HEADS) + bias
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, s, DIM)
        x = x + self.proj(attn)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """Token + position embeddings, two encoder layers, masked mean pooling, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, DIM)
        self.positions = nn.Parameter(torch.zeros(MAX_LEN, DIM))
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, TOPICS)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        x = self.tokens(input_ids) + self.positions[: input_ids.shape[1]]
        bias = ((1.0 - mask) * -1e4)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        pooled = (self.norm(x) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return self.head(pooled)


def build() -> nn.Module:
    """Return the untrained architecture."""
    return TextEncoder()


def dataset(split: str, seq: int = 32) -> dict[str, np.ndarray]:
    """Return ``{"input_ids", "attention_mask": N x seq int64, "labels": N int64}`` for ``train`` or ``test``."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    rng = np.random.default_rng([SEED, list(SPLIT_SIZES).index(split)])
    n = SPLIT_SIZES[split]
    labels = rng.integers(0, TOPICS, n)
    band = (VOCAB - 1) // TOPICS
    topical = 1 + labels[:, None] * band + rng.integers(0, band, (n, seq))
    noise = rng.integers(1, VOCAB, (n, seq))
    ids = np.where(rng.random((n, seq)) < 0.35, topical, noise)
    lengths = rng.integers(max(2, seq // 4), seq + 1, n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": (ids * mask).astype(np.int64), "attention_mask": mask, "labels": labels.astype(np.int64)}


def train(epochs: int = 6) -> tuple[nn.Module, float]:
    """Train from a fixed seed on the train split; return the model and its test accuracy."""
    data = {k: torch.from_numpy(v) for k, v in dataset("train").items()}
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    model = build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(data["labels"]), generator=generator).split(64):
            optimizer.zero_grad()
            logits = model(data["input_ids"][idx], data["attention_mask"][idx])
            nn.functional.cross_entropy(logits, data["labels"][idx]).backward()
            optimizer.step()
    return model.eval(), accuracy(model)


def accuracy(model: nn.Module) -> float:
    """Top-1 accuracy of ``model`` on the test split."""
    test = {k: torch.from_numpy(v) for k, v in dataset("test").items()}
    with torch.inference_mode():
        logits = model.eval()(test["input_ids"], test["attention_mask"])
    return float((logits.argmax(1) == test["labels"]).float().mean())
