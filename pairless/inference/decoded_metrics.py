"""Natural metrics of decoded generations: each modality scored the way its field scores it.

``score(modality, predictions, targets, scenes=None)`` returns a flat
``{metric: float}`` for one batch of natural values (what the tokenizers'
``decode`` returns):

==========  ===================================================================
depth       abs_rel, rmse, delta_1.25 (fraction of pixels with max(p/t, t/p) < 1.25)
normal      angular_error (mean degrees), within_11.25 (fraction of pixels)
semseg      miou, pixel_accuracy
rgb         psnr (dB, mean over images), ssim (torchmetrics)
det         map_50 (mean average precision at IoU 0.5, :func:`average_precision`)
caption     bleu4 (torchmetrics, corpus level); fact_accuracy when scenes are given
embed       cosine
==========  ===================================================================

Generated boxes carry no confidence, so every predicted box scores 1 and
boxes are ranked in the order they were generated. torchmetrics'
MeanAveragePrecision needs pycocotools or faster-coco-eval, which are not
installed, so mAP@0.5 is computed here (all-point interpolated AP per class,
the VOC 2010+ rule; mean over the classes present in the ground truth).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.text import bleu_score

from pairless import metrics
from pairless import modalities as registry

Box = tuple[float, float, float, float]  # x0, y0, x1, y1

# Box text is dequantized at this size: IoU does not depend on scale, and a
# large size keeps the integer rounding of the parser negligible.
_DET_SCORING_SIZE = 1000


def depth_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    valid = np.asarray(target) > 0
    ratio = np.maximum(prediction[valid] / np.maximum(target[valid], 1e-12),
                       target[valid] / np.maximum(prediction[valid], 1e-12))
    return {"abs_rel": metrics.abs_rel(prediction, target, valid), "rmse": metrics.rmse(prediction, target, valid),
            "delta_1.25": float(np.mean(ratio < 1.25))}


def normal_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    unit_prediction = metrics.normals_from_uint8(prediction) if prediction.dtype == np.uint8 else prediction
    unit_target = metrics.normals_from_uint8(target) if target.dtype == np.uint8 else target
    norms = np.linalg.norm(unit_target, axis=-1)
    valid = norms >= 0.5
    cosine = np.sum(unit_prediction * unit_target, axis=-1) / np.maximum(
        np.linalg.norm(unit_prediction, axis=-1) * norms, 1e-12)
    angles = np.degrees(np.arccos(np.clip(cosine[valid], -1.0, 1.0)))
    return {"angular_error": metrics.angular_error_degrees(prediction, target),
            "within_11.25": float(np.mean(angles < 11.25))}


def semseg_metrics(prediction: np.ndarray, target: np.ndarray, num_classes: int) -> dict[str, float]:
    return {"miou": metrics.miou(prediction, target, num_classes),
            "pixel_accuracy": metrics.pixel_accuracy(prediction, target)}


def rgb_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """PSNR (mean over images) and SSIM on uint8 (N, H, W, 3) images, data range 255."""
    def as_tensor(images):
        return torch.as_tensor(np.asarray(images), dtype=torch.float64).permute(0, 3, 1, 2)

    predicted, true = as_tensor(prediction), as_tensor(target)
    psnr = peak_signal_noise_ratio(predicted, true, data_range=255.0, dim=(1, 2, 3), reduction="elementwise_mean")
    # small images: an 11-pixel window would not fit a 8x8 image, so shrink it (odd, >= 3)
    kernel = max(3, min(11, (min(true.shape[-2:]) // 2) * 2 - 1))
    ssim = structural_similarity_index_measure(predicted, true, data_range=255.0, kernel_size=kernel)
    return {"psnr": float(psnr), "ssim": float(ssim)}


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes given as continuous corner coordinates."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    intersection = max(width, 0.0) * max(height, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


def _class_ap(predictions: list[tuple[float, int, Box]], truths: dict[int, list[Box]], threshold: float) -> float:
    """All-point interpolated AP of one class; predictions are (score, image, box)."""
    num_truths = sum(len(boxes) for boxes in truths.values())
    order = sorted(range(len(predictions)), key=lambda i: -predictions[i][0])  # stable: ties keep their order
    matched = {image: [False] * len(boxes) for image, boxes in truths.items()}
    hits = []
    for index in order:
        _, image, box = predictions[index]
        candidates = truths.get(image, [])
        overlaps = [box_iou(box, truth) for truth in candidates]
        best = int(np.argmax(overlaps)) if overlaps else -1
        hit = best >= 0 and overlaps[best] >= threshold and not matched[image][best]
        if hit:
            matched[image][best] = True
        hits.append(hit)
    true_positives = np.cumsum(hits)
    recall = true_positives / num_truths
    precision = true_positives / np.arange(1, len(hits) + 1)
    # the precision envelope, then the area under the stepwise PR curve
    recall = np.concatenate([[0.0], recall])
    precision = np.concatenate([[0.0], precision])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def average_precision(predictions: Sequence[Sequence[tuple[str, Box] | tuple[str, Box, float]]],
                      targets: Sequence[Sequence[tuple[str, Box]]], iou_threshold: float = 0.5) -> dict:
    """Mean AP at one IoU threshold over images; ``{"map": float or nan, "per_class": {name: ap}}``.

    ``predictions[i]`` lists image i's predicted ``(class, box[, score])``
    (score 1 when omitted), ``targets[i]`` its true ``(class, box)``. A
    prediction is a hit when its best-overlapping true box of the same class
    has IoU >= the threshold and was not already taken by a higher-ranked prediction.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"average_precision: {len(predictions)} predicted images for {len(targets)} targets")
    classes = sorted({name for boxes in targets for name, _ in boxes})
    per_class = {}
    for name in classes:
        truths: dict[int, list[Box]] = {}
        for image, boxes in enumerate(targets):
            truths.setdefault(image, []).extend(box for label, box in boxes if label == name)
        found = [(float(entry[2]) if len(entry) > 2 else 1.0, image, entry[1])
                 for image, boxes in enumerate(predictions) for entry in boxes if entry[0] == name]
        per_class[name] = _class_ap(found, truths, iou_threshold) if found else 0.0
    value = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return {"map": value, "per_class": per_class}


