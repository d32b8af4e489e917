"""Span masking of sequence modalities (4M's text recipe, T5's corruption), one sample at a time.

A sequence of ``length`` tokens (EOS included) is split into kept tokens and masked spans: token ``p`` is
kept when its uniform draw is below a keep probability. The encoder's input is the sequence with every
masked span replaced by one sentinel (``[S_1]`` for the first span, ``[S_2]`` for the second, ...); the
decoder's target is each span after its sentinel, then one more sentinel that says no span follows::

    sequence  a b c d e [EOS]        kept: a, d, e
    input     a [S_1] d e [S_2]
    target    [S_1] b c [S_2] [EOS] [S_3]

The target is predicted left to right: each decoder slot holds one target token and sees the token before
it, so the first sentinel is only ever seen (it plays BOS), and a target of ``n`` entries fills ``n - 1``
slots. With no input budget at all the whole sequence is one span: the input is empty and the target is
``[S_1]`` + the sequence + ``[S_2]``, which is how a sequence is scored and generated from other modalities
(docs/training.md, "Masking").

Budgets (the counts the Dirichlet split gives the modality, as for prefix masking): while the input is
longer than its budget, or there are more spans than sentinels, the keep probability shrinks by
:data:`KEEP_DECAY` (it reaches 0, one span, in finitely many steps). A target longer than its budget keeps a
window that starts at a sentinel: from a sentinel chosen at random when that leaves at least a whole
budget, else from the earliest sentinel whose rest fits.

Entries of the sequences returned here: ``p >= 0`` is position ``p`` of the original sequence, ``-k`` is
sentinel ``k`` (the caller maps it to a token id). Everything is a function of the draws passed in, so the
batch and the per-sample masking streams can share it.
"""

from __future__ import annotations

import numpy as np
import torch

from pairless.batch import TokenSpec
from pairless.training import sample_random

KEEP_DECAY = 0.8  # factor applied to the keep probability while the input is over its budget
_SMALLEST_KEEP = 1e-6  # below this the keep probability is taken as 0 (every token masked)


def corrupt(length: int, uniforms: np.ndarray, keep: float, input_budget: int,
            max_spans: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input, target)`` entries of one sequence of ``length`` tokens before any target truncation.

    ``uniforms``: one draw in [0, 1) per position (at least ``length``); ``keep``: the first keep
    probability tried; ``input_budget``: the most input entries (0: the whole sequence is one target span);
    ``max_spans``: the most spans (sentinels ``1 .. max_spans + 1`` are used).
    """
    if length <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    draws = np.asarray(uniforms[:length], dtype=np.float64)
    keep = 0.0 if input_budget <= 0 else float(keep)
    while True:
        kept = draws < keep
        starts = ~kept & np.concatenate([[True], kept[:-1]])  # a masked position after a kept one (or first)
        spans = int(starts.sum())
        if keep == 0.0 or (int(kept.sum()) + spans <= input_budget and spans <= max_spans):
            break
        keep *= KEEP_DECAY
        if keep < _SMALLEST_KEEP:
            keep = 0.0
    span_number = np.cumsum(starts)  # the span each masked position belongs to (1-based)
    positions = np.arange(length)
    # input: kept positions and one sentinel per span, in sequence order
    input_entries = np.where(kept, positions, -span_number)[kept | starts]
    if input_budget <= 0:
        input_entries = input_entries[:0]
    # target: each span's sentinel followed by its positions, then the closing sentinel
    masked = ~kept
    order = np.stack([np.where(starts, -span_number, 0), positions], 1)  # (L, 2): sentinel slot, position
    use = np.stack([starts, masked], 1)
    target_entries = np.concatenate([order[use], [-(spans + 1)]]).astype(np.int64)
    return input_entries.astype(np.int64), target_entries


def truncate_target(target: np.ndarray, budget: int, choice: float) -> np.ndarray:
    """The target window that fills at most ``budget`` decoder slots (``len - 1`` of them), starting at a
    sentinel; ``choice`` in [0, 1) picks the random sentinel. An empty target stays empty."""
    if len(target) - 1 <= budget:
        return target
    if budget <= 0:
        return target[:0]
    # a target that needs truncating has at least one span, so it starts with a sentinel; the closing
    # sentinel never starts a window
    sentinels = np.nonzero(target < 0)[0][:-1]
    rest = len(target) - 1 - sentinels  # slots from each sentinel to the end (strictly decreasing)
    chosen = min(int(choice * len(sentinels)), len(sentinels) - 1)
    if rest[chosen] >= budget:
        return target[sentinels[chosen]: sentinels[chosen] + budget + 1]
    # the chosen sentinel's rest fits, so some earlier-or-equal one is the earliest that fits
    return target[sentinels[np.argmax(rest <= budget)]:]


def span_layout(length: int, uniforms: np.ndarray, keep: float, choice: float, input_budget: int,
                target_budget: int, max_spans: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input, target)`` entries of one sample: :func:`corrupt` then :func:`truncate_target`.

    The input holds at most ``input_budget`` entries and the target fills at most ``target_budget`` decoder
    slots. Calling it again with the budgets set to what it returned (``len(input)``, ``len(target) - 1``)
    gives the same layout, so counts computed first can be turned into tokens later.
    """
    inputs, target = corrupt(length, uniforms, keep, input_budget, max_spans)
    return inputs, truncate_target(target, target_budget, choice)


