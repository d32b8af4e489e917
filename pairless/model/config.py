"""The model's typed config (:class:`ModelConfig`) and its size presets, apart from the modules that build
the model (transformer, blocks), which both read it."""

from __future__ import annotations

import json

from pydantic import Field, model_validator

from pairless.config import Config
from pairless.model.architecture import OPTION_NAMES, Architecture, MlpKind, Style, resolve
from pairless.model.attention import AttentionKind

PRESETS: dict[str, dict] = {
    "tiny": dict(dim=192, encoder_layers=4, decoder_layers=4, heads=3),  # ~4-5M parameters: CPU tests, demos
    "small": dict(dim=256, encoder_layers=6, decoder_layers=6, heads=4),  # CPU experiments
    "anchor": dict(dim=384, encoder_layers=6, decoder_layers=6, heads=6),  # ml-4m fm_tiny_6e_6d
    "base": dict(dim=768, encoder_layers=12, decoder_layers=12, heads=12),  # 4M-B
    "large": dict(dim=1024, encoder_layers=24, decoder_layers=24, heads=16),  # 4M-L
    "xl": dict(dim=2048, encoder_layers=24, decoder_layers=24, heads=32),  # 4M-XL: train it sharded
}

# what a ModelConfig saved before the ml-4m options existed (2026-12-07) meant by leaving them out
SAVED_BEFORE_OPTIONS: dict[str, object] = {name: None for name in OPTION_NAMES}


class ModelConfig(Config):
    """Transformer shape; defaults are the ``tiny`` preset. A ``preset`` fills the fields not given."""

    preset: str = "tiny"
    dim: int = Field(192, ge=8)
    encoder_layers: int = Field(4, ge=1)
    decoder_layers: int = Field(4, ge=1)
    heads: int = Field(3, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # "explicit" (matmul + softmax), "sdpa", or "auto" (sdpa on a GPU, explicit on a CPU; pairless train
    # stores the kind it resolved for its device, so a CPU run's config still reads "explicit")
    attention: AttentionKind = "auto"
    bias: bool = False  # biases in linear layers and layer norms
    # Initial scale of the token embeddings and of the fixed sin-cos positions (whose entries have amplitude
    # ``position_scale``). With 0.02 against 1.0 (the default until 2026-12), a token's content was ~2% of
    # its input vector and runs of a few hundred steps never recovered: the model learned the average scene
    # and ignored its input (benchmarks/learning.py, docs/learning.md: rgb -> depth CE ratio 0.75 -> 0.66).
    token_init_std: float = Field(1.0, gt=0)
    position_scale: float = Field(1.0, ge=0)
    # initial std of the learned modality embedding (4M's 0.02): 0.3 and 1.0 learned worse, the output heads
    # and the modality-local decoder attention tell the modalities apart already (docs/learning.md)
    modality_init_std: float = Field(0.02, gt=0)
    # Longest sin-cos period / 2 pi (10000 in 4M): on an 8x8 grid most of those frequencies barely change
    # across the grid, so only a few dimensions tell positions apart.
    position_temperature: float = Field(10000.0, gt=1)
    # ml-4m compatibility (pairless.model.architecture, docs/ml4m.md): ``style`` picks every option below
    # that is None; "ml4m" computes what ml-4m's FM computes (4M-7 flavour; 4M-21 adds
    # separate_decoder_modalities=true). None everywhere with style "pairless" is the model before
    # 2026-12-07. Since then two of ml-4m's choices are the defaults: the SwiGLU MLP and the projected decoder
    # context learned about twice as much per token and per CPU-minute (docs/learning.md); a config saved
    # before names neither and loads as it was trained (:meth:`from_saved`).
    style: Style = "pairless"
    norm_eps: float | None = Field(None, gt=0)  # LayerNorm epsilon (pairless 1e-5, ml-4m 1e-6)
    mlp: MlpKind | None = "swiglu"  # "gelu" or "swiglu" (ml-4m's gated SiLU MLP, hidden 2/3*mlp_ratio*dim)
    head_bias: bool | None = None  # output-head biases (pairless: as ``bias``; ml-4m: none)
    null_token: bool | None = None  # a learned token always first in the encoder input
    finite_mask: bool | None = None  # masked scores at the lowest finite value instead of -inf
    context_projection: bool | None = True  # decoder context = Linear(encoder output) + input embeddings
    decoder_token_table: bool | None = None  # sequence targets' queries from a decoder-side token table
    separate_decoder_modalities: bool | None = None  # decoder modality embeddings of their own (4M-21)
    stored_positions: bool | None = None  # encoder/decoder position tables saved with the weights
    sequence_rank_positions: bool | None = None  # input sequence positions = rank among visible tokens

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data):
        """The named preset gives every shape field the data leaves out: ``{"preset": "small"}`` is small."""
        if isinstance(data, dict) and "preset" in data:
            if data["preset"] not in PRESETS:
                raise ValueError(f"model.preset: unknown preset {data['preset']!r}; allowed: "
                                 f"{', '.join(PRESETS)}")
            data = {**PRESETS[data["preset"]], **data}
        return data

    @model_validator(mode="after")
    def _check_shape(self) -> ModelConfig:
        if self.dim % self.heads:
            raise ValueError(f"model.heads: dim {self.dim} is not divisible by heads {self.heads}")
        if self.dim % 4:
            raise ValueError(f"model.dim: must be a multiple of 4 for 2-D sin-cos positions, got {self.dim}")
        return self

    @classmethod
    def from_saved(cls, data: dict | str) -> ModelConfig:
        """A ModelConfig as a run or model file stored it. Every dump since the ml-4m options exist names
        each of them; one from before names none and was trained with the style's (pairless's) choices,
        which the defaults of 2026-12-07 no longer are: its missing options are filled with None."""
        data = json.loads(data) if isinstance(data, str) else dict(data)
        return cls.model_validate({**SAVED_BEFORE_OPTIONS, **data})

    def architecture(self) -> Architecture:
        """Every ml-4m compatibility option resolved through ``style``."""
        return resolve(self)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> ModelConfig:
        if name not in PRESETS:
            raise ValueError(f"model.preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
        return cls(preset=name, **{**PRESETS[name], **overrides})
