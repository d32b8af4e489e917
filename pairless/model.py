"""The 4M-style encoder-decoder.

(Skeleton: the helper that owns this file implements FourM.)
"""

from __future__ import annotations

from pydantic import Field

from pairless.config import Config

PRESETS: dict[str, dict] = {
    "tiny": dict(dim=256, encoder_layers=4, decoder_layers=4, heads=4),
    "small": dict(dim=384, encoder_layers=6, decoder_layers=6, heads=6),
    "anchor": dict(dim=384, encoder_layers=6, decoder_layers=6, heads=6),  # ml-4m fm_tiny_6e_6d
    "base": dict(dim=768, encoder_layers=12, decoder_layers=12, heads=12),  # 4M-B
    "large": dict(dim=1024, encoder_layers=24, decoder_layers=24, heads=16),  # 4M-L
}


class ModelConfig(Config):
    preset: str = "tiny"
    dim: int = Field(256, ge=8)
    encoder_layers: int = Field(4, ge=1)
    decoder_layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    @classmethod
    def from_preset(cls, name: str, **overrides) -> ModelConfig:
        if name not in PRESETS:
            raise ValueError(f"model.preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
        return cls(preset=name, **{**PRESETS[name], **overrides})
