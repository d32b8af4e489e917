"""Tests of pairless.inference.decoded_metrics against hand computations and torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.image import StructuralSimilarityIndexMeasure

from pairless.inference.decoded_metrics import average_precision, score
from pairless.world.det import det_to_text


def test_depth_metrics_by_hand():
    target = np.array([[[1.0, 2.0], [4.0, 0.0]]])  # the 0 pixel has no depth and is ignored
    prediction = np.array([[[1.1, 3.0], [4.0, 9.0]]])
    result = score("depth", prediction, target)
    assert result["abs_rel"] == pytest.approx((0.1 / 1 + 1.0 / 2 + 0.0) / 3)
    assert result["rmse"] == pytest.approx(math.sqrt((0.01 + 1.0 + 0.0) / 3))
    assert result["delta_1.25"] == pytest.approx(2 / 3)  # 1.1 and 4.0 are within 1.25x, 3.0 vs 2.0 is not


def test_normal_angular_error_by_hand():
    def encode(vectors):
        return np.round((np.asarray(vectors, dtype=np.float64) + 1) / 2 * 255).astype(np.uint8)

    target = encode([[[[0, 0, 1], [0, 0, 1]]]])
    prediction = encode([[[[0, 0, 1], [1, 0, 0]]]])  # one exact pixel, one at 90 degrees
    result = score("normal", prediction, target)
    assert result["angular_error"] == pytest.approx(45.0, abs=0.5)
    assert result["within_11.25"] == pytest.approx(0.5)


def test_semseg_miou_by_hand():
    target = np.array([[[0, 0, 1, 1]]], dtype=np.uint8)
    prediction = np.array([[[0, 1, 1, 1]]], dtype=np.uint8)
    result = score("semseg", prediction, target)
    # class 0: 1 / 2; class 1: 2 / 3
    assert result["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["pixel_accuracy"] == pytest.approx(0.75)


def test_rgb_psnr_by_hand_and_ssim_against_torchmetrics():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    prediction = np.clip(target.astype(int) + rng.integers(-20, 21, target.shape), 0, 255).astype(np.uint8)
    result = score("rgb", prediction, target)
    mse = ((prediction.astype(float) - target) ** 2).reshape(3, -1).mean(1)
    assert result["psnr"] == pytest.approx(float(np.mean(10 * np.log10(255.0**2 / mse))), rel=1e-6)
    module = StructuralSimilarityIndexMeasure(data_range=255.0, kernel_size=11)
    expected = module(torch.tensor(prediction, dtype=torch.float64).permute(0, 3, 1, 2),
                      torch.tensor(target, dtype=torch.float64).permute(0, 3, 1, 2))
    assert result["ssim"] == pytest.approx(float(expected), rel=1e-6)
    assert score("rgb", target, target)["ssim"] == pytest.approx(1.0)


def test_average_precision_by_hand():
    a1, a2, a3 = (0, 0, 10, 10), (20, 20, 30, 30), (0, 0, 10, 10)
    targets = [[("cube", a1), ("cube", a2), ("cone", (5, 5, 9, 9))], [("cube", a3)]]
    predictions = [
        [("cube", (0, 0, 10, 9), 0.9),   # rank 1: hit a1 (IoU 0.9)
         ("cube", (0, 0, 10, 10), 0.8),  # rank 2: a1 again -> duplicate, a false positive
         ("cube", (50, 50, 60, 60), 0.6)],  # rank 4: no overlap
        [("cube", (1, 0, 10, 10), 0.7)],  # rank 3: hit a3
    ]
    result = average_precision(predictions, targets, 0.5)
    # cube, 3 true boxes; ranks hit, miss, hit, miss -> precision 1, 1/2, 2/3, 1/2, recall 1/3, 1/3, 2/3, 2/3.
    # COCO's 101 recall points: the precision envelope is 1 at recall 0.00..0.33 (34 points), 2/3 at
    # 0.34..0.66 (33 points), 0 beyond: AP = (34 + 33 * 2/3) / 101 = 56/101; cone has no prediction -> 0.
    assert result["per_class"]["cube"] == pytest.approx(56 / 101)
    assert result["per_class"]["cone"] == 0.0
    assert result["map"] == pytest.approx(28 / 101)


def test_average_precision_without_scores_ranks_in_order():
    targets = [[("sphere", (0, 0, 4, 4))]]
    assert average_precision([[("sphere", (9, 9, 12, 12)), ("sphere", (0, 0, 4, 4))]],
                             targets)["map"] == pytest.approx(0.5)
    assert average_precision([[("sphere", (0, 0, 4, 4)), ("sphere", (9, 9, 12, 12))]],
                             targets)["map"] == pytest.approx(1.0)


def test_det_text_scoring():
    truth = [det_to_text([("cube", (2, 3, 10, 12)), ("sphere", (15, 15, 25, 30))], 32)]
    assert score("det", truth, truth)["map_50"] == pytest.approx(1.0)
    half = [det_to_text([("cube", (2, 3, 10, 12))], 32)]
    assert score("det", half, truth)["map_50"] == pytest.approx(0.5)
    assert score("det", ["garbage text"], truth)["map_50"] == 0.0


def test_det_scoring_reads_ml4m_binned_boxes_with_class_names_of_several_words():
    # ml-4m's form: coordinate tokens v0=0 .. v3=999 (1000 bins) and COCO class names as written
    truth = ["v0=20 v1=30 v2=400 v3=500 teddy bear v0=500 v1=500 v2=999 v3=999 baseball bat"]
    assert score("det", truth, truth) == {"map_50": pytest.approx(1.0), "parsed_boxes_per_sample": 2.0}
    # a box off by a few bins of 1000 still overlaps; another class that shares a first word does not count
    near = ["v0=22 v1=30 v2=400 v3=505 teddy bear v0=500 v1=500 v2=999 v3=999 baseball glove"]
    assert score("det", near, truth)["map_50"] == pytest.approx(0.5)


def test_det_scoring_through_the_ml4m_tokenizer_round_trip():
    from ml4m_layout_helpers import build_vocabulary

    from pairless.tokenizers.ml4m_text import Ml4mTextConfig, Ml4mTextTokenizer

    tokenizer = Ml4mTextTokenizer(Ml4mTextConfig(modality="det", num_tokens=16, form="det"),
                                  build_vocabulary(bins=1000, size=5000))
    record = {"instances": [{"boxes": [0.1, 0.2, 0.6, 0.9], "class_name": "red cube", "score": 0.9},
                            {"boxes": [0.5, 0.1, 0.95, 0.4], "class_name": "sphere", "score": 0.8}]}
    decoded = tokenizer.decode(tokenizer.encode([record]))
    assert decoded == ["v0=100 v1=200 v2=599 v3=899 red cube v0=500 v1=100 v2=949 v3=400 sphere"]
    assert score("det", decoded, decoded)["parsed_boxes_per_sample"] == 2.0


def test_caption_bleu_and_fact_accuracy():
    texts = ["there are two objects . there is a large red sphere", "a picture of two objects ."]
    result = score("caption", texts, texts)
    assert result["bleu4"] == pytest.approx(1.0)
    assert score("caption", ["one two"], ["three four"])["bleu4"] == 0.0
    objects = [{"size": "large", "colour": "red", "shape": "sphere", "screen_center": [8, 8],
                "center_depth": 3.0},
               {"size": "small", "colour": "blue", "shape": "cube", "screen_center": [20, 8],
                "center_depth": 4.0}]
    scene = {"objects": objects, "image_size": 32}
    scored = score("caption", ["there are two objects.", "there are three objects."], texts, [scene, scene])
    assert scored["fact_accuracy"] == pytest.approx(0.5)


def test_embed_cosine_and_length_mismatch():
    assert score("embed", np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]]))["cosine"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        score("embed", np.ones((2, 2)), np.ones((1, 2)))
