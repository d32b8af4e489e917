"""Tests for span masking (pairless.training.span_masking) and whole sequence targets in the Masker: worked
examples, properties of any layout, the masker's batches and counts, and evaluation of a span-masked model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pairless.batch import TokenSpec
from pairless.config import ConfigError
from pairless.inference.evaluate import model_modalities, scoring_specs
from pairless.inference.translation_batch import translation_batch
from pairless.training import sample_random
from pairless.training.masking import Masker, MaskingConfig, model_specs
from pairless.training.span_masking import corrupt, entries_to_ids, span_layout, truncate_target

PAD, BOS, EOS, S0 = 0, 2, 3, 4  # pairless's text tokenizer: [S_k] = 4 + k
SPECS = {
    "rgb": TokenSpec("rgb", "image", 16, 50, grid=(4, 4)),
    "caption": TokenSpec("caption", "sequence", 10, 40, pad_id=PAD, bos_id=BOS, eos_id=EOS),
}


def test_the_docstring_example():
    # a b c d e [EOS], kept: a, d, e  ->  input a [S_1] d e [S_2], target [S_1] b c [S_2] [EOS] [S_3]
    draws = np.array([0.1, 0.9, 0.9, 0.2, 0.3, 0.95])
    inputs, target = corrupt(6, draws, keep=0.5, input_budget=10, max_spans=14)
    assert inputs.tolist() == [0, -1, 3, 4, -2]
    assert target.tolist() == [-1, 1, 2, -2, 5, -3]
    tokens = np.array([21, 22, 23, 24, 25, EOS])
    assert entries_to_ids(inputs, tokens, S0).tolist() == [21, S0 + 1, 24, 25, S0 + 2]
    assert entries_to_ids(target, tokens, S0).tolist() == [S0 + 1, 22, 23, S0 + 2, EOS, S0 + 3]


def test_no_input_budget_makes_the_whole_sequence_one_span():
    inputs, target = corrupt(4, np.array([0.0, 0.0, 0.0, 0.0]), keep=1.0, input_budget=0, max_spans=14)
    assert inputs.tolist() == []
    assert target.tolist() == [-1, 0, 1, 2, 3, -2]


def test_keep_probability_shrinks_until_the_input_fits():
    draws = np.array([0.1, 0.5, 0.2, 0.6, 0.3, 0.7])
    # keep 0.65 -> a b c d e [S_1] (6 entries); 0.52 -> a b c [S_1] e [S_2]; 0.416 and 0.333 -> a [S_1] c
    # [S_2] e [S_3]; 0.266 -> a [S_1] c [S_2]: 4 entries fit the budget of 5
    inputs, target = corrupt(6, draws, keep=0.65, input_budget=5, max_spans=14)
    assert inputs.tolist() == [0, -1, 2, -2]
    assert target.tolist() == [-1, 1, -2, 3, 4, 5, -3]
    # too many spans for the sentinels: alternating kept / masked needs 3 spans, only 2 allowed
    inputs, target = corrupt(6, np.array([0.1, 0.9, 0.1, 0.9, 0.1, 0.9]), keep=0.5, input_budget=10,
                             max_spans=2)
    assert int((target < 0).sum()) - 1 <= 2


def test_a_long_target_is_cut_at_a_sentinel():
    target = np.array([-1, 1, 2, -2, 5, -3])  # 5 slots
    # choice 0 picks [S_1]: 5 slots from there >= 3, so the window is [S_1] b c [S_2]
    assert truncate_target(target, 3, 0.0).tolist() == [-1, 1, 2, -2]
    # choice 0.99 picks [S_2]: only 2 slots follow it (< 3), so the earliest sentinel whose rest fits: [S_2]
    assert truncate_target(target, 3, 0.99).tolist() == [-2, 5, -3]
    assert truncate_target(target, 5, 0.5).tolist() == target.tolist()
    assert truncate_target(target, 0, 0.5).tolist() == []


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 30), seed=st.integers(0, 10_000), keep=st.floats(0, 1, exclude_max=True),
       input_budget=st.integers(0, 30), target_budget=st.integers(0, 30), max_spans=st.integers(1, 14),
       choice=st.floats(0, 1, exclude_max=True))
def test_any_layout_respects_budgets_and_reconstructs_the_sequence(length, seed, keep, input_budget,
                                                                   target_budget, max_spans, choice):
    draws = np.random.default_rng(seed).random(length)
    inputs, full_target = corrupt(length, draws, keep, input_budget, max_spans)
    assert len(inputs) <= input_budget
    spans = int((inputs < 0).sum()) if input_budget else 1
    assert spans <= max_spans
    # sentinels numbered 1, 2, ... in order, the target's closing one last
    assert (-inputs[inputs < 0]).tolist() == list(range(1, spans + 1))[:len(inputs[inputs < 0])]
    assert (-full_target[full_target < 0]).tolist() == list(range(1, int((full_target < 0).sum()) + 1))
    # every position is kept (in the input) or masked (in the target), exactly once and in order
    kept = inputs[inputs >= 0].tolist()
    masked = full_target[full_target >= 0].tolist()
    if input_budget:
        assert sorted(kept + masked) == list(range(length)) and not set(kept) & set(masked)
        # replacing each sentinel of the input by its span gives the sequence back
        spans_of = {}
        current = None
        for entry in full_target.tolist():
            if entry < 0:
                current = -entry
                spans_of[current] = []
            else:
                spans_of[current].append(entry)
        rebuilt = [p for entry in inputs.tolist() for p in ([entry] if entry >= 0 else spans_of[-entry])]
        assert rebuilt == list(range(length))
    else:
        assert kept == [] and masked == list(range(length))
    inputs, target = span_layout(length, draws, keep, choice, input_budget, target_budget, max_spans)
    assert max(len(target) - 1, 0) <= target_budget
    if len(target):
        assert target[0] < 0  # a window starts at a sentinel, which the decoder only sees
    # counts computed first lay out the same when given back as budgets (the masker relies on it)
    again = span_layout(length, draws, keep, choice, len(inputs), max(len(target) - 1, 0), max_spans)
    assert again[0].tolist() == inputs.tolist() and again[1].tolist() == target.tolist()


def make_tokens(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 50, (batch, 16), generator=generator)
    caption = torch.randint(20, 40, (batch, 10), generator=generator)
    lengths = torch.randint(1, 10, (batch,), generator=generator)
    position = torch.arange(10).unsqueeze(0)
    caption[position == lengths.unsqueeze(1)] = EOS
    caption[position > lengths.unsqueeze(1)] = PAD
    return {"rgb": rgb, "caption": caption}


def caption_slots(batch, row: int, side: str) -> tuple[list[int], list[int], list[int]]:
    """(positions, tokens, previous tokens) of one sample's valid caption slots on one side."""
    modality = getattr(batch, f"{side}_modality")[row]
    valid = getattr(batch, f"{side}_valid")[row] & (modality == 1)
    positions = getattr(batch, f"{side}_positions")[row][valid].tolist()
    tokens = getattr(batch, f"{side}_tokens")[row][valid].tolist()
    previous = batch.dec_input_tokens[row][valid].tolist() if side == "dec" else []
    return positions, tokens, previous


