"""Tests of the object / background split of translation CE (pairless.inference.regions)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from toy_translator import FixedLogits

from pairless.batch import TokenSpec
from pairless.inference.evaluate import translation_ce
from pairless.inference.regions import (
    ContentWordSplit,
    format_regions,
    object_patches,
    region_ce,
    region_directions,
)
from pairless.modalities import SEMSEG_CLASSES

SPECS = {
    "rgb": TokenSpec("rgb", "image", num_tokens=16, vocab_size=32, grid=(4, 4)),
    "depth": TokenSpec("depth", "image", num_tokens=16, vocab_size=24, grid=(4, 4)),
    "semseg": TokenSpec("semseg", "image", num_tokens=16, vocab_size=8, grid=(4, 4)),
    "caption": TokenSpec("caption", "sequence", num_tokens=10, vocab_size=40, pad_id=0, bos_id=1, eos_id=2),
}
NAMES = tuple(SPECS)
CUBE = SEMSEG_CLASSES.index("cube")


class OddTokensAreObjects:
    """A stand-in semseg tokenizer: token t decodes to a 2x2 patch of a cube if t is odd, else floor."""

    def decode(self, ids):
        ids = np.asarray(ids).reshape(-1, 4, 4)
        patch = np.where(ids % 2 == 1, CUBE, SEMSEG_CLASSES.index("floor")).astype(np.uint8)
        return patch.repeat(2, axis=1).repeat(2, axis=2)  # (B, 8, 8)


def shards(num: int = 40, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    tokens = {name: rng.integers(3, spec.vocab_size, (num, spec.num_tokens)).astype(np.int32)
              for name, spec in SPECS.items()}
    present = {name: np.ones(num, dtype=bool) for name in SPECS}
    present["semseg"][::5] = False  # samples without the mask modality are not used
    return SimpleNamespace(specs=SPECS, tokens=tokens, present=present)


def model(seed: int = 0) -> FixedLogits:
    generator = torch.Generator().manual_seed(seed)
    shape = (len(NAMES), 16, 40)
    return FixedLogits(torch.randn(shape, generator=generator) * 2, torch.randn(shape, generator=generator),
                       NAMES)


def nll(table: torch.Tensor, dst: str, token: int, position: int) -> float:
    logits = table[NAMES.index(dst), position, : SPECS[dst].vocab_size].double()
    return float(torch.logsumexp(logits, 0) - logits[token])


def test_object_patches_marks_patches_with_any_object_pixel():
    classes = np.zeros((1, 4, 4), dtype=np.uint8)  # sky
    classes[0, 0, 3] = CUBE  # one pixel of the top-right 2x2 patch
    classes[0, 2:, :2] = SEMSEG_CLASSES.index("floor")
    assert object_patches(classes, 2).tolist() == [[False, True, False, False]]
    with pytest.raises(ValueError, match="divisible by 3"):
        object_patches(classes, 3)


@pytest.mark.parametrize("src", [["rgb"], ["depth", "caption"]])
def test_region_ce_equals_the_hand_computation_and_splits_the_total(src):
    data, fixed = shards(), model()
    result = region_ce(fixed, data, OddTokensAreObjects(), src, "depth", num_samples=30, batch_size=7)
    rows = np.flatnonzero(data.present["semseg"])[:30]
    expected = {"objects": [0.0, 0.0, 0], "background": [0.0, 0.0, 0]}
    for row in rows:
        for position in range(16):
            group = "objects" if data.tokens["semseg"][row, position] % 2 == 1 else "background"
            token = data.tokens["depth"][row, position]
            expected[group][0] += nll(fixed.conditional, "depth", token, position)
            expected[group][1] += nll(fixed.unconditional, "depth", token, position)
            expected[group][2] += 1
    assert result["num_samples"] == len(rows) == 30
    for group, (ce, unconditional, count) in expected.items():
        assert result[group]["num_tokens"] == count
        assert result[group]["ce"] == pytest.approx(ce / count, rel=1e-5)
        assert result[group]["ce_unconditional"] == pytest.approx(unconditional / count, rel=1e-5)
        assert result[group]["ratio"] == pytest.approx(ce / unconditional, rel=1e-5)
    assert result["focus_fraction"] == pytest.approx(expected["objects"][2] / (30 * 16))
    assert result["groups"] == ["objects", "background"]
    # the two groups, weighted by their token counts, are the whole-modality CE on the same samples
    data.present["semseg"][:] = True
    data.present["depth"][np.setdiff1d(np.arange(40), rows)] = False
    whole = translation_ce(fixed, data, src, "depth", num_samples=30)
    split = region_ce(fixed, data, OddTokensAreObjects(), src, "depth", num_samples=30)
    mixed = sum(split[g]["ce"] * split[g]["num_tokens"] for g in ("objects", "background")) / (30 * 16)
    assert whole["ce"] == pytest.approx(mixed, rel=1e-5)


def test_errors_name_the_problem():
    data = shards()
    with pytest.raises(ValueError, match="'caption' is a sequence modality"):
        region_ce(model(), data, OddTokensAreObjects(), ["rgb"], "caption")
    del data.specs  # a copy without semseg
    data.specs = {name: spec for name, spec in SPECS.items() if name != "semseg"}
    with pytest.raises(ValueError, match="needs 'semseg' tokens"):
        region_ce(model(), data, OddTokensAreObjects(), ["rgb"], "depth")


def test_region_directions_and_table():
    assert region_directions(["rgb:depth", "depth:caption", "caption:rgb"], SPECS) == [
        "rgb:depth", "depth:caption", "caption:rgb"]
    no_semseg = {k: v for k, v in SPECS.items() if k != "semseg"}
    assert region_directions(["rgb:depth", "rgb:caption"], no_semseg) == ["rgb:caption"]
    result = region_ce(model(), shards(), OddTokensAreObjects(), ["rgb"], "depth", num_samples=10)
    table = format_regions({"rgb:depth": result})
    assert "rgb:depth" in table and f"{result['objects']['ratio']:.2f}" in table


class FakeText:
    """A stand-in caption tokenizer: its vocabulary maps a few world words to ids."""

    class _Vocabulary:
        def get_vocab(self):
            return {"▁red": 5, "▁cube": 6, "three": 7, "▁the": 8, "▁of": 9, "##red": 10}

    tokenizer = _Vocabulary()


def test_caption_split_scores_content_words_apart_from_template_and_never_padding():
    data, fixed = shards(), model()
    pad = SPECS["caption"].pad_id
    data.tokens["caption"][:, 7:] = pad  # the last three positions are padding
    split = ContentWordSplit(FakeText())
    assert split.content_ids.tolist() == [5, 6, 7]  # red, cube, three; not "the", "of", "##s"
    result = region_ce(fixed, data, split, ["rgb"], "caption", num_samples=20, batch_size=6)
    rows = np.flatnonzero(data.present["rgb"] & data.present["caption"])[:20]
    expected = {"content": [0.0, 0], "template": [0.0, 0]}
    for row in rows:
        for position, token in enumerate(data.tokens["caption"][row]):
            if token == pad:
                continue
            group = "content" if token in (5, 6, 7) else "template"
            expected[group][0] += nll(fixed.conditional, "caption", token, position)
            expected[group][1] += 1
    assert result["groups"] == ["content", "template"]
    for group, (total, count) in expected.items():
        assert result[group]["num_tokens"] == count > 0
        assert result[group]["ce"] == pytest.approx(total / count, rel=1e-5)
    assert result["focus_fraction"] == pytest.approx(expected["content"][1] / (len(rows) * 7))
