"""Natural metrics of decoded generations: each modality scored the way its field scores it.

``score(modality, predictions, targets, scenes=None)`` returns a flat
``{metric: float}`` for one batch of natural values (what the tokenizers'
``decode`` returns):

==========  ===================================================================
depth       abs_rel, rmse, delta_1.25 (fraction of pixels with max(p/t, t/p) < 1.25)
normal      angular_error (mean degrees), within_11.25 (fraction of pixels)
semseg      miou, pixel_accuracy
rgb         psnr (dB, mean over images), ssim (torchmetrics)
det         map_50 (mean average precision at IoU 0.5, COCO rule, :func:`average_precision`)
caption     bleu4 (torchmetrics, corpus level); with scenes: fact_accuracy and which claimed colours,
            shapes and counts hold, also on mismatched scenes (world.captions.attribute_accuracy)
embed       cosine
declared    by kind (:func:`declared_metrics`): text bleu4 and token_f1, vector cosine, label map miou,
            other images rmse (own units) and psnr (over the declared range)
==========  ===================================================================

Generated boxes carry no confidence, so every predicted box scores 1 and
boxes are ranked in the order they were generated. mAP@0.5 is the COCO
evaluation of pycocotools, mean over the classes present in the ground truth.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.text import bleu_score

from pairless import metrics
from pairless import modalities as registry

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 (continuous corners)

# Box text is dequantized at this size: IoU does not depend on scale, and a
# large size keeps the integer rounding of the parser negligible.
_DET_SCORING_SIZE = 1000
# ml-4m's coordinate tokens (``v0=0`` .. ``v3=999`` in its released vocabulary: 1000 bins per axis)
_ML4M_COORDINATE = re.compile(r"\bv[0-3]=([0-9]+)")
ML4M_DET_BINS = 1000


def depth_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    valid = np.asarray(target) > 0
    ratio = np.maximum(prediction[valid] / np.maximum(target[valid], 1e-12),
                       target[valid] / np.maximum(prediction[valid], 1e-12))
    return {"abs_rel": metrics.abs_rel(prediction, target, valid),
            "rmse": metrics.rmse(prediction, target, valid),
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
    psnr = peak_signal_noise_ratio(predicted, true, data_range=255.0, dim=(1, 2, 3),
                                   reduction="elementwise_mean")
    # small images: an 11-pixel window would not fit a 8x8 image, so shrink it (odd, >= 3)
    kernel = max(3, min(11, (min(true.shape[-2:]) // 2) * 2 - 1))
    ssim = structural_similarity_index_measure(predicted, true, data_range=255.0, kernel_size=kernel)
    return {"psnr": float(psnr), "ssim": float(ssim)}


def average_precision(predictions: Sequence[Sequence[tuple[str, Box] | tuple[str, Box, float]]],
                      targets: Sequence[Sequence[tuple[str, Box]]], iou_threshold: float = 0.5) -> dict:
    """Mean AP at one IoU threshold over images; ``{"map": float or nan, "per_class": {name: ap}}``.

    The COCO evaluation (pycocotools' COCOeval, what torchmetrics' MeanAveragePrecision runs; that class
    itself needs torchvision, whose wheels do not load with the CPU torch build pinned here): 101-point
    interpolated precision, each prediction matched to the best still unmatched true box of its class.
    ``predictions[i]`` lists image i's predicted ``(class, box[, score])`` (score 1 when omitted; ties keep
    their order), ``targets[i]`` its true ``(class, box)``; the mean is over the classes with a true box.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(targets):
        raise ValueError(f"average_precision: {len(predictions)} predicted images for {len(targets)} targets")
    classes = sorted({name for boxes in targets for name, _ in boxes})
    if not classes:
        return {"map": float("nan"), "per_class": {}}
    category = {name: number for number, name in enumerate(classes, start=1)}

    def xywh(box: Box) -> list[float]:
        return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

    truths = [{"id": number, "image_id": image, "category_id": category[name], "bbox": xywh(box),
               "area": xywh(box)[2] * xywh(box)[3], "iscrowd": 0}
              for number, (image, name, box) in enumerate(((image, name, box)
                                                           for image, boxes in enumerate(targets)
                                                           for name, box in boxes), start=1)]
    found = [{"image_id": image, "category_id": category[entry[0]], "bbox": xywh(entry[1]),
              "score": float(entry[2]) if len(entry) > 2 else 1.0}
             for image, boxes in enumerate(predictions) for entry in boxes if entry[0] in category]
    if not found:
        return {"map": 0.0, "per_class": dict.fromkeys(classes, 0.0)}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ground_truth = COCO()
        ground_truth.dataset = {"images": [{"id": image} for image in range(len(targets))],
                                "annotations": truths,
                                "categories": [{"id": number, "name": name}
                                               for name, number in category.items()]}
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(found), "bbox")
        evaluation.params.iouThrs = np.array([iou_threshold])
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][0, :, :, 0, -1]  # (recall points, classes): all areas, 100 boxes
    per_class = {name: float(precision[:, number - 1].clip(min=0).mean())
                 for name, number in category.items()}
    return {"map": float(np.mean(list(per_class.values()))), "per_class": per_class}