@pytest.mark.parametrize("stream", ["sample", "batch"])
def test_span_masked_batches_hold_sentinels_spans_and_their_counts(stream):
    tokens = make_tokens(48)
    views = torch.ones(48, 2, dtype=torch.bool)
    config = MaskingConfig(input_budget=12, target_budget=10, empty_input_fraction=0.0,
                           sequence_masking="span")
    masker = Masker(SPECS, config)
    keys = sample_random.sample_keys(5, np.arange(48))
    if stream == "sample":
        batch = masker.mask_samples(tokens, views, keys)
        counts = masker.sample_counts(tokens, views, keys)
        lengths = {"caption": (tokens["caption"] != PAD).sum(1).numpy()}
        assert masker.sample_totals_from_lengths(lengths, views, keys).tolist() == \
            (counts[0] + counts[1]).sum(1).tolist()
        # a slice of the batch masks to the same rows
        half = masker.mask_samples({k: v[:24] for k, v in tokens.items()}, views[:24], keys[:24])
        assert torch.equal(half.dec_tokens, batch.dec_tokens[:24])
        assert torch.equal(half.enc_tokens, batch.enc_tokens[:24])
    else:
        batch = masker(tokens, views, torch.Generator().manual_seed(3))
        counts = None
    sentinels = set(range(S0 + 1, S0 + 16))
    saw_span_in_input = False
    for row in range(48):
        words = tokens["caption"][row][tokens["caption"][row] != PAD].tolist()
        enc_positions, enc_tokens, _ = caption_slots(batch, row, "enc")
        dec_positions, dec_tokens, previous = caption_slots(batch, row, "dec")
        assert enc_positions == list(range(len(enc_tokens)))  # positions in the corrupted input
        assert dec_positions == list(range(len(dec_tokens)))
        if counts is not None:
            assert counts[0][row, 1] == len(enc_tokens) and counts[1][row, 1] == len(dec_tokens)
        if dec_tokens:
            assert previous[0] in sentinels  # the target starts after its sentinel
            assert previous[1:] == dec_tokens[:-1]  # predicted left to right
        saw_span_in_input |= any(token in sentinels for token in enc_tokens)
        # the kept input tokens are the sequence's own, in order
        kept = [token for token in enc_tokens if token not in sentinels]
        iterator = iter(words)
        assert all(any(token == word for word in iterator) for token in kept)
    assert saw_span_in_input
    assert int(batch.enc_valid.sum(1).max()) <= 12 and int(batch.dec_valid.sum(1).max()) <= 10


