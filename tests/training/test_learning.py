"""A regression guard for learning itself: with the default recipe, a small model learns a translation.

depth is a per-token function of rgb in these shards (tests/train_helpers.py), so a model that uses its
input predicts depth from rgb almost exactly, while with no input it can only guess (~log 8 nats). With
the token embeddings initialised at std 0.02 against sin-cos positions of amplitude 1 (the default until
2026-12), the same 400 steps ended at a CE ratio of 0.68 (measured 2026-12-03), far from the copy the
data allows; with std 1.0 it ends below 0.3. This test fails when a change of the defaults brings that back.
"""

from __future__ import annotations

from train_helpers import make_shards

from pairless.data.shards import open_shards
from pairless.inference.evaluate import translation_ce
from pairless.model import ModelConfig, load_model
from pairless.training.config import TrainConfig
from pairless.training.masking import MaskingConfig
from pairless.training.train import train


def test_a_small_model_learns_a_deterministic_translation_with_the_default_recipe(tmp_path, one_thread):
    shards = make_shards(tmp_path / "shards", count=512)
    steps, batch = 400, 64
    config = TrainConfig(
        shards=shards, out=tmp_path / "run", batch_size=batch,
        total_tokens=batch * 32 * steps,
        # every default that shapes learning (init scales, learning rate, schedule, alphas) is the recipe's
        model=ModelConfig(dim=64, heads=2, encoder_layers=2, decoder_layers=2),
        masking=MaskingConfig(input_budget=16, target_budget=16),
        fragment={"universe": ["rgb", "depth"]}, log_every=100, checkpoint_every=10_000,
    )
    run = train(config)
    result = translation_ce(load_model(run / "model.safetensors"), open_shards(shards, "val"), ["rgb"],
                            "depth",
                            num_samples=16, threads=1)
    assert result["ce_unconditional"] > 1.5  # no input: close to a uniform guess over 8 values
    assert result["ce"] < 0.3 * result["ce_unconditional"], result
