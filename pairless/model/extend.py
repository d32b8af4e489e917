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


def _is_per_modality(name: str) -> bool:
    return name in ("token_embedding.weight", "modality_embedding") or name.startswith("heads.")


def _rows(model: FourM, name: str) -> slice:
    """The rows of ``name``'s vocabulary in the model's flat token table."""
    index = model.modalities.index(name)
    start = int(model.vocab_offset[index])
    return slice(start, start + model.vocab_sizes[index])


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
    with torch.no_grad():
        state = model.state_dict()
        for key, tensor in base.state_dict().items():
            if not _is_per_modality(key):
                state[key].copy_(tensor)
        for index, name in enumerate(model.modalities):
            head = model.heads[index]
            if name in base.modalities:
                old = base.modalities.index(name)
                model.token_embedding.weight[_rows(model, name)] = base.token_embedding.weight[
                    _rows(base, name)]
                model.modality_embedding[index] = base.modality_embedding[old]
                head.load_state_dict(base.heads[old].state_dict())
                continue
            rows = model.token_embedding.weight[_rows(model, name)]
            bound = 2 * max(std, 1.0)
            nn.init.trunc_normal_(rows, std=std, a=-bound, b=bound, generator=generator)
            model.modality_embedding[index].normal_(0.0, 0.02, generator=generator)
            nn.init.trunc_normal_(head.weight, std=0.02, a=-2.0, b=2.0, generator=generator)
            if head.bias is not None:
                head.bias.zero_()
    return model.to(base.null_token.device)


def restricted_state_dict(model: FourM, modalities: Sequence[str]) -> dict[str, torch.Tensor]:
    """The state dict a FourM over ``modalities`` (in that order) would have, cut out of ``model``.

    The inverse of :func:`extend_model` on the base's modalities: ``restricted_state_dict(extended,
    base.modalities)`` equals ``base.state_dict()`` as long as no base weight changed.
    """
    state = {key: value for key, value in model.state_dict().items() if not _is_per_modality(key)}
    indices = [model.modalities.index(name) for name in modalities]
    state["token_embedding.weight"] = torch.cat([model.token_embedding.weight[_rows(model, name)]
                                                 for name in modalities])
    state["modality_embedding"] = model.modality_embedding[indices]
    for new, old in enumerate(indices):
        for key, value in model.heads[old].state_dict().items():
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
    Always: its modality-embedding row (D,), and the head bias (V,) if the model has biases.
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