def test_whole_sequence_fraction_predicts_the_caption_from_the_image_alone():
    tokens = make_tokens(16)
    views = torch.ones(16, 2, dtype=torch.bool)
    for sequence_masking, start in (("prefix", BOS), ("span", S0 + 1)):
        config = MaskingConfig(input_budget=16, target_budget=10, empty_input_fraction=0.0,
                               whole_sequence_fraction=1.0, sequence_masking=sequence_masking)
        batch = Masker(SPECS, config).mask_samples(tokens, views, sample_random.sample_keys(1, np.arange(16)))
        for row in range(16):
            words = tokens["caption"][row][tokens["caption"][row] != PAD].tolist()
            assert caption_slots(batch, row, "enc")[1] == []  # no caption token is an input
            _, dec_tokens, previous = caption_slots(batch, row, "dec")
            assert dec_tokens == words and previous[0] == start
            # all 16 rgb tokens are inputs (the whole input budget, not the small-view split)
            assert int((batch.enc_valid[row] & (batch.enc_modality[row] == 0)).sum()) == 16


def test_default_options_leave_the_batch_stream_unchanged():
    tokens = make_tokens(8)
    views = torch.ones(8, 2, dtype=torch.bool)
    plain = Masker(SPECS, MaskingConfig(input_budget=12, target_budget=10))
    explicit = Masker(SPECS, MaskingConfig(input_budget=12, target_budget=10, sequence_masking="prefix",
                                           whole_sequence_fraction=0.0))
    first, second = (m(tokens, views, torch.Generator().manual_seed(4)) for m in (plain, explicit))
    assert torch.equal(first.enc_tokens, second.enc_tokens)
    assert torch.equal(first.dec_tokens, second.dec_tokens)


