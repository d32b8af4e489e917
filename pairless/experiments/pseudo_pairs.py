"""Transitive pseudo-pairs (LoReTTa-style): fill a withheld pair with the model's own translations.

A zero-shot run never saw Ma and Mb together. For every training sample whose view exposes Ma but not
Mb, the run generates Mb from Ma (directly, or chained through a binding modality: Ma -> Mbind -> Mb),
optionally keeps only the samples whose generated Mb leads back to their real Ma (the consistency filter),
and writes token shards in which those samples carry the generated Mb, marked as pseudo
(``<split>/<Mb>.pseudo.npy``). Training on them (``pairless train --set init_from=RUN``) sees
(real Ma, generated Mb) pairs. Fragmentation and its audit do not count generated tokens as data
(:mod:`pairless.training.fragment`), so every sample keeps its view and no real Mb is ever paired with Ma.

Leakage: the generator is handed a sample's Ma tokens only; its real Mb (hidden by its view, but present
in the world's shards) is never read, and the new shards hold the generated tokens in its place.
tests/experiments/test_pseudo_pairs.py scrambles the real Mb and gets the same pseudo tokens.

Consistency of a sample: ``1 - CE(real Ma | generated Mb) / CE(real Ma | nothing)``, the fraction of the
model's no-input uncertainty about the real Ma that the generated Mb removes (0: no better than no input;
the report's "recovered" measures read the same way). ``threshold`` keeps the samples at or above it;
``keep_fraction`` keeps the most consistent fraction (its threshold is their lowest score, so ties at it
are kept too).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from tqdm import tqdm

from pairless.config import Config, ConfigError, validate
from pairless.data.shards import ShardSplit, open_shards, read_manifest, write_shards
from pairless.inference.evaluate import (
    load_run_model,
    model_modalities,
    run_shards_path,
    scoring_specs,
    token_nll,
)
from pairless.inference.generate import PRESETS as SCHEDULES
from pairless.inference.generate import model_device, precision, schedule_preset
from pairless.inference.translation_batch import content_mask
from pairless.inference.translations import generate_run
from pairless.modalities import parse_pair
from pairless.training.fragment import FragmentConfig, fragment_samples, shard_presence
from pairless.utils.storage import read_json
from pairless.utils.threads import torch_threads

INFO_KEY = "pseudo_pairs"  # the manifest entry describing how the pseudo tokens were made


class PseudoPairsConfig(Config):
    """What ``pairless pseudo-pairs`` generates, and where it writes the new token shards."""

    run: Path  # the zero-shot run (its withheld pair includes the direction's two modalities)
    out: Path  # the new token-shard folder (every split of the run's shards, the split changed)
    direction: str  # "rgb:depth": generate depth for the samples whose view has rgb but not depth
    via: str | None = None  # chain through this binding modality (rgb -> via -> depth)
    schedule: str = "roar1"  # a generation preset of pairless.inference.generate
    threshold: float | None = None  # consistency filter (see the module doc); None keeps every sample
    # or keep this fraction of the samples, the most consistent (the threshold is then their lowest score)
    keep_fraction: float | None = Field(None, gt=0, le=1)
    split: str = "train"
    shards: Path | None = None  # default: the shards the run was trained on
    batch_size: int = Field(128, ge=1)
    max_samples: int | None = Field(None, ge=1)  # at most this many (the first, in shard order)
    seed: int = 0

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, value: str) -> str:
        if value not in SCHEDULES:
            raise ValueError(f"unknown schedule {value!r}; allowed: {', '.join(SCHEDULES)}")
        return value

    @model_validator(mode="after")
    def _one_filter(self) -> PseudoPairsConfig:
        if self.threshold is not None and self.keep_fraction is not None:
            raise ValueError("keep_fraction: give a threshold or a fraction to keep, not both")
        return self

    @property
    def pair(self) -> tuple[str, str]:
        return parse_pair(self.direction)


def run_fragment(run: Path) -> FragmentConfig:
    """The fragmentation a run was trained with (its config.json)."""
    config_path = Path(run) / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"run: {run} has no config.json (not a training run folder)")
    return validate(FragmentConfig, read_json(config_path).get("fragment", {}))


def candidate_rows(shards, fragment: FragmentConfig, src: str, dst: str) -> np.ndarray:
    """Rows (in shard order) whose training view exposes ``src`` but not ``dst``: those to fill."""
    modalities = list(shards.specs)
    present, pseudo = shard_presence(shards)
    fragmented = fragment_samples(list(shards.ids), present, modalities, fragment, pseudo)
    views = fragmented.views
    wanted = views[:, modalities.index(src)] & ~views[:, modalities.index(dst)]
    return fragmented.rows[wanted]


def consistency_scores(model, shards, rows: np.ndarray, src: str, dst: str, generated: np.ndarray,
                       batch_size: int, threads: int | None = None) -> np.ndarray:
    """Per row: ``1 - CE(real src | generated dst) / CE(real src | nothing)`` (float64 [N])."""
    specs, modalities = scoring_specs(model, shards.specs), model_modalities(model, shards.specs, [src, dst])
    scores = np.zeros(len(rows), dtype=np.float64)
    model.eval()
    with torch.inference_mode(), precision(model_device(model)), torch_threads(threads):
        for start in tqdm(range(0, len(rows), batch_size), desc=f"consistency {dst} -> {src}", disable=None,
                          leave=False):
            chunk = rows[start:start + batch_size]
            tokens = {src: torch.from_numpy(np.asarray(shards.tokens[src][chunk])).long(),
                      dst: torch.from_numpy(generated[start:start + batch_size]).long()}
            counted = content_mask(tokens[src], specs[src]).sum(1).clamp(min=1).double()
            back = token_nll(model, tokens, [dst], src, specs, modalities).double().sum(1) / counted
            nothing = token_nll(model, tokens, [], src, specs, modalities).double().sum(1) / counted
            scores[start:start + len(chunk)] = (1.0 - back / nothing.clamp(min=1e-9)).numpy()
    return scores


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    points = np.quantile(values, [0.1, 0.5, 0.9])
    return {"p10": float(points[0]), "median": float(points[1]), "p90": float(points[2]),
            "mean": float(values.mean())}


def make_pseudo_pairs(config: PseudoPairsConfig, threads: int | None = None,
                      device: str | torch.device = "cpu") -> dict:
    """Generate, filter and write the pseudo-pair shards of ``config``; returns the summary it records.

    ``threads``: torch threads (None: the current count); ``device``: where the model runs (the summary
    records both).

    Raises ConfigError when the direction is not a pair the run withheld, or names a modality the
    shards or the model lack; an existing complete ``out`` is reused (its summary returned).
    """
    started = time.perf_counter()
    out = Path(config.out)
    if (out / "COMPLETE.json").is_file():  # reuse it when it was made by the same request
        done = read_manifest(out).get(INFO_KEY, {})
        asked = {"run": os.path.abspath(config.run), "direction": config.direction, "via": config.via,
                 "schedule": config.schedule, "split": config.split,
                 **({"keep_fraction": config.keep_fraction} if config.keep_fraction is not None else
                    {"threshold": config.threshold})}
        # an output made before paths were recorded resolved holds the run as given (relative to the
        # directory it was made in, the current one for the runner's cache)
        done = {**done, "run": os.path.abspath(done["run"]) if isinstance(done.get("run"), str) else None}
        for key, value in asked.items():
            if done.get(key) != value:
                raise FileExistsError(f"out: {out} holds pseudo-pairs made with {key}={done.get(key)!r}, "
                                      f"not {value!r}; choose another --out")
        return done
    src, dst = config.pair
    fragment = run_fragment(config.run)
    if not any({src, dst} == set(pair) for pair in fragment.withheld):
        withheld = ", ".join(f"{a}:{b}" for a, b in fragment.withheld) or "none"
        raise ConfigError(f"direction: {src}:{dst} is not a pair {config.run} withheld (withheld: "
                          f"{withheld}); pseudo-pairs fill a pair the run never saw together")
    shards_path = Path(config.shards) if config.shards else run_shards_path(Path(config.run))
    manifest = read_manifest(shards_path)
    data = open_shards(shards_path, config.split)
    for name in (src, dst, *([config.via] if config.via else [])):
        if name not in data.specs:
            raise ConfigError(f"direction: {name!r} is not in {shards_path} ({', '.join(data.specs)})")
    model = load_run_model(Path(config.run), device)
    model_modalities(model, data.specs, [src, dst, *([config.via] if config.via else [])])
    rows = candidate_rows(data, fragment, src, dst)
    if config.max_samples is not None:
        rows = rows[:config.max_samples]
    if not len(rows):
        raise ConfigError(f"direction: no {config.split} sample of {shards_path} exposes {src} without {dst}")
    chain = [[src], *([[config.via]] if config.via else []), [dst]]
    label = " -> ".join(link[0] for link in chain)
    generated = generate_run(model, data, rows, chain, schedule_preset(config.schedule), config.seed,
                             config.batch_size, f"pseudo {label}", threads)[dst]
    scores = consistency_scores(model, data, rows, src, dst, generated, config.batch_size, threads)
    threshold = config.threshold
    if config.keep_fraction is not None:  # the lowest score among the most consistent fraction
        threshold = float(np.sort(scores)[::-1][max(1, int(round(config.keep_fraction * len(scores)))) - 1])
    kept = np.ones(len(rows), dtype=bool) if threshold is None else scores >= threshold
    summary = {
        "run": os.path.abspath(config.run), "direction": f"{src}:{dst}", "via": config.via,
        "schedule": config.schedule,
        "threshold": threshold, "keep_fraction": config.keep_fraction, "split": config.split,
        "source_shards": os.path.abspath(shards_path),
        "candidates": int(len(rows)), "kept": int(kept.sum()),
        "consistency_all": _quantiles(scores), "consistency_kept": _quantiles(scores[kept]),
        "seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads() if threads is None else threads,
        "device": str(model_device(model)),
    }
    splits = {}
    for split in manifest["splits"]:
        opened = data if split == config.split else open_shards(shards_path, split)
        tokens = {name: np.array(opened.tokens[name]) for name in opened.specs}
        present = {name: np.array(opened.present[name], dtype=bool) for name in opened.specs}
        pseudo = {name: np.array(opened.pseudo[name], dtype=bool) for name in opened.specs}
        if split == config.split:
            filled = rows[kept]
            tokens[dst][filled] = generated[kept]
            present[dst][filled] = True
            pseudo[dst][filled] = True
        splits[split] = ShardSplit(list(opened.ids), tokens, present, opened.scenes,
                                   {name: mask for name, mask in pseudo.items() if mask.any()})
    write_shards(out, splits, data.specs, {**data.info, INFO_KEY: summary})
    return summary


def format_summary(summary: dict) -> str:
    """Printable lines of a pseudo-pair summary."""
    via = f" through {summary['via']}" if summary.get("via") else ""
    lines = [f"{summary['direction']}{via} ({summary['schedule']}): {summary['kept']} of "
             f"{summary['candidates']} samples kept"
             + (f" (consistency >= {summary['threshold']:g})" if summary.get("threshold") is not None
                else "")]
    for key, name in (("consistency_all", "consistency, all generated"), ("consistency_kept", "kept")):
        values = summary.get(key) or {}
        if values:
            lines.append(f"  {name}: median {values['median']:.3f} (p10 {values['p10']:.3f}, "
                         f"p90 {values['p90']:.3f})")
    return "\n".join(lines)
