"""Vector tokenizer: a global feature vector <-> a fixed number of FSQ tokens.

``(N, D)`` float32 -> standardise with training statistics -> MLP ->
``num_tokens`` codes of ``len(levels)`` dims -> FSQ -> MLP -> ``(N, D)``.
Loss: MSE on the standardised vector plus (1 - cosine) on the natural one,
since cosine similarity is what downstream users compare.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from vector_quantize_pytorch import FSQ

from pairless.batch import TokenSpec
from pairless.config import Config
from pairless.tokenizers.base import NeuralTokenizer


class VectorConfig(Config):
    """Architecture and input statistics of one vector tokenizer."""

    modality: str
    dim: int = Field(ge=1)
    num_tokens: int = Field(16, ge=1)
    hidden: int = Field(512, ge=8)
    levels: list[int] = [8, 5, 5, 5]
    mean: list[float] = []
    std: list[float] = []


def fit_statistics(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-dimension mean and std of training vectors ``[N, D]``."""
    data = np.asarray(values, dtype=np.float64)
    return [float(v) for v in data.mean(axis=0)], [float(v) for v in np.maximum(data.std(axis=0), 1e-6)]


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, outputs))


class VectorTokenizer(NeuralTokenizer):
    """``(N, dim)`` float32 vectors <-> ``num_tokens`` FSQ tokens each."""

    kind = "vector"
    config_class = VectorConfig

    def __init__(self, config: VectorConfig):
        super().__init__(config)
        code_dim = len(config.levels)
        self.encoder = _mlp(config.dim, config.hidden, config.num_tokens * code_dim)
        self.decoder = _mlp(config.num_tokens * code_dim, config.hidden, config.dim)
        self.quantizer = FSQ(config.levels)
        mean = config.mean or [0.0] * config.dim
        std = config.std or [1.0] * config.dim
        if len(mean) != config.dim or len(std) != config.dim:
            raise ValueError(f"{config.modality}: mean/std must have {config.dim} entries, "
                             f"got {len(mean)} and {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    @property
    def spec(self) -> TokenSpec:
        return TokenSpec(name=self.modality, kind="vector", num_tokens=self.config.num_tokens,
                         vocab_size=self.quantizer.codebook_size)

    def natural_shape(self) -> tuple[int, ...]:
        return (self.config.dim,)

    def natural_dtype(self) -> str:
        return "float32"

    def prepare(self, values: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        natural = torch.from_numpy(np.array(values, dtype=np.float32))  # a copy: values may be read-only
        return (natural - self.mean) / self.std, natural

    def quantize(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encoder(inputs).float().reshape(len(inputs), self.config.num_tokens, -1)
        return self.quantizer(latent)  # (N, T, d), (N, T)

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.quantizer.indices_to_codes(indices)

    def reconstruct_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(codes.reshape(len(codes), -1))  # standardised (N, D)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        outputs = outputs.float()
        standardised_target = (targets - self.mean) / self.std
        natural = outputs * self.std + self.mean
        cosine = F.cosine_similarity(natural, targets, dim=-1, eps=1e-6)
        return F.mse_loss(outputs, standardised_target) + (1.0 - cosine).mean()

    def to_natural(self, outputs: torch.Tensor) -> np.ndarray:
        return (outputs.float() * self.std + self.mean).numpy().astype(np.float32)
