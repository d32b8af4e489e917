"""A model extended by a modality it was not trained on, and the adapter that trains only that modality.

:func:`extend_model` builds a :class:`~pairless.model.transformer.FourM` over more modalities holding every
weight of a trained one (each modality's rows moved to their new offsets); :class:`Adapter` holds what is
specific to the added modality (its token rows, modality-embedding row, output head; low-rank with
``rank``), and gives the composite tensors that ``torch.func.functional_call`` runs the extended model with,
so that the frozen weights never reach an optimizer. :func:`restricted_state_dict` cuts the original model
back out; :func:`tensor_hash` proves it unchanged. Used by :mod:`pairless.training.adapter`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn

from pairless.batch import TokenSpec
from pairless.model.transformer import FourM

# Tensors with a part per modality: rows of the flat token tables (by vocabulary offset), of the stored
# position tables (by slot offset), one row of the modality embeddings; and the heads.
_TOKEN_TABLES = ("token_embedding.weight", "decoder_token_embedding.weight")
_MODALITY_ROWS = ("modality_embedding", "decoder_modality_embedding")
_POSITION_TABLES = ("encoder_positions", "decoder_positions")


def _is_per_modality(name: str) -> bool:
    return name in (*_TOKEN_TABLES, *_MODALITY_ROWS, *_POSITION_TABLES) or name.startswith("heads.")


def _rows(model: FourM, name: str) -> slice:
    """The rows of ``name``'s vocabulary in the model's flat token table."""
    index = model.modalities.index(name)
    start = int(model.vocab_offset[index])
    return slice(start, start + model.vocab_sizes[index])


def _slots(model: FourM, name: str) -> slice:
    """The rows of ``name``'s slots in the model's position tables."""
    index = model.modalities.index(name)
    start = int(model.slot_offset[index])
    return slice(start, start + model.specs[name].num_tokens)


def _part(model: FourM, key: str, tensor: torch.Tensor, name: str) -> torch.Tensor:
    """Modality ``name``'s part of the per-modality tensor ``key`` (not a head) of ``model``."""
    if key in _TOKEN_TABLES:
        return tensor[_rows(model, name)]
    if key in _POSITION_TABLES:
        return tensor[_slots(model, name)]
    index = model.modalities.index(name)
    return tensor[index:index + 1]


def extend_model(base: FourM, specs: dict[str, TokenSpec], generator: torch.Generator | None = None) -> FourM:
    """A FourM with ``base``'s config over ``specs`` (in that order), holding every weight of ``base``.

    ``specs`` must hold every base modality with the same TokenSpec. Each base modality's token rows move
    to its new offset, its modality-embedding row and head go with it; a new modality gets weights
    initialised like FourM's own, drawn from ``generator`` (default: seed 0).
    """
    for name in base.modalities:
        if name not in specs:
            raise ValueError(f"specs: lack the base model's modality {name!r}")
        if specs[name] != base.specs[name]:
            raise ValueError(f"modality {name!r}: TokenSpec {specs[name]} differs from the base model's "
                             f"{base.specs[name]} (tokenized with other tokenizers?)")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    with torch.random.fork_rng():  # FourM draws weights from the global generator; all are replaced below
        model = FourM(base.config, specs)
    std = base.config.token_init_std
    bound = 2 * max(std, 1.0)
    with torch.no_grad():
        state = model.state_dict()
        base_state = base.state_dict()
        for key, tensor in base_state.items():
            if not _is_per_modality(key):
                state[key].copy_(tensor)
        for index, name in enumerate(model.modalities):
            head = model.heads[index]
            if name in base.modalities:
                old = base.modalities.index(name)
                for key in (*_TOKEN_TABLES, *_MODALITY_ROWS, *_POSITION_TABLES):
                    if key in base_state:
                        _part(model, key, state[key], name).copy_(_part(base, key, base_state[key], name))
                head.load_state_dict(base.heads[old].state_dict())
                continue
            # a new modality (this order of draws: the same weights as before the ml-4m options)
            rows = model.token_embedding.weight[_rows(model, name)]
            nn.init.trunc_normal_(rows, std=std, a=-bound, b=bound, generator=generator)
            model.modality_embedding[index].normal_(0.0, 0.02, generator=generator)
            nn.init.trunc_normal_(head.weight, std=0.02, a=-2.0, b=2.0, generator=generator)
            if head.bias is not None:
                head.bias.zero_()
            if model.decoder_token_embedding is not None:
                nn.init.trunc_normal_(model.decoder_token_embedding.weight[_rows(model, name)], std=std,
                                      a=-bound, b=bound, generator=generator)
            if model.decoder_modality_embedding is not None:
                model.decoder_modality_embedding[index].normal_(0.0, 0.02, generator=generator)
            # stored positions of a new modality: the sin-cos rows FourM built it with
    return model.to(base.mask_token.device)