def entries_to_ids(entries: np.ndarray, tokens: np.ndarray, first_sentinel: int) -> np.ndarray:
    """Token ids of layout entries: ``tokens[p]`` for a position, ``first_sentinel + k`` for sentinel ``k``
    (``first_sentinel`` is the id of ``[S_0]``)."""
    entries = np.asarray(entries, dtype=np.int64)
    return np.where(entries >= 0, np.asarray(tokens)[np.clip(entries, 0, None)], first_sentinel - entries)


# The masker's side (pairless.training.masking.Masker): which samples predict a sequence whole, the keyed
# draws, and the counts and slots of a batch's span-masked sequences.

def whole_targets(lengths: torch.Tensor, is_sequence: torch.Tensor, chosen: torch.Tensor,
                  pick: torch.Tensor) -> torch.Tensor:
    """(B, M) bool: for each ``chosen`` sample, the sequence modality (``is_sequence`` (M,)) of its view that
    ``pick`` (a uniform in [0, 1)) names among those it holds (``lengths`` (B, M) > 0); nothing elsewhere."""
    present = (lengths > 0) & is_sequence.unsqueeze(0)
    count = present.sum(1)
    rank = present.long().cumsum(1) - 1
    wanted = torch.minimum((pick * count).floor().long(), (count - 1).clamp_min(0))
    return present & (rank == wanted.unsqueeze(1)) & chosen.unsqueeze(1)


def keyed_draws(keys: np.ndarray, specs: list[TokenSpec]) -> dict[int, tuple[np.ndarray, ...]]:
    """Span masking's draws of each sequence modality (by its index in ``specs``) from the samples' keys
    (:mod:`pairless.training.sample_random`): keep probability ``(B,)``, the truncation's choice ``(B,)`` and
    one uniform per position ``(B, L)``."""
    keys = np.asarray(keys, dtype=np.uint64)
    draws = {}
    for index, spec in enumerate(specs):
        if spec.kind != "sequence":
            continue
        start = sample_random.SPAN + (index + 1) * sample_random.SPAN_STRIDE
        draws[index] = (sample_random.uniforms(keys, [sample_random.SPAN + index])[:, 0],
                        sample_random.uniforms(keys, [sample_random.SPAN + sample_random.SPAN_CHOICE
                                                      + index])[:, 0],
                        sample_random.uniforms(keys, start + np.arange(spec.num_tokens)))
    return draws


def layouts(lengths, input_counts, target_counts, draws, index: int, num_sentinels: int) -> list:
    """The :func:`span_layout` of every sample of sequence modality ``index`` with its counts ``(B, M)`` as
    budgets; ``None`` where the sample holds none of it."""
    keep, choice, uniforms = draws[index]
    out = []
    for row in range(lengths.shape[0]):
        length = int(lengths[row, index])
        out.append(None if length == 0 else span_layout(
            length, uniforms[row], float(keep[row]), float(choice[row]), int(input_counts[row, index]),
            int(target_counts[row, index]), num_sentinels - 2))
    return out


def span_counts(lengths, input_counts, target_counts, draws, num_sentinels: int) -> tuple[torch.Tensor,
                                                                                           torch.Tensor]:
    """The counts ``(B, M)`` once span masking has laid out each sequence within its counts (fewer or equal:
    the layouts' own, which lay out the same when given back as budgets)."""
    input_counts, target_counts = input_counts.clone(), target_counts.clone()
    for index in draws:
        laid_out = layouts(lengths, input_counts, target_counts, draws, index, num_sentinels)
        for row, layout in enumerate(laid_out):
            if layout is not None:
                input_counts[row, index] = len(layout[0])
                target_counts[row, index] = max(len(layout[1]) - 1, 0)
    return input_counts, target_counts


def span_slots(token: torch.Tensor, lengths, input_counts, target_counts, draws, index: int,
               first_sentinel: int, num_sentinels: int):
    """One span-masked sequence modality's slots ``(B, L)``: input and target selections, the encoder's ids
    (kept tokens and sentinels, at positions 0, 1, ...), the decoder's target ids and the ids before them
    (the target after its first sentinel, predicted left to right)."""
    batch, length = token.shape
    chosen_input = torch.zeros(batch, length, dtype=torch.bool)
    target = torch.zeros(batch, length, dtype=torch.bool)
    encoder_token, decoder_token, before = (torch.zeros(batch, length, dtype=torch.long) for _ in range(3))
    rows = token.numpy()
    for row, layout in enumerate(layouts(lengths, input_counts, target_counts, draws, index, num_sentinels)):
        if layout is None:
            continue
        inputs, targets = layout
        chosen_input[row, :len(inputs)] = True
        encoder_token[row, :len(inputs)] = torch.from_numpy(entries_to_ids(inputs, rows[row], first_sentinel))
        if len(targets) > 1:
            ids = torch.from_numpy(entries_to_ids(targets, rows[row], first_sentinel))
            target[row, :len(ids) - 1] = True
            decoder_token[row, :len(ids) - 1] = ids[1:]
            before[row, :len(ids) - 1] = ids[:-1]
    return chosen_input, target, encoder_token, decoder_token, before
