"""pairless.metrics: values checked against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from pairless import metrics


def test_psnr_of_a_known_error():
    target = np.zeros((2, 4, 4, 3), np.uint8)
    prediction = target.copy()
    prediction[0] += 1  # MSE 1 -> 48.13 dB; the second image is exact and clamped, not infinite
    value = metrics.psnr(prediction, target)
    expected = (10 * np.log10(255**2 / 1.0) + 10 * np.log10(255**2 / 1e-10)) / 2
    assert value == pytest.approx(expected)


def test_depth_errors():
    target = np.array([[1.0, 2.0], [4.0, 0.0]])
    prediction = np.array([[1.1, 1.8], [4.0, 3.0]])
    assert metrics.abs_rel(prediction, target) == pytest.approx((0.1 + 0.1 + 0.0) / 3)  # 0 = invalid
    assert metrics.rmse(prediction, target) == pytest.approx(np.sqrt((0.01 + 0.04) / 3))


def test_angular_error_ignores_pixels_without_a_normal():
    target = np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    prediction = np.array([[[0.0, 0.0, 2.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])
    assert metrics.angular_error_degrees(prediction, target) == pytest.approx(45.0)
    as_uint8 = np.round((target + 1) / 2 * 255).astype(np.uint8)
    assert metrics.angular_error_degrees(as_uint8, as_uint8) < 1e-6


def test_miou_and_pixel_accuracy():
    target = np.array([0, 0, 1, 1, 2])
    prediction = np.array([0, 1, 1, 1, 2])
    # class 0: 1/2, class 1: 2/3, class 2: 1/1; class 3 never occurs and is not averaged
    assert metrics.miou(prediction, target, num_classes=4) == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert metrics.pixel_accuracy(prediction, target) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="outside"):
        metrics.miou(np.array([5]), np.array([0]), num_classes=4)


def test_cosine_and_exact_match():
    assert metrics.cosine_similarity(np.array([[1.0, 0.0], [1.0, 1.0]]),
                                     np.array([[2.0, 0.0], [-1.0, -1.0]])) \
        == pytest.approx(0.0)
    assert metrics.exact_match_rate(["a b", "c"], ["a b", "c."]) == 0.5
