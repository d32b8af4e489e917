"""The architecture choices of :class:`~pairless.model.transformer.FourM` that exist to compute what ml-4m's
``FM`` computes (docs/ml4m.md), resolved from a :class:`~pairless.model.transformer.ModelConfig`.

Each choice is a ModelConfig field that defaults to ``None``, meaning "what the ``style`` says": style
``pairless`` (the default) is the model pairless always had, style ``ml4m`` is ml-4m's. A field set
explicitly wins over its style, so ``--set model.style=ml4m --set model.mlp=gelu`` is ml-4m's model with
pairless's MLP. Keeping them ``None`` in a saved config.json (rather than filling in the style's values)
makes ``--set model.style=ml4m`` work on a config that was dumped before, and keeps the cache key of every
run that never named them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Style = Literal["pairless", "ml4m"]
MlpKind = Literal["gelu", "swiglu"]


@dataclass(frozen=True)
class Architecture:
    """The resolved choices (no ``None``): what FourM builds."""

    norm_eps: float  # LayerNorm epsilon: PyTorch's 1e-5, ml-4m's 1e-6
    mlp: MlpKind  # "gelu": fc2(gelu(fc1 x)); "swiglu": fc2(silu(fc1 x) * fc3 x), 2/3 as wide
    head_bias: bool  # biases in the output heads (ml-4m's never have one)
    null_token: bool  # a learned token always first in the encoder input (pairless); ml-4m has none
    finite_mask: bool  # masked attention scores at the dtype's lowest finite value (an empty row: uniform)
    # decoder context = Linear(encoder output) + the encoder tokens' position and modality embeddings,
    # normed in every decoder layer before its keys and values (ml-4m); else the encoder output itself
    context_projection: bool
    # sequence targets' decoder queries = decoder-side token table (previous token) + position + modality,
    # without the mask token (ml-4m); else mask token + position + the encoder's token table
    decoder_token_table: bool
    separate_decoder_modalities: bool  # decoder modality embeddings of their own (ml-4m's 4M-21 flavour)
    # position tables held as fixed weights saved with the model, one for the encoder and one for the
    # decoder (ml-4m's buffers, learned ones included); else sin-cos computed at construction
    stored_positions: bool
    sequence_rank_positions: bool  # an input sequence token's position = its rank among the visible ones


_PAIRLESS = dict(norm_eps=1e-5, mlp="gelu", null_token=True, finite_mask=False, context_projection=False,
                 decoder_token_table=False, separate_decoder_modalities=False, stored_positions=False,
                 sequence_rank_positions=False)
_ML4M = dict(norm_eps=1e-6, mlp="swiglu", null_token=False, finite_mask=True, context_projection=True,
             decoder_token_table=True, separate_decoder_modalities=False, stored_positions=True,
             sequence_rank_positions=True)
STYLES: dict[str, dict] = {"pairless": _PAIRLESS, "ml4m": _ML4M}
# the ModelConfig fields that resolve through the style (head_bias too: None follows ``bias`` in pairless)
OPTION_NAMES = (*_PAIRLESS, "head_bias")


def resolve(config) -> Architecture:
    """The :class:`Architecture` of a ModelConfig: each option as set, else its style's value."""
    chosen = {}
    for name in OPTION_NAMES:
        value = getattr(config, name)
        if value is None:
            value = (config.bias if config.style == "pairless" else False) if name == "head_bias" \
                else STYLES[config.style][name]
        chosen[name] = value
    return Architecture(**chosen)


def swiglu_hidden(dim: int, mlp_ratio: float) -> int:
    """ml-4m's gated hidden width: two thirds of the plain MLP's (so the three matrices cost about as much
    as the plain MLP's two), each step rounded down as ml-4m does."""
    return int(2 * int(dim * mlp_ratio) / 3)