def test_sentinels_must_fit_the_vocabulary():
    small = {**SPECS, "caption": TokenSpec("caption", "sequence", 10, 12, pad_id=PAD, bos_id=BOS, eos_id=EOS)}
    with pytest.raises(ConfigError, match="first_sentinel_id"):
        Masker(small, MaskingConfig(input_budget=8, target_budget=8, sequence_masking="span"))
    Masker(small, MaskingConfig(input_budget=8, target_budget=8))  # prefix masking needs no sentinel


class _Model:
    """What evaluation reads of a model: its specs and modality order."""

    def __init__(self, specs):
        self.specs = specs
        self.modalities = tuple(specs)


def test_a_span_model_is_scored_on_the_whole_caption_after_its_first_sentinel():
    config = MaskingConfig(sequence_masking="span")
    trained = model_specs(SPECS, config)
    assert trained["caption"].bos_id == S0 + 1 and trained["rgb"] == SPECS["rgb"]
    model = _Model(trained)
    assert model_modalities(model, SPECS, ["rgb", "caption"]) == ("rgb", "caption")  # same tokenizers
    tokens = make_tokens(4)
    batch = translation_batch(tokens, ["rgb"], "caption", scoring_specs(model, SPECS), model.modalities)
    assert batch.dec_input_tokens[:, 0].tolist() == [S0 + 1] * 4
    prefix_model = _Model(model_specs(SPECS, MaskingConfig()))
    batch = translation_batch(tokens, ["rgb"], "caption", scoring_specs(prefix_model, SPECS),
                              model.modalities)
    assert batch.dec_input_tokens[:, 0].tolist() == [BOS] * 4
    other = {**SPECS, "caption": TokenSpec("caption", "sequence", 10, 41, pad_id=PAD, bos_id=BOS, eos_id=EOS)}
    with pytest.raises(ValueError, match="differs"):
        model_modalities(_Model(other), SPECS, ["caption"])


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("stream", ["sample", "batch"])
def test_a_span_masked_run_trains_counts_its_tokens_and_is_evaluated_after_its_sentinel(tmp_path, stream):
    from train_helpers import make_shards, tiny_config_data

    from pairless.config import validate
    from pairless.data.shards import open_shards
    from pairless.inference.evaluate import translation_ce
    from pairless.inference.generate import ar_generate, schedule_preset
    from pairless.model import load_model
    from pairless.training.checkpoint import MODEL_FILE
    from pairless.training.train import TrainConfig, train
    from pairless.utils.storage import read_json

    shards = make_shards(tmp_path / "shards")
    # the test shards' caption ids are 3..11: sentinels from 20 keep them apart (and test the option)
    masking = dict(input_budget=12, target_budget=12, sequence_masking="span", first_sentinel_id=20,
                   whole_sequence_fraction=0.3)
    config = validate(TrainConfig, tiny_config_data(shards, tmp_path / "run", masking=masking,
                                                    total_tokens=16 * 24 * 4, masking_stream=stream))
    train(config)
    summary = read_json(tmp_path / "run" / "COMPLETE.json")
    assert summary["tokens"] == sum(summary["tokens_per_modality"].values()) > 0
    assert summary["tokens_per_modality"].get("caption", 0) > 0
    model = load_model(tmp_path / "run" / MODEL_FILE)
    assert model.specs["caption"].bos_id == 21  # [S_1]
    data = open_shards(shards, "val")
    result = translation_ce(model, data, ["rgb"], "caption", num_samples=8)
    assert result["num_tokens"] == 8 * 8 and result["ce"] > 0  # 7 words and EOS per caption
    tokens = {"rgb": torch.from_numpy(np.array(data.tokens["rgb"][:2])).long()}
    ids = ar_generate(model, tokens, ["rgb"], "caption", model.specs, model.modalities,
                      schedule_preset("ar-caption"), torch.Generator().manual_seed(0))
    assert ids.shape == (2, 10) and not bool((ids == 21).any())  # [S_1] is never generated
