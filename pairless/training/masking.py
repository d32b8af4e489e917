"""Masking: Dirichlet token budgets and input/target selection per sample.

Training (``Masker``): each sample draws one Dirichlet concentration from
``config.alphas``, then proportions over the modalities of its view (weight
alpha on each, 0 elsewhere), separately for inputs and targets. Proportions
become integer counts that sum exactly to the budget, capped by what each
modality holds (images/vectors: all their tokens; sequences: the non-pad
length including EOS); what a full modality cannot take goes to the others
with room, so budgets are filled whenever the view has enough tokens.
(The Dirichlet draw and the integer allocation are :mod:`pairless.training.budgets`.)
Inputs are chosen first, targets from the rest, so they are disjoint. A view
with fewer tokens than the two budgets together is split between inputs and
targets in the budgets' proportion (before 2026-12-04 inputs took all of it,
and a one-modality view of 64 tokens had nothing left to predict).

- images and vectors: random token subsets;
- sequences (``sequence_masking="prefix"``, the default): targets are the prefix 0..k-1 (predicted left
  to right, the decoder sees the previous token, BOS at position 0); inputs are a random subset of the
  non-pad positions >= k;
- sequences with ``sequence_masking="span"``: 4M's span masking (:mod:`pairless.training.span_masking`):
  masked spans become sentinels in the input and the spans, each after its sentinel, the target, within
  the same counts.

A fraction ``whole_sequence_fraction`` of samples make one sequence modality of their view (a caption,
say) a whole target: none of its tokens is an input, all of it is predicted (first claim on the target
budget), and the inputs come from the view's other modalities (up to the whole input budget).

A fraction ``empty_input_fraction`` of samples get no input at all, which
trains the unconditional prediction (classifier-free guidance, the "no
input" baseline). Everything is batched torch ops; the only Python loops are
over modalities and the (at most M + 1) redistribution rounds.

Two random streams (``TrainConfig.masking_stream``): ``batch`` (``Masker.__call__``, every draw of a
batch from one generator: the stream of runs trained before 2026-12-07) and ``sample``
(``Masker.mask_samples``, each sample's draws a function of its own key,
:mod:`pairless.training.sample_random`), which lets each process mask only its own slice of a batch.
Evaluation and generation build their batches in
:mod:`pairless.inference.translation_batch`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from pairless.batch import MaskedBatch, TokenSpec
from pairless.config import Config, ConfigError
from pairless.training import sample_random, span_masking
from pairless.training.budgets import allocate, sample_gamma
from pairless.training.packing import assemble


class MaskingConfig(Config):
    """Token budgets per sample and the Dirichlet that splits them across a sample's view."""

    input_budget: int = Field(64, ge=1)
    target_budget: int = Field(64, ge=1)
    # A mixture of Dirichlet concentrations: each sample draws one entry uniformly.
    alphas: list[float] = Field([0.5], min_length=1)
    empty_input_fraction: float = Field(0.05, ge=0.0, le=1.0)  # samples trained with no input at all
    # how a sequence modality is split into input and target (module docstring)
    sequence_masking: Literal["prefix", "span"] = "prefix"
    # span masking's sentinels: the id of [S_0] and how many there are, in every sequence vocabulary
    # (pairless's text tokenizer: 4 and 16; ml-4m's WordPiece: 4 and 200); at most num_sentinels - 2 spans
    first_sentinel_id: int = Field(4, ge=0)
    num_sentinels: int = Field(16, ge=3)
    # share of samples in which one sequence modality of the view is a whole target, none of it an input
    whole_sequence_fraction: float = Field(0.0, ge=0.0, le=1.0)


