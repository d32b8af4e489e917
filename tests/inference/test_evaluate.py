"""Tests of translation cross-entropy (pairless.inference.evaluate) against hand computations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from toy_translator import FixedLogits, ToyTranslator, toy_specs
from translation_oracle import full_translation_batch

from pairless.inference.evaluate import format_table, translation_ce
from pairless.modalities import parse_direction
from pairless.model import FourM, ModelConfig

SPECS = toy_specs()
NAMES = tuple(SPECS)


def fake_shards(num: int, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    tokens = {name: rng.integers(3, spec.vocab_size, (num, spec.num_tokens)).astype(np.int32)
              for name, spec in SPECS.items()}
    lengths = rng.integers(1, SPECS["caption"].num_tokens + 1, num)
    for row, used in enumerate(lengths):
        tokens["caption"][row, used - 1] = SPECS["caption"].eos_id
        tokens["caption"][row, used:] = SPECS["caption"].pad_id
    present = {name: rng.random(num) < 0.8 for name in SPECS}
    return SimpleNamespace(specs=SPECS, tokens=tokens, present=present, ids=[str(i) for i in range(num)])


def fixed_model(seed: int = 0) -> FixedLogits:
    generator = torch.Generator().manual_seed(seed)
    shape = (len(SPECS), max(s.num_tokens for s in SPECS.values()), max(s.vocab_size for s in SPECS.values()))
    return FixedLogits(torch.randn(shape, generator=generator) * 2, torch.randn(shape, generator=generator),
                       NAMES)


def hand_ce(table: torch.Tensor, shards, dst: str, rows: np.ndarray) -> tuple[float, int]:
    spec = SPECS[dst]
    index = NAMES.index(dst)
    total, count = 0.0, 0
    for row in rows:
        for position, token in enumerate(shards.tokens[dst][row]):
            if spec.kind == "sequence" and token == spec.pad_id:
                continue
            logits = table[index, position, : spec.vocab_size].double()
            total += float(torch.logsumexp(logits, 0) - logits[token])
            count += 1
    return total / count, count


@pytest.mark.parametrize("src,dst", [(["rgb"], "depth"), (["rgb", "depth"], "caption"), (["caption"], "rgb")])
def test_ce_equals_the_hand_computation(src, dst):
    shards = fake_shards(60)
    model = fixed_model()
    result = translation_ce(model, shards, src, dst, num_samples=20, batch_size=6)
    has_all = np.logical_and.reduce([shards.present[name] for name in [*src, dst]])
    rows = np.flatnonzero(has_all)[:20]  # the first eligible samples, in shard order
    expected, count = hand_ce(model.conditional, shards, dst, rows)
    expected_unconditional, _ = hand_ce(model.unconditional, shards, dst, rows)
    assert result["num_samples"] == len(rows) == 20
    assert result["num_tokens"] == count
    assert result["ce"] == pytest.approx(expected, rel=1e-5)
    assert result["ce_unconditional"] == pytest.approx(expected_unconditional, rel=1e-5)


def test_batch_size_does_not_change_the_result():
    shards = fake_shards(30, seed=1)
    model = ToyTranslator(SPECS, seed=2)
    one = translation_ce(model, shards, ["rgb", "caption"], "depth", num_samples=25, batch_size=4)
    other = translation_ce(model, shards, ["rgb", "caption"], "depth", num_samples=25, batch_size=25)
    assert one["ce"] == pytest.approx(other["ce"], rel=1e-6)
    assert one["ce"] != pytest.approx(one["ce_unconditional"], rel=1e-3)  # the input is really used


def test_uses_fewer_samples_when_the_split_is_small():
    shards = fake_shards(10, seed=3)
    result = translation_ce(fixed_model(), shards, ["rgb"], "depth", num_samples=2500, batch_size=4)
    assert result["num_samples"] == int(np.sum(shards.present["rgb"] & shards.present["depth"]))


def test_untrained_model_unconditional_ce_is_close_to_log_vocab():
    model = ToyTranslator(SPECS, seed=0, scale=0.02)
    result = translation_ce(model, fake_shards(16), ["rgb"], "depth", num_samples=16, batch_size=8)
    assert result["ce_unconditional"] == pytest.approx(math.log(SPECS["depth"].vocab_size), abs=0.05)


def test_untrained_fourm_unconditional_ce_is_close_to_log_vocab():
    model = FourM(ModelConfig(dim=32, encoder_layers=1, decoder_layers=1, heads=2), SPECS)
    result = translation_ce(model, fake_shards(16), ["rgb"], "caption", num_samples=16, batch_size=8)
    assert result["ce_unconditional"] == pytest.approx(math.log(SPECS["caption"].vocab_size), abs=0.1)
    assert result["ce"] == pytest.approx(math.log(SPECS["caption"].vocab_size), abs=0.1)


def test_errors_name_the_problem():
    shards = fake_shards(8)
    with pytest.raises(ValueError, match="'normal'"):
        translation_ce(fixed_model(), shards, ["normal"], "depth", num_samples=4)
    shards.present["depth"][:] = False
    with pytest.raises(ValueError, match="no sample"):
        translation_ce(fixed_model(), shards, ["rgb"], "depth", num_samples=4)
    with pytest.raises(ValueError, match="expected src"):
        parse_direction("rgb-depth")
    assert parse_direction("rgb+normal:depth") == (["rgb", "normal"], "depth")


def test_table_lists_every_direction():
    table = format_table({"rgb:depth": {"ce": 1.5, "ce_unconditional": 2.0, "num_samples": 3,
                                        "num_tokens": 48}})
    assert "rgb:depth" in table and "1.5000" in table and "48" in table


def test_translation_batch_agrees_with_the_masking_module():
    from pairless.inference.translation_batch import translation_batch

    torch.manual_seed(0)
    model = FourM(ModelConfig(dim=32, encoder_layers=1, decoder_layers=1, heads=2), SPECS).eval()
    shards = fake_shards(6, seed=4)
    tokens = {name: torch.from_numpy(shards.tokens[name]).long() for name in SPECS}

    def ce(batch):
        with torch.no_grad():
            logits = model.logits(batch).log_softmax(-1)
        picked = logits.gather(-1, batch.dec_tokens[..., None])[..., 0]
        return float(-(picked * batch.dec_valid).sum() / batch.dec_valid.sum())

    for src, dst in [(["rgb", "caption"], "depth"), (["depth"], "caption"), ([], "rgb")]:
        ours = translation_batch(tokens, src, dst, SPECS, model.modalities)
        theirs = full_translation_batch(tokens, None, src, dst, SPECS, model.modalities)
        assert int(ours.enc_valid.sum()) == int(theirs.enc_valid.sum())
        assert int(ours.dec_valid.sum()) == int(theirs.dec_valid.sum())
        assert ce(ours) == pytest.approx(ce(theirs), rel=1e-5)


def test_unconditional_pass_is_shared_between_directions_with_the_same_samples():
    shards = fake_shards(40, seed=5)
    for name in SPECS:
        shards.present[name][:] = True
    model = fixed_model()
    cache: dict = {}
    first = translation_ce(model, shards, ["rgb"], "depth", 10, 4, cache)
    second = translation_ce(model, shards, ["caption"], "depth", 10, 4, cache)
    assert len(cache) == 1
    assert second["ce_unconditional"] == first["ce_unconditional"]
    assert second == translation_ce(model, shards, ["caption"], "depth", 10, 4)  # same as computed afresh
    translation_ce(model, shards, ["rgb"], "depth", 12, 4, cache)  # other samples: a new entry
    assert len(cache) == 2
