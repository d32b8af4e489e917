"""The reconstruction report: how much each tokenizer loses (the "tokenizer ceiling").

``reconstruction_metrics(TOKDIR, DATA, split)`` encodes and decodes the
samples of ``split`` that have each modality and scores the result in the
modality's natural terms:

- unit_range images (rgb): PSNR (dB)
- log_standard images (depth): abs-rel and RMSE
- unit_vector images (normal): mean angular error (degrees)
- labels (semseg): mIoU and pixel accuracy
- standard float images: RMSE
- text (caption, det): exact round-trip rate (texts too long for the padded length count as
  failures and are counted in ``num_too_long``)
- vectors (embed): mean cosine similarity

``write_report`` stores the result as ``TOKDIR/report.json`` and ``report.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pairless import metrics
from pairless.data.dataset import BAD_SAMPLES_FILE, report_bad_samples
from pairless.tokenizers import available_modalities, load_tokenizer
from pairless.utils.storage import atomic_write_json, atomic_write_text
from pairless.utils.threads import torch_threads


def score(tokenizer, original, reconstruction) -> dict[str, float]:
    """Natural-form metrics of one modality's reconstruction."""
    if tokenizer.kind == "text":
        return {"exact_round_trip": metrics.exact_match_rate(reconstruction, original)}
    if tokenizer.kind == "vector":
        return {"cosine": metrics.cosine_similarity(reconstruction, original)}
    norm = tokenizer.config.normalization
    if norm.kind == "unit_range":
        return {"psnr": metrics.psnr(reconstruction, original)}
    if norm.kind == "log_standard":
        return {"abs_rel": metrics.abs_rel(reconstruction, original),
                "rmse": metrics.rmse(reconstruction, original)}
    if norm.kind == "unit_vector":
        return {"angular_error_degrees": metrics.angular_error_degrees(reconstruction, original)}
    if norm.kind == "labels":
        return {"miou": metrics.miou(reconstruction, original, norm.num_classes),
                "pixel_accuracy": metrics.pixel_accuracy(reconstruction, original)}
    return {"rmse": metrics.rmse(reconstruction, original, valid=np.ones(original.shape, dtype=bool))}


def declared_score(modality: str, original, reconstruction) -> dict[str, float] | None:
    """For a modality declared with the data (None for a built-in one), the metrics its translations are
    scored with (pairless.inference.decoded_metrics.declared_metrics) that :func:`score` does not give, so
    that its ceiling sits beside the same metric: PSNR over the declared range of an image that is not a
    label map, token F1 of a text."""
    from pairless import modalities as registry

    entry = registry.get(modality)
    if modality in registry.WORLD_MODALITIES or "declaration" not in entry.extra:
        return None
    if entry.kind == "sequence":
        return {"token_f1": metrics.token_f1(list(reconstruction), list(original))}
    if entry.kind == "image" and not entry.num_classes:
        target = np.asarray(original, np.float64)
        return {"psnr": metrics.psnr(np.asarray(reconstruction, np.float64), target,
                                     metrics.data_range(entry, target))}
    return {}


def reconstruction_metrics(tokenizer_root: str | Path, data: str | Path, split: str = "val",
                           max_samples: int | None = None, threads: int | None = None,
                           on_bad_sample: str = "error",
                           device: str | torch.device = "cpu") -> dict[str, dict]:
    """``{modality: {metric: value, "num_samples": n}}`` for every trained modality present in ``split``.

    ``threads``: torch threads (None: the current count); ``device``: where the neural tokenizers run.
    """
    from pairless.data import open_dataset

    dataset = open_dataset(data, split, on_bad_sample=on_bad_sample)
    listing = Path(tokenizer_root) / BAD_SAMPLES_FILE
    report_bad_samples(dataset.bad_samples, split, "tokenizer report", listing)
    with torch_threads(threads):
        return _score_all(tokenizer_root, dataset, max_samples, torch.device(device))


def _score_all(tokenizer_root, dataset, max_samples: int | None, device: torch.device) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for modality in available_modalities(tokenizer_root):
        if modality not in dataset.modalities:
            continue
        tokenizer = load_tokenizer(tokenizer_root, modality)
        values, present = dataset.column(modality)
        indices = np.flatnonzero(present)[:max_samples]
        extra = {}
        if tokenizer.kind == "text":
            original = [values[i] for i in indices]
            # Texts longer than the padded length count as failed round trips instead of stopping the report.
            lengths = [len(encoding.ids) + 1 for encoding in tokenizer.tokenizer.encode_batch(original)]
            extra["num_too_long"] = int(sum(length > tokenizer.spec.num_tokens for length in lengths))
            tokenizer = tokenizer.truncating()
        else:
            original = np.asarray(values[indices])
            tokenizer = tokenizer.to(device)
        reconstruction = tokenizer.decode(tokenizer.encode(original))
        declared = declared_score(modality, original, reconstruction)
        results[modality] = {**score(tokenizer, original, reconstruction), **(declared or {}), **extra,
                             "num_samples": int(len(indices))}
    return results


def render_markdown(results: dict[str, dict], split: str) -> str:
    lines = [f"# Tokenizer reconstruction ({split} split)", "", "| modality | metric | value | samples |",
             "|---|---|---|---|"]
    for modality, values in results.items():
        for name, value in values.items():
            if name not in ("num_samples", "num_too_long"):
                lines.append(f"| {modality} | {name} | {value:.4f} | {values['num_samples']} |")
    return "\n".join(lines) + "\n"


def write_report(tokenizer_root: str | Path, data: str | Path, split: str = "val",
                 max_samples: int | None = None, threads: int | None = None,
                 on_bad_sample: str = "error", device: str | torch.device = "cpu") -> dict[str, dict]:
    """Score every tokenizer on ``split`` (skipped when the data has no such split); write report.json/.md."""
    from pairless.data import list_splits

    tokenizer_root = Path(tokenizer_root)
    if split not in list_splits(data):
        return {}
    results = reconstruction_metrics(tokenizer_root, data, split, max_samples, threads, on_bad_sample, device)
    atomic_write_json(tokenizer_root / "report.json", results)
    atomic_write_text(tokenizer_root / "report.md", render_markdown(results, split))
    return results
