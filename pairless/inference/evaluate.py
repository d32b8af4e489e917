"""Translation cross-entropy: how well a trained model predicts modality B given all of modality A.

The study's metric: on held-out samples that have every source modality and
the destination, the encoder gets *all* source tokens, the decoder predicts
*all* destination tokens (image and vector targets in one parallel pass;
sequence targets teacher-forced left to right, padding excluded, EOS
included), and the score is the mean per-token cross-entropy in nats over
every target token of every sample. The same with an empty encoder input
gives ``ce_unconditional``: what the model knows about B with no input at
all, the floor a translation has to beat.

``evaluate_directions(RUN, ["rgb:depth", "rgb+normal:depth"])`` is what
``pairless eval RUN --directions rgb:depth,rgb+normal:depth`` runs (it also
merges the results into ``RUN/eval.json`` and prints :func:`format_table`).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pairless.data.shards import open_shards
from pairless.inference.generate import model_device, precision
from pairless.inference.translation_batch import content_mask, translation_batch
from pairless.metrics import LEARNED_RATIO, WORSE_RATIO  # the reports' quality bar's
from pairless.modalities import Direction
from pairless.model import FourM, load_model
from pairless.utils.paths import find_recorded
from pairless.utils.runtime import resolve_device
from pairless.utils.storage import merge_json, read_json
from pairless.utils.threads import torch_threads


class NoSamplesError(ValueError):
    """No sample of the split holds every modality a direction needs (a pair never recorded together)."""


def eligible_samples(shards, modalities: list[str], num_samples: int) -> np.ndarray:
    """Indices (in shard order) of the first ``num_samples`` samples that have every one of ``modalities``."""
    for name in modalities:
        if name not in shards.specs:
            raise ValueError(f"modality {name!r} is not in the token shards; they hold "
                             f"{', '.join(shards.specs)}")
    has_all = np.logical_and.reduce([np.asarray(shards.present[name], dtype=bool) for name in modalities])
    indices = np.flatnonzero(has_all)[:num_samples]
    if len(indices) == 0:
        split = getattr(shards, "split", None)
        where = f"of the {split!r} split" if split else "in these shards"
        raise NoSamplesError(f"no sample {where} has all of {modalities}")
    return indices


def token_nll(model, tokens: dict[str, torch.Tensor], src: list[str], dst: str, specs,
              modalities) -> torch.Tensor:
    """(B, L) negative log-likelihood of every token of ``dst`` (at its own position; 0 where it is not
    scored, e.g. a sequence's padding) given all tokens of ``src``."""
    batch = translation_batch(tokens, src, dst, specs, modalities)
    device = model_device(model)
    logits = model.logits(batch.to(device))
    log_probabilities = logits.float()[..., : specs[dst].vocab_size].log_softmax(-1)  # (B, Nt, V)
    valid = batch.dec_valid.to(device)
    picked = log_probabilities.gather(-1, batch.dec_tokens.to(device)[..., None])[..., 0]
    out = torch.zeros(tokens[dst].shape, dtype=torch.float32, device=device)
    positions = batch.dec_positions.to(device).clamp(max=out.shape[1] - 1)
    return out.scatter_add_(1, positions, -(picked * valid)).cpu()


def _summed_ce(model, tokens: dict[str, torch.Tensor], src: list[str], dst: str, specs, modalities) -> float:
    return float(token_nll(model, tokens, src, dst, specs, modalities).sum())


def translation_ce(model, shards, src: list[str], dst: str, num_samples: int = 2500,
                   batch_size: int = 64, unconditional_cache: dict | None = None,
                   threads: int | None = None) -> dict:
    """Mean per-token cross-entropy (nats) of ``dst`` given all tokens of ``src``, and with no input.

    Samples: the first ``num_samples`` (shard order) that have every modality
    involved; fewer if the split holds fewer (``num_samples`` in the result
    says how many were used). ``num_tokens`` counts the scored target tokens.
    ``unconditional_cache`` (a dict kept by the caller, for one model) lets
    directions with the same destination and samples share the no-input pass.
    ``threads``: torch threads (None: the current count).
    """
    specs = scoring_specs(model, shards.specs)
    modalities = model_modalities(model, specs, [*src, dst])
    indices = eligible_samples(shards, [*src, dst], num_samples)
    cache_key = (dst, hashlib.sha256(indices.tobytes()).hexdigest())
    cached = (unconditional_cache or {}).get(cache_key)
    totals = {"ce": 0.0, "ce_unconditional": 0.0 if cached is None else cached}
    num_tokens = 0
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        # one autocast region for the whole loop: the bf16 copies of the weights are made once, not per batch
        device = model_device(model)
        with torch.inference_mode(), precision(device), torch_threads(threads):
            chunks = range(0, len(indices), batch_size)
            for start in tqdm(chunks, desc=f"eval {Direction(tuple(src), dst)}", disable=None, leave=False):
                rows = indices[start : start + batch_size]
                tokens = {name: torch.from_numpy(np.asarray(shards.tokens[name][rows])).long()
                          for name in [*src, dst]}
                totals["ce"] += _summed_ce(model, tokens, src, dst, specs, modalities)
                if cached is None:
                    totals["ce_unconditional"] += _summed_ce(model, tokens, [], dst, specs, modalities)
                num_tokens += int(content_mask(tokens[dst], specs[dst]).sum())
    finally:
        if was_training:
            model.train()
    if unconditional_cache is not None:
        unconditional_cache[cache_key] = totals["ce_unconditional"]
    return {
        "ce": totals["ce"] / num_tokens,
        "ce_unconditional": totals["ce_unconditional"] / num_tokens,
        "num_samples": len(indices),
        "num_tokens": num_tokens,
    }


def scoring_specs(model, specs: dict) -> dict:
    """The shards' specs with each sequence modality's BOS (the decoder input before a target's first
    token) as the model has it: a model trained with span masking (masking.sequence_masking=span)
    predicts a whole sequence as one span after ``[S_1]``, as ml-4m's generation does, not after the
    tokenizer's BOS."""
    model_specs = getattr(model, "specs", None) or {}
    return {name: replace(spec, bos_id=model_specs[name].bos_id)
            if spec.kind == "sequence" and name in model_specs else spec for name, spec in specs.items()}


def model_modalities(model, specs, used: list[str]) -> tuple[str, ...]:
    """The model's modality order (batches must use it), after checking it agrees with the shards' specs."""
    model_specs = getattr(model, "specs", None)
    if model_specs is None:
        return tuple(specs)
    for name in used:
        if name not in model_specs:
            raise ValueError(f"modality {name!r}: the model was not built for it; it knows "
                             f"{', '.join(model_specs)}")
        # the decoder's start token is the model's own (a span-masked model starts after [S_1]: scoring_specs)
        if name in specs and replace(model_specs[name], bos_id=specs[name].bos_id) != specs[name]:
            raise ValueError(f"modality {name!r}: the shards' TokenSpec {specs[name]} differs from the "
                             f"model's {model_specs[name]} (tokenized with other tokenizers?)")
    return tuple(getattr(model, "modalities", model_specs))


def evaluate_directions(run: Path, directions: list[str], num_samples: int = 2500, batch_size: int = 64,
                        split: str = "val", shards_path: Path | None = None,
                        threads: int | None = None, device: str | torch.device = "cpu",
                        skipped: dict[str, str] | None = None) -> dict[str, dict]:
    """``translation_ce`` of a trained run for each ``"src[+src]:dst"``; {direction: result}.

    ``threads``: torch threads (None: the current count); ``device``: where the model runs. Each result
    records both (``threads``, ``device``). ``skipped``: a dict that receives {direction: reason} for the
    directions no sample of the split can score (without it, such a direction raises
    :class:`NoSamplesError`); the others are evaluated all the same.
    """
    run = Path(run)
    parsed = [Direction.parse(text) for text in directions]
    shards = open_shards(shards_path or run_shards_path(run), split)
    model = load_run_model(run, device)
    used = {"threads": torch.get_num_threads() if threads is None else threads,
            "device": str(model_device(model))}
    results, unconditional = {}, {}
    for direction in parsed:
        try:
            row = translation_ce(model, shards, list(direction.sources), direction.destination, num_samples,
                                 batch_size, unconditional, threads)
        except NoSamplesError as error:
            if skipped is None:
                raise
            skipped[str(direction)] = str(error)
            continue
        results[str(direction)] = {**row, "split": split, **used}
    return results


def record_results(run: Path, results: dict[str, dict]) -> Path:
    """Merge ``results`` into ``RUN/eval.json`` (directions evaluated before are kept); returns its path."""
    return merge_json(Path(run) / "eval.json", results)


def run_shards_path(run: Path) -> Path:
    """The token-shard folder a run was trained on, as recorded in ``RUN/config.json``."""
    config = read_json(run / "config.json")
    found = _find_key(config, "shards")
    if not isinstance(found, str):
        raise ValueError(f"{run / 'config.json'}: no 'shards' path recorded; pass --shards")
    # runs record absolute paths now; an older one recorded the path as given, relative to the directory it
    # was trained in: the current one, or (a run inside a results tree) a folder above the run. A moved
    # project: found by the recorded path's trailing parts beside the run (pairless.utils.paths)
    found_path = find_recorded(found, run, "manifest.json")
    if found_path is not None:
        return found_path
    if Path(found).is_absolute():
        return Path(found)  # the reader names the missing folder
    raise ValueError(f"{run / 'config.json'}: records the shards as {found!r}, a relative path found neither "
                     "from the current directory nor above the run; pass --shards")


def _find_key(node, key: str):
    """The value of ``key`` at the top level of a nested config dict, else in its sections."""
    if not isinstance(node, dict):
        return None
    if key in node and isinstance(node[key], str):
        return node[key]
    for value in node.values():
        found = _find_key(value, key)
        if found is not None:
            return found
    return None


def load_run_model(run: Path, device: str | torch.device = "cpu") -> FourM:
    """``RUN/model.safetensors`` through ``pairless.model.load_model``, on ``device`` (``auto`` allowed; the
    error names a missing file)."""
    weights = Path(run) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no final weights (has `pairless train` finished for this run?)")
    return load_model(weights, resolve_device(device))


def verdict(row: dict) -> str:
    """A direction's CE against its no-input CE, in words: what a bare pair of numbers would hide."""
    ratio = row["ce"] / row["ce_unconditional"] if row["ce_unconditional"] > 0 else float("nan")
    if ratio > WORSE_RATIO:
        return "worse than no input"
    if ratio > LEARNED_RATIO:
        return f"not learned (ratio > {LEARNED_RATIO:.2f})"
    return ""


def format_table(results: dict[str, dict]) -> str:
    lines = [f"{'direction':<24} {'CE (nats/token)':>16} {'CE no input':>12} {'ratio':>6} {'samples':>8} "
             f"{'tokens':>9}  note"]
    for name, row in results.items():
        ratio = row["ce"] / row["ce_unconditional"] if row["ce_unconditional"] > 0 else float("nan")
        lines.append(f"{name:<24} {row['ce']:>16.4f} {row['ce_unconditional']:>12.4f} {ratio:>6.2f} "
                     f"{row['num_samples']:>8d} {row['num_tokens']:>9d}  {verdict(row)}".rstrip())
    worse = [name for name, row in results.items() if verdict(row) == "worse than no input"]
    if worse:
        lines.append(f"{', '.join(worse)}: the CE is more than {WORSE_RATIO - 1:.0%} above the CE with no "
                     "input: the model predicts the destination worse when it sees the source than when it "
                     "sees nothing.")
    return "\n".join(lines)