def restricted_state_dict(model: FourM, modalities: Sequence[str]) -> dict[str, torch.Tensor]:
    """The state dict a FourM over ``modalities`` (in that order) would have, cut out of ``model``.

    The inverse of :func:`extend_model` on the base's modalities: ``restricted_state_dict(extended,
    base.modalities)`` equals ``base.state_dict()`` as long as no base weight changed.
    """
    full = model.state_dict()
    state = {key: value for key, value in full.items() if not _is_per_modality(key)}
    for key in (*_TOKEN_TABLES, *_MODALITY_ROWS, *_POSITION_TABLES):
        if key in full:
            state[key] = torch.cat([_part(model, key, full[key], name) for name in modalities])
    for new, name in enumerate(modalities):
        for key, value in model.heads[model.modalities.index(name)].state_dict().items():
            state[f"heads.{new}.{key}"] = value
    return {key: value.detach() for key, value in state.items()}


def tensor_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``state``'s tensors (sorted by name)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Adapter(nn.Module):
    """The trainable part of an extended model: what is specific to one modality.

    Full rank: the modality's token rows (V, D) and head weight (V, D), starting from the model's. With
    ``rank`` r: rows = token_left (V, r) @ token_right (r, D), head = head_left (V, r) @ head_right (r, D).
    Always: its modality-embedding row (D,), and the head bias (V,) if the model has biases; with ml-4m's
    options, its decoder modality row and (a sequence modality) its decoder-side token rows, full rank.
    """

    def __init__(self, model: FourM, modality: str, rank: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.modality, self.rank = modality, rank
        self.index = model.modalities.index(modality)
        self.rows = _rows(model, modality)
        head = model.heads[self.index]
        vocab, dim = model.vocab_sizes[self.index], model.config.dim
        self.modality_row = nn.Parameter(model.modality_embedding[self.index].detach().clone())
        self.head_bias = nn.Parameter(head.bias.detach().clone()) if head.bias is not None else None
        # ml-4m style: the decoder's own modality row, and (a sequence) its decoder-side token rows, full rank
        self.decoder_modality_row = self.decoder_token_rows = None
        if model.decoder_modality_embedding is not None:
            row = model.decoder_modality_embedding[self.index]
            self.decoder_modality_row = nn.Parameter(row.detach().clone())
        if model.decoder_token_embedding is not None and model.specs[modality].kind == "sequence":
            self.decoder_token_rows = nn.Parameter(
                model.decoder_token_embedding.weight[self.rows].detach().clone())
        if rank is None:  # start from the model's own rows and head
            self.token_rows = nn.Parameter(model.token_embedding.weight[self.rows].detach().clone())
            self.head_weight = nn.Parameter(head.weight.detach().clone())
            return
        generator = generator if generator is not None else torch.Generator().manual_seed(0)

        def factor(rows: int, columns: int, std: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(rows, columns, generator=generator) * std)

        # Entries of a product of unit-std (V, r) and std/sqrt(r) (r, D) factors have std ``std``: the
        # product starts at the scale of a full-rank initialisation.
        token_std = model.config.token_init_std
        self.token_left, self.token_right = factor(vocab, rank, 1.0), factor(rank, dim, token_std / rank**0.5)
        self.head_left, self.head_right = factor(vocab, rank, 1.0), factor(rank, dim, 0.02 / rank**0.5)

    def token_matrix(self) -> torch.Tensor:
        """The modality's token rows ``(V, D)``."""
        return self.token_rows if self.rank is None else self.token_left @ self.token_right

    def head_matrix(self) -> torch.Tensor:
        """The modality's head weight ``(V, D)``."""
        return self.head_weight if self.rank is None else self.head_left @ self.head_right

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def overrides(self, model: FourM) -> dict[str, torch.Tensor]:
        """Composite tensors for ``functional_call``: ``model``'s frozen ones with this adapter's parts."""
        table, modality = model.token_embedding.weight, model.modality_embedding
        rows, index = self.rows, self.index
        tensors = {
            "token_embedding.weight": torch.cat([table[:rows.start], self.token_matrix(), table[rows.stop:]]),
            "modality_embedding": torch.cat([modality[:index], self.modality_row[None],
                                             modality[index + 1:]]),
            f"heads.{index}.weight": self.head_matrix(),
        }
        if self.head_bias is not None:
            tensors[f"heads.{index}.bias"] = self.head_bias
        if self.decoder_modality_row is not None:
            rows_of = model.decoder_modality_embedding
            tensors["decoder_modality_embedding"] = torch.cat(
                [rows_of[:index], self.decoder_modality_row[None], rows_of[index + 1:]])
        if self.decoder_token_rows is not None:
            table = model.decoder_token_embedding.weight
            tensors["decoder_token_embedding.weight"] = torch.cat(
                [table[:rows.start], self.decoder_token_rows, table[rows.stop:]])
        return tensors

    @torch.no_grad()
    def merge_into(self, model: FourM) -> None:
        """Write the adapter (factors multiplied out) into ``model``'s own weights (frozen rows onto
        themselves, unchanged)."""
        for key, value in self.overrides(model).items():
            model.get_parameter(key).copy_(value)


class FunctionCaller(nn.Module):
    """Calls any method of a model: ``functional_call`` calls ``forward`` only, and we need ``encode``."""

    def __init__(self, model: FourM):
        super().__init__()
        self.model = model

    def forward(self, method: str, *args):
        return getattr(self.model, method)(*args)
