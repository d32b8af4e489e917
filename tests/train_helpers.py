"""Small token shards and configs for the training tests (tests/test_train*.py, test_checkpoint*, test_ddp*).

The shards have learnable structure (depth and normal are functions of rgb,
captions have a fixed EOS position) so that a tiny model's loss falls in a
few dozen steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairless.batch import TokenSpec
from pairless.data.shards import ShardSplit, write_shards

SPECS = {
    "rgb": TokenSpec("rgb", "image", num_tokens=16, vocab_size=32, grid=(4, 4)),
    "depth": TokenSpec("depth", "image", num_tokens=16, vocab_size=24, grid=(4, 4)),
    "normal": TokenSpec("normal", "image", num_tokens=16, vocab_size=24, grid=(4, 4)),
    "caption": TokenSpec("caption", "sequence", num_tokens=10, vocab_size=40, pad_id=0, bos_id=1, eos_id=2),
}


def _split(count: int, seed: int) -> ShardSplit:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 8, (count, 16))
    caption = rng.integers(3, 12, (count, 10))
    caption[:, 7] = 2  # EOS, then padding
    caption[:, 8:] = 0
    tokens = {"rgb": base * 4, "depth": base * 3, "normal": base + 1, "caption": caption}
    present = {name: np.ones(count, dtype=bool) for name in SPECS}
    return ShardSplit([f"sample{index:04d}" for index in range(count)], tokens, present)


def make_shards(root: Path, count: int = 96) -> Path:
    """Write train/val token shards with the layout of `pairless tokenize`."""
    return write_shards(root, {"train": _split(count, 0), "val": _split(16, 1)}, SPECS,
                        {"note": "test shards"})


def tiny_config_data(shards: Path, out: Path, **changes) -> dict:
    """A TrainConfig (as a dict) for a model small enough to take a step in milliseconds, fp32 on CPU."""
    data = dict(
        shards=str(shards), out=str(out), batch_size=16, total_tokens=16 * 24 * 12,
        model=dict(dim=32, heads=2, encoder_layers=1, decoder_layers=1),
        masking=dict(input_budget=12, target_budget=12),
        fragment=dict(withheld=[["rgb", "depth"]]),
        base_lr=0.05, warmup_fraction=0.1, precision="fp32", device="cpu", log_every=1, checkpoint_every=1000,
    )
    data.update(changes)
    return data
