"""The caption recipe's sequence masking: its runs predict a share of sequences whole; other recipes' runs
(and so their cache keys) are untouched."""

from __future__ import annotations

from pathlib import Path

from pairless.experiments import stages
from pairless.experiments.recipes import CAPTION_MASKING, caption, visual_pairs


def test_the_caption_recipe_trains_with_whole_sequence_targets_and_no_other_recipe_does():
    assert CAPTION_MASKING
    for run in caption("tiny").runs:
        config = stages.train_config(run, Path("shards"), Path("out"))
        assert config.masking.whole_sequence_fraction == 0.8
        assert config.masking.sequence_masking == "prefix"
    for run in visual_pairs("tiny").runs:
        config = stages.train_config(run, Path("shards"), Path("out"))
        assert config.masking.whole_sequence_fraction == 0.0
        assert "whole_sequence_fraction" not in stages.run_key_fields(run).get("masking", {})