def check_budget(config: MaskingConfig, specs: dict[str, TokenSpec],
                 universe: list[str] | tuple[str, ...]) -> None:
    """Raise ConfigError if the budgets exceed the tokens the universe can hold at most."""
    for alpha in config.alphas:
        if not alpha > 0:
            raise ConfigError(f"masking.alphas: every concentration must be > 0, got {alpha}")
    missing = [name for name in universe if name not in specs]
    if missing:
        raise ConfigError(f"masking: no token spec for modality {missing[0]!r}; known: {', '.join(specs)}")
    if config.sequence_masking == "span":
        last = config.first_sentinel_id + config.num_sentinels - 1
        for name in universe:
            if specs[name].kind == "sequence" and last >= specs[name].vocab_size:
                raise ConfigError(f"masking.first_sentinel_id + num_sentinels: span masking needs sentinel "
                                  f"ids {config.first_sentinel_id}..{last}, but modality {name!r} has a "
                                  f"vocabulary of {specs[name].vocab_size}")
    available = sum(specs[name].num_tokens for name in universe)
    total = config.input_budget + config.target_budget
    if total > available:
        raise ConfigError(
            f"masking.input_budget + masking.target_budget = {total} exceeds the {available} tokens "
            f"the modalities {', '.join(universe)} hold per sample"
        )


def model_specs(specs: dict[str, TokenSpec], config: MaskingConfig) -> dict[str, TokenSpec]:
    """The specs a model trained with this masking holds: with span masking a sequence target starts after
    its first sentinel, ``[S_1]``, so that is the BOS evaluation and generation start from (ml-4m's)."""
    if config.sequence_masking != "span":
        return dict(specs)
    return {name: replace(spec, bos_id=config.first_sentinel_id + 1) if spec.kind == "sequence" else spec
            for name, spec in specs.items()}


def _ranks(noise: torch.Tensor) -> torch.Tensor:
    """Rank of each entry along dim 1 (0 = smallest): a random order when ``noise`` is uniform."""
    return noise.argsort(dim=1).argsort(dim=1)