def det_metrics(prediction: list[str], target: list[str]) -> dict[str, float]:
    from pairless.world.det import parse_det_text

    predicted = [parse_det_text(text, _DET_SCORING_SIZE) for text in prediction]
    true = [parse_det_text(text, _DET_SCORING_SIZE) for text in target]
    return {"map_50": average_precision(predicted, true, 0.5)["map"],
            "parsed_boxes_per_sample": float(np.mean([len(boxes) for boxes in predicted]))}


def caption_metrics(prediction: list[str], target: list[str], scenes: Sequence[dict | None] | None = None) -> dict:
    out = {"bleu4": float(bleu_score(list(prediction), [[text] for text in target], n_gram=4))}
    if scenes is not None and any(scene is not None for scene in scenes):
        from pairless.world.captions import fact_accuracy

        scored = [fact_accuracy(text, scene) for text, scene in zip(prediction, scenes, strict=True) if scene]
        out["fact_accuracy"] = float(np.mean(scored))
    return out


def score(modality: str, predictions, targets, scenes: Sequence[dict | None] | None = None) -> dict[str, float]:
    """The natural metrics of one modality for a batch of decoded predictions against targets."""
    if len(predictions) != len(targets):
        raise ValueError(f"score({modality!r}): {len(predictions)} predictions for {len(targets)} targets")
    if modality == "depth":
        return depth_metrics(np.asarray(predictions, np.float64), np.asarray(targets, np.float64))
    if modality == "normal":
        return normal_metrics(np.asarray(predictions), np.asarray(targets))
    if modality == "semseg":
        return semseg_metrics(np.asarray(predictions), np.asarray(targets), registry.get("semseg").num_classes)
    if modality == "rgb":
        return rgb_metrics(np.asarray(predictions), np.asarray(targets))
    if modality == "det":
        return det_metrics(list(predictions), list(targets))
    if modality == "caption":
        return caption_metrics(list(predictions), list(targets), scenes)
    if modality == "embed":
        return {"cosine": metrics.cosine_similarity(predictions, targets)}
    modality_info = registry.get(modality)  # unknown names raise with the list of known ones
    if modality_info.kind == "sequence":
        return {"bleu4": caption_metrics(list(predictions), list(targets))["bleu4"]}
    if modality_info.num_classes:
        return semseg_metrics(np.asarray(predictions), np.asarray(targets), modality_info.num_classes)
    prediction, target = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    return {"rmse": float(np.sqrt(np.mean((prediction - target) ** 2)))}
