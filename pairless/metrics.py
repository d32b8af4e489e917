"""Natural-form quality metrics shared by the tokenizer report and evaluation.

Every function takes numpy arrays in the registry's natural form (or floats
derived from it) and returns a Python float, so callers can put the result
straight into JSON. Batches are reduced over every sample and pixel.
"""

from __future__ import annotations

import numpy as np

# The quality bar (reports and ``pairless eval``): a direction whose CE is above LEARNED_RATIO of the run's
# own no-input CE has learned little of it, and a recovered fraction of the gap would be noise (DESIGN.md,
# "Quality bar"); above WORSE_RATIO the input makes the model worse than no input at all, and the reports
# say so in those words (a CE within 1% of no input is the noise of a few hundred samples).
LEARNED_RATIO = 0.9
WORSE_RATIO = 1.01


def psnr(prediction: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB, averaged per image (not over the pooled MSE)."""
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    _check_same_shape(prediction, target, "psnr")
    per_image = ((prediction - target) ** 2).reshape(len(target), -1).mean(axis=1)
    # A perfect image would be infinite; clamp so one exact sample cannot dominate the mean.
    per_image = np.maximum(per_image, 1e-10)
    return float(np.mean(10.0 * np.log10(data_range**2 / per_image)))


def abs_rel(prediction: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean absolute relative error |p - t| / t over valid pixels (t > 0 by default)."""
    prediction, target, valid = _masked(prediction, target, valid, "abs_rel")
    return float(np.mean(np.abs(prediction[valid] - target[valid]) / target[valid]))


def rmse(prediction: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Root mean squared error over valid pixels (t > 0 by default)."""
    prediction, target, valid = _masked(prediction, target, valid, "rmse")
    return float(np.sqrt(np.mean((prediction[valid] - target[valid]) ** 2)))


def normals_from_uint8(values: np.ndarray) -> np.ndarray:
    """Decode uint8 normals ``(n + 1) / 2 * 255`` back to float vectors in [-1, 1] (not renormalised)."""
    return np.asarray(values, dtype=np.float64) / 127.5 - 1.0


def angular_error_degrees(prediction: np.ndarray, target: np.ndarray, min_norm: float = 0.5) -> float:
    """Mean angle in degrees between normal vectors ``[..., 3]``.

    uint8 inputs are decoded first. Pixels whose target vector is shorter than
    ``min_norm`` carry no normal (e.g. background) and are ignored.
    """
    if np.asarray(prediction).dtype == np.uint8:
        prediction = normals_from_uint8(prediction)
    if np.asarray(target).dtype == np.uint8:
        target = normals_from_uint8(target)
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    _check_same_shape(prediction, target, "angular_error_degrees")
    target_norm = np.linalg.norm(target, axis=-1)
    valid = target_norm >= min_norm
    if not valid.any():
        raise ValueError("angular_error_degrees: no target pixel has a normal (all vectors are ~0)")
    unit_target = target[valid] / target_norm[valid, None]
    unit_prediction = prediction[valid] / np.maximum(np.linalg.norm(prediction[valid], axis=-1,
                                                                    keepdims=True), 1e-12)
    cosine = np.clip(np.sum(unit_target * unit_prediction, axis=-1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)).mean())


def confusion_matrix(prediction: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` counts, rows = target class, columns = predicted class."""
    prediction = np.asarray(prediction).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    if prediction.shape != target.shape:
        raise ValueError(f"confusion_matrix: prediction has {prediction.size} labels, target {target.size}")
    for name, labels in (("prediction", prediction), ("target", target)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"confusion_matrix: {name} has class ids outside [0, {num_classes})")
    return np.bincount(target * num_classes + prediction, minlength=num_classes**2).reshape(num_classes,
        num_classes)


def miou(prediction: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    """Mean intersection over union over the classes that occur in target or prediction."""
    matrix = confusion_matrix(prediction, target, num_classes)
    intersection = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - np.diag(matrix)
    present = union > 0
    return float(np.mean(intersection[present] / union[present]))


def pixel_accuracy(prediction: np.ndarray, target: np.ndarray) -> float:
    """Fraction of pixels whose label matches."""
    prediction = np.asarray(prediction)
    target = np.asarray(target)
    _check_same_shape(prediction, target, "pixel_accuracy")
    return float(np.mean(prediction == target))


def cosine_similarity(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean cosine similarity between rows of ``[N, D]`` arrays."""
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    _check_same_shape(prediction, target, "cosine_similarity")
    numerator = np.sum(prediction * target, axis=-1)
    denominator = np.linalg.norm(prediction, axis=-1) * np.linalg.norm(target, axis=-1)
    return float(np.mean(numerator / np.maximum(denominator, 1e-12)))


def exact_match_rate(predictions: list[str], targets: list[str]) -> float:
    """Fraction of strings that are reproduced exactly."""
    if len(predictions) != len(targets):
        raise ValueError(f"exact_match_rate: {len(predictions)} predictions for {len(targets)} targets")
    if not targets:
        raise ValueError("exact_match_rate: no targets")
    return float(np.mean([p == t for p, t in zip(predictions, targets, strict=True)]))


def _check_same_shape(prediction: np.ndarray, target: np.ndarray, name: str) -> None:
    if prediction.shape != target.shape:
        raise ValueError(f"{name}: prediction shape {prediction.shape} != target shape {target.shape}")


def _masked(prediction, target, valid, name):
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    _check_same_shape(prediction, target, name)
    valid = target > 0 if valid is None else np.asarray(valid, dtype=bool)
    if not valid.any():
        raise ValueError(f"{name}: no valid pixel")
    return prediction, target, valid


def token_f1(prediction: list[str], target: list[str]) -> float:
    """Mean over texts of the F1 between the bags of lower-cased, whitespace-separated words of a prediction
    and its target (1 = the same words as often; 0 = none in common; two empty texts count 1)."""
    from collections import Counter

    scores = []
    for predicted, true in zip(prediction, target, strict=True):
        have, want = Counter(predicted.lower().split()), Counter(true.lower().split())
        if not have and not want:
            scores.append(1.0)
            continue
        common = sum((have & want).values())
        if common == 0:
            scores.append(0.0)
            continue
        precision, recall = common / sum(have.values()), common / sum(want.values())
        scores.append(2 * precision * recall / (precision + recall))
    return float(np.mean(scores)) if scores else float("nan")


def data_range(modality, target: np.ndarray) -> float:
    """The range a PSNR of ``modality`` is taken over: 255 for 8-bit images, a declared ``value_range``'s
    width, else the targets' own spread (max - min)."""
    declared = modality.extra.get("value_range")
    if declared:
        return float(declared[1] - declared[0])
    if modality.dtype == "uint8":
        return 255.0
    spread = float(np.max(target) - np.min(target)) if np.size(target) else 0.0
    return spread if spread > 0 else 1.0