def det_metrics(prediction: list[str], target: list[str]) -> dict[str, float]:
    """mAP@0.5 of box texts in either form: pairless's ``v0 12 ..`` (64 bins, one-word classes) or ml-4m's
    ``v0=512 ..`` coordinate tokens (its vocabulary's bins, 1000 in the released one, and class names of
    several words), the form told by the targets."""
    from pairless.world.det import DET_BINS, parse_det_text

    bins, multiword = DET_BINS, any(_ML4M_COORDINATE.search(text) for text in target)
    if multiword:  # IoU does not depend on scale: any bin count that holds every coordinate reads them right
        values = [int(value) for text in (*target, *prediction) for value in _ML4M_COORDINATE.findall(text)]
        bins = max(ML4M_DET_BINS, 1 + max(values))
    predicted = [parse_det_text(text, _DET_SCORING_SIZE, bins, multiword) for text in prediction]
    true = [parse_det_text(text, _DET_SCORING_SIZE, bins, multiword) for text in target]
    return {"map_50": average_precision(predicted, true, 0.5)["map"],
            "parsed_boxes_per_sample": float(np.mean([len(boxes) for boxes in predicted]))}


def caption_metrics(prediction: list[str], target: list[str],
                    scenes: Sequence[dict | None] | None = None) -> dict:
    out = {"bleu4": float(bleu_score(list(prediction), [[text] for text in target], n_gram=4)),
           "token_f1": metrics.token_f1(list(prediction), list(target))}
    if scenes is not None and any(scene is not None for scene in scenes):
        from pairless.world.captions import attribute_accuracy, fact_accuracy

        known = [(text, scene) for text, scene in zip(prediction, scenes, strict=True) if scene]
        out["fact_accuracy"] = float(np.mean([fact_accuracy(text, scene) for text, scene in known]))
        out.update(attribute_accuracy([text for text, _ in known], [scene for _, scene in known]))
    return out


def score(modality: str, predictions, targets, scenes: Sequence[dict | None] | None = None) -> dict[str,
    float]:
    """The natural metrics of one modality for a batch of decoded predictions against targets."""
    if len(predictions) != len(targets):
        raise ValueError(f"score({modality!r}): {len(predictions)} predictions for {len(targets)} targets")
    if modality == "depth":
        return depth_metrics(np.asarray(predictions, np.float64), np.asarray(targets, np.float64))
    if modality == "normal":
        return normal_metrics(np.asarray(predictions), np.asarray(targets))
    if modality == "semseg":
        return semseg_metrics(np.asarray(predictions), np.asarray(targets),
                              registry.get("semseg").num_classes)
    if modality == "rgb":
        return rgb_metrics(np.asarray(predictions), np.asarray(targets))
    if modality == "det":
        return det_metrics(list(predictions), list(targets))
    if modality == "caption":
        return caption_metrics(list(predictions), list(targets), scenes)
    if modality == "embed":
        return {"cosine": metrics.cosine_similarity(predictions, targets)}
    # a declared modality (an unknown name raises, listing the known ones)
    return declared_metrics(registry.get(modality), predictions, targets)


def declared_metrics(modality: registry.Modality, predictions, targets) -> dict[str, float]:
    """A modality declared with the data, scored by its declared kind: text by BLEU-4 and token F1, a vector
    by cosine, a label map by mIoU, another image by RMSE in its own units and PSNR over its declared range
    (:func:`pairless.metrics.data_range`)."""
    if modality.kind == "sequence":
        return caption_metrics(list(predictions), list(targets))
    if modality.kind == "vector":
        return {"cosine": metrics.cosine_similarity(predictions, targets)}
    if modality.num_classes:
        return semseg_metrics(np.asarray(predictions), np.asarray(targets), modality.num_classes)
    prediction, target = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    return {"rmse": float(np.sqrt(np.mean((prediction - target) ** 2))),
            "psnr": metrics.psnr(prediction, target, metrics.data_range(modality, target))}
