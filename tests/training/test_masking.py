"""Tests for pairless.training.masking: budgets, caps, disjointness, sequence prefixes, empty inputs,
evaluation batches."""

from __future__ import annotations

import math

import pytest
import torch
from translation_oracle import full_translation_batch

from pairless.batch import TokenSpec
from pairless.config import ConfigError
from pairless.training.budgets import allocate, sample_gamma
from pairless.training.masking import Masker, MaskingConfig

SPECS = {
    "rgb": TokenSpec("rgb", "image", 16, 50, grid=(4, 4)),
    "depth": TokenSpec("depth", "image", 16, 60, grid=(4, 4)),
    "caption": TokenSpec("caption", "sequence", 10, 40, pad_id=0, bos_id=1, eos_id=2),
    "embed": TokenSpec("embed", "vector", 4, 30),
}
MODALITIES = tuple(SPECS)


def make_tokens(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = {name: torch.randint(3, spec.vocab_size, (batch, spec.num_tokens), generator=generator)
              for name, spec in SPECS.items()}
    lengths = torch.randint(1, 10, (batch,), generator=generator)  # words, then EOS, then padding
    position = torch.arange(10).unsqueeze(0)
    caption = tokens["caption"]
    caption[position == lengths.unsqueeze(1)] = 2
    caption[position > lengths.unsqueeze(1)] = 0
    return tokens


def selections(batch, row):
    """(modality, position) pairs of the valid encoder and decoder slots of one sample."""
    inputs = {(int(m), int(p)) for m, p, v in zip(batch.enc_modality[row], batch.enc_positions[row],
                                                   batch.enc_valid[row], strict=True) if v}
    targets = {(int(m), int(p)) for m, p, v in zip(batch.dec_modality[row], batch.dec_positions[row],
                                                    batch.dec_valid[row], strict=True) if v}
    return inputs, targets


def test_budgets_filled_capped_and_disjoint():
    batch_size = 64
    tokens = make_tokens(batch_size)
    views = torch.rand(batch_size, 4, generator=torch.Generator().manual_seed(1)) < 0.6
    masker = Masker(SPECS, MaskingConfig(input_budget=12, target_budget=14, empty_input_fraction=0.0))
    batch = masker(tokens, views, torch.Generator().manual_seed(2))
    caption_length = (tokens["caption"] != 0).sum(1)
    for row in range(batch_size):
        available = {0: 16, 1: 16, 2: int(caption_length[row]), 3: 4}
        in_view = sum(available[m] for m in range(4) if views[row, m])
        inputs, targets = selections(batch, row)
        assert not inputs & targets
        # a view smaller than both budgets is split in their proportion 12 : 14, targets rounded up
        assert len(inputs) == (12 if in_view >= 26 else in_view - math.ceil(in_view * 14 / 26))
        assert len(targets) == min(14, in_view - len(inputs))
        for modality, position in inputs | targets:
            assert views[row, modality] and position < available[modality]
        # the packed token ids are the real ones
        for slot in range(batch.enc_tokens.shape[1]):
            if batch.enc_valid[row, slot]:
                name = MODALITIES[int(batch.enc_modality[row, slot])]
                assert batch.enc_tokens[row, slot] == tokens[name][row, batch.enc_positions[row, slot]]


def test_a_one_modality_view_smaller_than_the_budgets_still_has_targets():
    """Budgets 16 + 16 and views of rgb alone (16 tokens): inputs used to take all 16 and leave no target,
    so such samples trained nothing; now 8 are inputs and 8 targets."""
    tokens = make_tokens(32, seed=7)
    views = torch.zeros(32, 4, dtype=torch.bool)
    views[:, 0] = True
    masker = Masker(SPECS, MaskingConfig(input_budget=16, target_budget=16, empty_input_fraction=0.0))
    batch = masker(tokens, views, torch.Generator().manual_seed(0))
    assert (batch.enc_valid.sum(1) == 8).all() and (batch.dec_valid.sum(1) == 8).all()
    assert masker.input_budgets(torch.tensor([0, 1, 2, 31, 32, 100])).tolist() == [0, 0, 1, 15, 16, 16]


def test_sequence_targets_are_prefixes_with_previous_tokens():
    batch_size = 48
    tokens = make_tokens(batch_size, seed=5)
    views = torch.zeros(batch_size, 4, dtype=torch.bool)
    views[:, 2] = True
    views[:, 3] = True
    masker = Masker(SPECS, MaskingConfig(input_budget=4, target_budget=6, empty_input_fraction=0.0))
    batch = masker(tokens, views, torch.Generator().manual_seed(0))
    saw_caption_target = False
    for row in range(batch_size):
        caption_slots = (batch.dec_modality[row] == 2) & batch.dec_valid[row]
        positions = batch.dec_positions[row][caption_slots]
        assert torch.equal(positions, torch.arange(len(positions)))
        saw_caption_target |= len(positions) > 0
        expected_previous = torch.cat([torch.tensor([1]), tokens["caption"][row]])[positions]
        assert torch.equal(batch.dec_input_tokens[row][caption_slots], expected_previous)
        inputs = (batch.enc_modality[row] == 2) & batch.enc_valid[row]
        assert (batch.enc_positions[row][inputs] >= len(positions)).all()
    assert saw_caption_target


def test_empty_input_fraction_is_honoured():
    batch_size = 2000
    tokens = make_tokens(batch_size, seed=3)
    views = torch.ones(batch_size, 4, dtype=torch.bool)
    masker = Masker(SPECS, MaskingConfig(input_budget=8, target_budget=8, empty_input_fraction=0.2))
    batch = masker(tokens, views, torch.Generator().manual_seed(4))
    empty = ~batch.enc_valid.any(1)
    assert 0.17 < empty.float().mean() < 0.23
    assert (batch.enc_valid.sum(1)[~empty] == 8).all()
    assert (batch.dec_valid.sum(1) == 8).all()  # empty-input samples keep their full target budget


@pytest.mark.parametrize(("alpha", "low", "high"), [(0.5, 0.25, 0.4), (50.0, 0.0, 0.02)])
def test_dirichlet_concentration_controls_the_spread(alpha, low, high):
    batch_size = 1000
    tokens = make_tokens(batch_size, seed=3)
    views = torch.zeros(batch_size, 4, dtype=torch.bool)
    views[:, :2] = True  # rgb and depth: 16 tokens each, no caps at this budget
    masker = Masker(SPECS, MaskingConfig(input_budget=8, target_budget=8, alphas=[alpha],
                                         empty_input_fraction=0))
    batch = masker(tokens, views, torch.Generator().manual_seed(6))
    rgb_inputs = ((batch.enc_modality == 0) & batch.enc_valid).sum(1)
    # Beta(alpha, alpha) * 8 rounded: P(0 or 8) = (4/pi) asin(1/4) ~ 0.32 at alpha 0.5, ~0 at 50.
    lopsided = ((rgb_inputs == 0) | (rgb_inputs == 8)).float().mean()
    assert low <= lopsided <= high
    assert abs(rgb_inputs.float().mean() - 4) < 0.3


def test_masker_is_deterministic_given_the_generator():
    tokens = make_tokens(16)
    views = torch.ones(16, 4, dtype=torch.bool)
    masker = Masker(SPECS, MaskingConfig(input_budget=10, target_budget=10))
    first = masker(tokens, views, torch.Generator().manual_seed(9))
    second = masker(tokens, views, torch.Generator().manual_seed(9))
    assert torch.equal(first.enc_positions, second.enc_positions)
    assert torch.equal(first.dec_tokens, second.dec_tokens)


def test_allocate_redistributes_what_capped_modalities_cannot_take():
    weights = torch.tensor([[0.9, 0.1, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    capacity = torch.tensor([[3, 20, 5], [2, 2, 2], [10, 10, 10]])
    counts = allocate(weights, capacity, torch.tensor([10, 10, 9]))
    assert counts.tolist()[1] == [2, 2, 2]  # too few tokens: all of them
    assert counts.sum(1).tolist() == [10, 6, 9]
    assert (counts <= capacity).all()
    assert counts[0, 0] == 3
    assert counts[2].tolist() == [2, 3, 4] or counts[2].tolist() == [2, 2, 5]


def test_gamma_sampler_matches_moments():
    concentration = torch.tensor([0.5, 2.0]).repeat(20000, 1)
    samples = sample_gamma(concentration, torch.Generator().manual_seed(0))
    assert torch.allclose(samples.mean(0), torch.tensor([0.5, 2.0], dtype=torch.float64), rtol=0.05)
    assert torch.allclose(samples.var(0), torch.tensor([0.5, 2.0], dtype=torch.float64), rtol=0.1)


def test_full_translation_batch():
    tokens = make_tokens(6)
    present = {"rgb": torch.tensor([True, True, True, True, False, True])}
    batch = full_translation_batch(tokens, present, ["rgb"], "caption", SPECS)
    assert batch.enc_valid.sum(1).tolist() == [16, 16, 16, 16, 0, 16]
    assert torch.equal(batch.dec_valid.sum(1), (tokens["caption"] != 0).sum(1))
    unconditional = full_translation_batch(tokens, None, [], "depth", SPECS)
    assert unconditional.enc_tokens.shape == (6, 0)
    assert unconditional.dec_valid.all() and unconditional.dec_tokens.shape == (6, 16)
    with pytest.raises(ValueError, match="sonar"):
        full_translation_batch(tokens, None, ["sonar"], "depth", SPECS)


def test_budget_larger_than_the_universe_names_the_field():
    with pytest.raises(ConfigError, match="masking.input_budget"):
        Masker(SPECS, MaskingConfig(input_budget=40, target_budget=20), modalities=("rgb", "depth"))
    with pytest.raises(ConfigError, match="masking.alphas"):
        Masker(SPECS, MaskingConfig(alphas=[0.0], input_budget=4, target_budget=4))