class Masker:
    """Turns token arrays plus per-sample views into a fixed-size :class:`MaskedBatch`.

    ``modalities`` fixes the order (the model's ``tuple(specs)`` by default);
    the ``views`` passed to ``__call__`` have one column per entry of it.
    """

    def __init__(self, specs: dict[str, TokenSpec], config: MaskingConfig,
                 modalities: tuple[str, ...] | None = None):
        self.specs = dict(specs)
        self.config = config
        self.modalities = tuple(modalities) if modalities is not None else tuple(specs)
        check_budget(config, self.specs, self.modalities)
        lengths = [self.specs[name].num_tokens for name in self.modalities]
        self.slot_modality = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(lengths)])
        self.slot_position = torch.cat([torch.arange(n) for n in lengths])
        self.alphas = torch.tensor(config.alphas, dtype=torch.float64)
        self.is_sequence = torch.tensor([self.specs[name].kind == "sequence" for name in self.modalities])
        self.span = config.sequence_masking == "span"

    def __call__(self, tokens: dict[str, torch.Tensor], views: torch.Tensor,
                 generator: torch.Generator) -> MaskedBatch:
        """The ``batch`` stream: every draw of the whole batch from one generator (the order of draws
        fixes the result, so a batch must be masked whole)."""
        views = self._check_views(views)
        batch = views.shape[0]
        alpha = self.alphas[torch.randint(len(self.alphas), (batch,), generator=generator)].unsqueeze(1)
        concentration = torch.where(views, alpha, 1.0)
        input_weights = torch.where(views, sample_gamma(concentration, generator), 0.0)
        target_weights = torch.where(views, sample_gamma(concentration, generator), 0.0)
        empty = torch.rand(batch, generator=generator) < self.config.empty_input_fraction
        lengths = self._available(tokens, views)  # (B, M)
        whole = None
        if self.config.whole_sequence_fraction > 0:  # drawn only when used: the stream stays as it was
            chosen = torch.rand(batch, generator=generator, dtype=torch.float64)
            pick = torch.rand(batch, generator=generator, dtype=torch.float64)
            whole = self._whole(lengths, chosen < self.config.whole_sequence_fraction, pick)
        input_counts, target_counts = self._counts(lengths, input_weights, target_weights, empty, whole)
        noise = torch.cat([torch.rand(batch, self.specs[name].num_tokens, generator=generator)
                           for name in self.modalities], 1)
        span = None
        if self.span:
            span = {index: (torch.rand(batch, generator=generator, dtype=torch.float64).numpy(),
                            torch.rand(batch, generator=generator, dtype=torch.float64).numpy(),
                            torch.rand(batch, self.specs[name].num_tokens, generator=generator,
                                       dtype=torch.float64).numpy())
                    for index, name in enumerate(self.modalities) if self.specs[name].kind == "sequence"}
            input_counts, target_counts = self._span_counts(lengths, input_counts, target_counts, span)
        return self._select(tokens, lengths, input_counts, target_counts, noise, span)

    def mask_samples(self, tokens: dict[str, torch.Tensor], views: torch.Tensor, keys: np.ndarray,
                     counts: tuple[torch.Tensor, torch.Tensor] | None = None) -> MaskedBatch:
        """The ``sample`` stream: row ``b`` is masked from ``keys[b]`` alone
        (:mod:`pairless.training.sample_random`), so any slice of a batch masks to the same rows.
        ``counts``: these rows of :meth:`sample_counts`, when already computed."""
        views = self._check_views(views)
        lengths = self._available(tokens, views)
        input_counts, target_counts = counts if counts is not None else self._sample_counts(lengths, views,
                                                                                            keys)
        return self._select(tokens, lengths, input_counts, target_counts,
                            sample_random.order_keys(keys, len(self.slot_modality)),
                            self._span_draws(keys) if self.span else None)

    def sample_counts(self, tokens: dict[str, torch.Tensor], views: torch.Tensor,
                      keys: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and target tokens per sample and modality ``(B, M)`` that :meth:`mask_samples` gives these
        samples, without choosing the tokens (a process's budget count of the whole global batch)."""
        views = self._check_views(views)
        return self._sample_counts(self._available(tokens, views), views, keys)

    def sample_counts_from_lengths(self, sequence_lengths: dict[str, np.ndarray], views: torch.Tensor,
                                   keys: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`sample_counts` from what it reads of the tokens: each sequence modality's non-pad length
        per sample (the other modalities always hold all their tokens)."""
        views = self._check_views(views)
        return self._sample_counts(self._lengths_from(sequence_lengths, views), views, keys)

    def sample_totals_from_lengths(self, sequence_lengths: dict[str, np.ndarray], views: torch.Tensor,
                                   keys: np.ndarray) -> np.ndarray:
        """Valid input + target tokens of each sample ``(B,)`` that :meth:`mask_samples` gives it, without
        the Dirichlet split (whatever the split, inputs fill ``min(input budget, view)`` and targets the
        target budget from what is left: ``allocate`` fills every budget its capacity allows)."""
        views = self._check_views(views)
        if self.span or self.config.whole_sequence_fraction > 0:  # counts that depend on the split itself
            input_counts, target_counts = self.sample_counts_from_lengths(sequence_lengths, views, keys)
            return (input_counts + target_counts).sum(1).numpy().astype(np.int64)
        available = self._lengths_from(sequence_lengths, views).sum(1)
        empty = torch.from_numpy(sample_random.uniforms(keys, [sample_random.EMPTY])[:, 0]
                                 < self.config.empty_input_fraction)
        inputs = torch.minimum(torch.where(empty, 0, self.input_budgets(available)), available)
        targets = torch.clamp(available - inputs, max=self.config.target_budget)
        return (inputs + targets).numpy().astype(np.int64)

    def _lengths_from(self, sequence_lengths: dict[str, np.ndarray], views: torch.Tensor) -> torch.Tensor:
        """Tokens each sample can give per modality ``(B, M)``, from the sequences' non-pad lengths."""
        columns = [torch.as_tensor(np.asarray(sequence_lengths[name]), dtype=torch.long)
                   if self.specs[name].kind == "sequence"
                   else torch.full((views.shape[0],), self.specs[name].num_tokens, dtype=torch.long)
                   for name in self.modalities]
        return torch.where(views, torch.stack(columns, 1), 0)

    def sample_token_counts(self, tokens: dict[str, torch.Tensor], views: torch.Tensor,
                            keys: np.ndarray) -> np.ndarray:
        """Valid input + target tokens per modality of :meth:`sample_counts`, int64 ``(M,)``."""
        input_counts, target_counts = self.sample_counts(tokens, views, keys)
        return (input_counts + target_counts).sum(0).numpy().astype(np.int64)

    def _check_views(self, views) -> torch.Tensor:
        views = torch.as_tensor(views, dtype=torch.bool)
        if views.shape[1] != len(self.modalities):
            raise ValueError(f"views: expected {len(self.modalities)} columns "
                             f"({', '.join(self.modalities)}), got {views.shape[1]}")
        return views

    def _sample_counts(self, lengths: torch.Tensor, views: torch.Tensor,
                       keys: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        keys = np.asarray(keys, dtype=np.uint64)
        if len(keys) != views.shape[0]:
            raise ValueError(f"keys: {len(keys)} for a batch of {views.shape[0]} samples")
        picked = np.floor(sample_random.uniforms(keys, [sample_random.ALPHA])[:, 0]
                          * len(self.alphas)).astype(np.int64)
        alpha = self.alphas.numpy()[picked][:, None]
        in_view = views.numpy()
        concentration = np.where(in_view, alpha, 1.0)
        weights = torch.from_numpy(sample_random.gamma(keys, np.concatenate([concentration] * 2, 1)))
        count = len(self.modalities)
        input_weights = torch.where(views, weights[:, :count], 0.0)
        target_weights = torch.where(views, weights[:, count:], 0.0)
        empty = torch.from_numpy(sample_random.uniforms(keys, [sample_random.EMPTY])[:, 0]
                                 < self.config.empty_input_fraction)
        whole = None
        if self.config.whole_sequence_fraction > 0:
            draws = torch.from_numpy(sample_random.uniforms(keys, [sample_random.WHOLE,
                                                                   sample_random.WHOLE_PICK]))
            whole = self._whole(lengths, draws[:, 0] < self.config.whole_sequence_fraction, draws[:, 1])
        counts = self._counts(lengths, input_weights, target_weights, empty, whole)
        return self._span_counts(lengths, *counts, self._span_draws(keys)) if self.span else counts

    def _counts(self, lengths, input_weights, target_weights, empty,
                whole: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and target tokens per sample and modality ``(B, M)``: budgets split by the weights.
        ``whole`` (B, M): the sequence modality each sample predicts whole (:meth:`_whole`), if any."""
        batch = lengths.shape[0]
        if whole is None:
            input_budget = torch.where(empty, 0, self.input_budgets(lengths.sum(1)))
            input_counts = allocate(input_weights, lengths, input_budget)
            target_counts = allocate(target_weights, lengths - input_counts,
                                     torch.full((batch,), self.config.target_budget))
            return input_counts, target_counts
        # A whole target takes its length from the target budget first and gives no input; the inputs may
        # then use the whole input budget (the small-view split of input_budgets would halve them).
        input_capacity = torch.where(whole, 0, lengths)
        budget = torch.where(whole.any(1), input_capacity.sum(1).clamp(max=self.config.input_budget),
                             self.input_budgets(lengths.sum(1)))
        input_counts = allocate(torch.where(whole, 0.0, input_weights), input_capacity,
                                torch.where(empty, 0, budget))
        whole_targets = torch.where(whole, lengths.clamp(max=self.config.target_budget), 0)
        rest = allocate(torch.where(whole, 0.0, target_weights),
                        torch.where(whole, 0, lengths - input_counts),
                        self.config.target_budget - whole_targets.sum(1))
        return input_counts, whole_targets + rest

    def _whole(self, lengths: torch.Tensor, chosen: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
        return span_masking.whole_targets(lengths, self.is_sequence, chosen, pick)

    def _span_draws(self, keys: np.ndarray) -> dict:
        return span_masking.keyed_draws(keys, [self.specs[name] for name in self.modalities])

    def _span_counts(self, lengths, input_counts, target_counts, span) -> tuple[torch.Tensor, torch.Tensor]:
        return span_masking.span_counts(lengths, input_counts, target_counts, span, self.config.num_sentinels)

    def _select(self, tokens, lengths, input_counts, target_counts, noise, span=None) -> MaskedBatch:
        """Choose the input and target tokens of each modality and pack them into a batch. ``noise``: one
        float uniform per slot ``(B, T)`` (batch stream: ranked by argsort), or an int64 numpy array of
        distinct keys per row (sample stream: :func:`sample_random.first_of`). ``span``: span masking's
        draws per sequence modality (its counts are then the span layouts' own)."""
        batch = lengths.shape[0]
        is_input, is_target, values, previous, input_values = [], [], [], [], []
        offset = 0
        for index, name in enumerate(self.modalities):
            spec = self.specs[name]
            length = spec.num_tokens
            token = tokens[name].long() if name in tokens else torch.zeros(batch, length, dtype=torch.long)
            position = torch.arange(length).unsqueeze(0)
            n_in = input_counts[:, index:index + 1]
            n_target = target_counts[:, index:index + 1]
            slot_noise = noise[:, offset:offset + length]
            offset += length
            keyed = isinstance(slot_noise, np.ndarray)
            if spec.kind == "sequence" and span is not None:
                chosen_input, target, encoder_token, decoder_token, before = span_masking.span_slots(
                    token, lengths, input_counts, target_counts, span, index, self.config.first_sentinel_id,
                    self.config.num_sentinels)
                is_input.append(chosen_input)
                is_target.append(target)
                input_values.append(encoder_token)
                values.append(decoder_token)
                previous.append(before)
                continue
            if spec.kind == "sequence":
                target = position < n_target
                eligible = (position >= n_target) & (position < lengths[:, index:index + 1])
                if keyed:
                    last = np.iinfo(np.int64).max  # ineligible slots sort after every eligible one
                    chosen = sample_random.first_of(np.where(eligible.numpy(), slot_noise, last),
                                                    n_in.numpy())[0]
                    is_input.append(eligible & torch.from_numpy(chosen))
                else:
                    rank = _ranks(torch.where(eligible, slot_noise, 2.0))
                    is_input.append(eligible & (rank < n_in))
                bos = torch.full((batch, 1), spec.bos_id, dtype=torch.long)
                previous.append(torch.cat([bos, token[:, :-1]], 1))
            else:
                if keyed:
                    first, first_two = sample_random.first_of(slot_noise, torch.cat([n_in, n_in + n_target],
                                                                                    1).numpy())
                    is_input.append(torch.from_numpy(first))
                    target = torch.from_numpy(first_two & ~first)
                else:
                    rank = _ranks(slot_noise)
                    is_input.append(rank < n_in)
                    target = (rank >= n_in) & (rank < n_in + n_target)
                previous.append(torch.zeros_like(token))
            is_target.append(target)
            values.append(token)
            input_values.append(token)
        return assemble(self.modalities, self.slot_modality, self.slot_position, torch.cat(is_input, 1),
                        torch.cat(is_target, 1), torch.cat(values, 1), torch.cat(previous, 1),
                        self.config.input_budget, self.config.target_budget, torch.cat(input_values, 1))


    def input_budgets(self, available: torch.Tensor) -> torch.Tensor:
        """Each sample's input budget, given the tokens its view holds (B,).

        The configured input budget when the view holds both budgets; otherwise the view's tokens are
        split between inputs and targets in the budgets' proportion (targets rounded up), so that a small
        view (one 64-token modality against budgets of 64 + 64) still trains on targets instead of
        becoming all input and nothing to predict.
        """
        inputs, targets = self.config.input_budget, self.config.target_budget
        target_share = torch.div(available * targets + inputs + targets - 1, inputs + targets,
                                 rounding_mode="floor")
        return torch.where(available >= inputs + targets, inputs, (available - target_share).clamp_min(0))

    def _available(self, tokens: dict[str, torch.Tensor], views: torch.Tensor) -> torch.Tensor:
        """Tokens each sample can give per modality: (B, M), 0 outside its view."""
        columns = []
        for name in self.modalities:
            spec = self.specs[name]
            if name not in tokens:
                columns.append(torch.zeros(views.shape[0], dtype=torch.long))
            elif spec.kind == "sequence":
                columns.append((tokens[name] != spec.pad_id).sum(1).long())
            else:
                columns.append(torch.full((views.shape[0],), spec.num_tokens, dtype=torch.long))
        return torch.where(views, torch.stack(columns, 1), 0)
