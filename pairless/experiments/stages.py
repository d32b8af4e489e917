"""The runner's building stages: the world, tokenizers, token shards, training runs, adapters and
pseudo-pairs, each given its typed config; and what each one's cache key hashes (the runner's ``Plan``).
The stages that measure what was built are :mod:`pairless.experiments.evaluation_stages`.

Each function takes the stage's recipe config and its output folder; when the folder
is complete (its ``COMPLETE.json`` marker exists) the stage is skipped, and
when it exists but is incomplete (a killed run) the stage resumes or redoes it.
Errors are the library's own exceptions, with their tracebacks. Thread counts
and devices come from one :class:`~pairless.utils.runtime.Runtime` the runner passes to every stage
(``pairless run --threads N --device ...``; by default the fixed count of the usable cores, never chosen from
the machine's load), outside every config hash; each output records them. A resumed training run keeps the
count its checkpoints recorded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pairless.config import validate
from pairless.data.co_occurrence import co_occurrence
from pairless.data.dataset import BAD_SAMPLES_FILE, list_splits
from pairless.data.shards import open_shards
from pairless.experiments.experiment import (
    AdapterStage,
    PseudoStage,
    TokenizerStage,
    TrainingRun,
    WorldStage,
)
from pairless.experiments.pseudo_pairs import PseudoPairsConfig, make_pseudo_pairs
from pairless.tokenizers.build import build_tokenizers
from pairless.tokenizers.encode_dataset import write_token_shards
from pairless.training.adapter import add_modality
from pairless.training.config import TrainConfig
from pairless.training.run import without_added_options
from pairless.training.saving import recorded_threads
from pairless.training.train import train
from pairless.utils.runtime import Runtime
from pairless.utils.storage import config_hash, flatten, is_complete, read_json
from pairless.world.write import WorldConfig, write_world


def runtime_or_default(runtime: Runtime | None) -> Runtime:
    """The runner's runtime; called without one (a library caller, a test), the CPU and the default count."""
    return runtime if runtime is not None else Runtime.resolve(None, "cpu")


def build_world(config: WorldStage, out: Path) -> None:
    if is_complete(out):
        return
    write_world(WorldConfig(num_scenes=config.num_scenes, size=config.size, seed=config.seed,
                            val_fraction=config.val_fraction), out)


def train_tokenizers(config: TokenizerStage, data: Path, out: Path, on_bad_sample: str = "error",
                     runtime: Runtime | None = None) -> None:
    if is_complete(out):
        return
    runtime = runtime_or_default(runtime)
    settings = config.config()
    # a recipe's own count (its tokenizer settings) wins over the runner's
    threads = settings.threads if settings.threads is not None else runtime.threads
    build_tokenizers(data, out, settings, config.modalities or None, threads=threads,
                     on_bad_sample=on_bad_sample, device=runtime.device)


def tokenize(data: Path, tokenizers: Path, out: Path, on_bad_sample: str = "error",
             runtime: Runtime | None = None) -> None:
    if is_complete(out):
        return
    runtime = runtime_or_default(runtime)
    write_token_shards(data, tokenizers, out, threads=runtime.threads, on_bad_sample=on_bad_sample,
                       device=runtime.device)


def listing_fingerprint(data: Path) -> str:
    """A hash of a dataset folder's file listing (relative paths, sizes, modification times): a changed,
    added or removed file gives new tokenizers, shards and runs."""
    entries = []
    for directory, subfolders, names in os.walk(data):
        subfolders.sort()
        for name in sorted(names):
            path = os.path.join(directory, name)
            info = os.stat(path)
            entries.append((os.path.relpath(path, data), info.st_size, info.st_mtime_ns))
    return config_hash(entries)


def inspect_data(data: Path) -> dict:
    """Samples per modality and per pair in each split of a user's folder (from the listing)."""
    return {"splits": {split: co_occurrence(data, split) for split in list_splits(data)}}


def used_counts(shards: Path) -> dict:
    """Per split, samples per modality and per pair that the token shards hold: what training and evaluation
    use, after the bad files were skipped (same form as :func:`pairless.data.co_occurrence.co_occurrence`)."""
    import itertools

    import numpy as np

    out = {}
    for split in list_splits(shards):
        tokens = open_shards(shards, split)
        present = {name: np.asarray(mask, bool) for name, mask in tokens.present.items()}
        names = list(present)
        out[split] = {"num_samples": len(tokens),
                      "modalities": {name: int(present[name].sum()) for name in names},
                      "pairs": {f"{a}:{b}": int((present[a] & present[b]).sum())
                                for a, b in itertools.combinations(names, 2)}}
    return out


def bad_samples(tokenizers: Path, shards: Path) -> dict:
    """{split: [[file, reason], ...]} skipped by the tokenizer and tokenize stages (merged)."""
    found: dict[str, dict[str, str]] = {}
    listing = tokenizers / BAD_SAMPLES_FILE
    manifest = shards / "manifest.json"
    sources = [read_json(listing) if listing.is_file() else {},
               read_json(manifest).get("bad_samples", {}) if manifest.is_file() else {}]
    for source in sources:
        for split, items in source.items():
            found.setdefault(split, {}).update({path: reason for path, reason in items})
    return {split: sorted([path, reason] for path, reason in items.items()) for split, items in found.items()}


def train_config(run: TrainingRun, shards: Path, out: Path, init_from: Path | None = None) -> TrainConfig:
    """The TrainConfig of a recipe's run (the same ``pairless train --preset ... --set ...`` would build);
    ``init_from``: the folder of the run it starts from (``run.init_from``)."""
    return run.config(shards, out, init_from)


# TrainConfig fields that do not change what a run learns (paths, threads, logging and checkpoint cadence:
# a resumed run continues bit-identically); the runner's cache key leaves them out.
# (init_from is a path too: the runner's key holds the key of the run it names instead)
_RUN_KEY_EXCLUDED = {"shards", "out", "num_threads", "num_workers", "log_every", "checkpoint_every",
                     "keep_checkpoints", "init_from", "device_memory_gb"}


def run_key_fields(run: TrainingRun) -> dict:
    """What a run's cache key hashes: its resolved TrainConfig without the fields that leave results alone.

    Options added after runs were cached (``ADDED_OPTIONS``) are left out at their neutral value, so adding
    an option does not retrain every cached run; a run that sets one otherwise gets a key of its own.
    """
    fields = train_config(run, Path("."), Path(".")).model_dump(mode="json", exclude=_RUN_KEY_EXCLUDED)
    return without_added_options(fields)


def tokenizer_key_fields(config: TokenizerStage) -> dict:
    """What the tokenizers' cache key hashes: the resolved preset settings (not its name), the modalities."""
    return {"settings": config.config().model_dump(mode="json", exclude={"threads"}),
            "modalities": sorted(config.modalities or [])}


def adapter_key_fields(stage: AdapterStage) -> dict:
    """What an adapter's cache key hashes (beside its base run's key): the stage's own fields and its other
    AdapterConfig settings, the latter in the form the key had when recipes wrote them as ``--set`` text
    (``["batch_size=32", "seed=0"]``: dotted keys in the stage's order, the seed last, values as JSON,
    strings bare), so that every adapter cached before the settings were typed keeps its folder."""
    settings = {key: value for key, value in stage.settings.items() if key != "seed"}
    if "seed" in stage.settings:
        settings["seed"] = stage.settings["seed"]
    as_text = [f"{key}={value if isinstance(value, str) else json.dumps(value)}"
               for key, value in flatten(settings).items()]
    own = stage.model_dump(mode="json", exclude={"name", "label", "base", "settings"})
    return {**own, "overrides": as_text}


def train_run(run: TrainingRun, shards: Path, out: Path, init_from: Path | None = None,
              runtime: Runtime | None = None) -> dict:
    """Train (or resume, or reuse) one run; returns what the report needs about it."""
    if not is_complete(out):
        runtime = runtime_or_default(runtime)
        # The device and thread count stay outside the run's cache key (run_key_fields).
        config = train_config(run, shards, out, init_from).model_copy(update={"device": str(runtime.device)})
        resume = out.exists()
        # A resumed run keeps the thread count its checkpoints recorded (``train`` takes it when none is
        # given), so that it continues bit-identically whatever runs beside it now.
        if recorded_threads(out) is None:
            config = config.model_copy(update={"num_threads": runtime.threads})
        train(config, resume=resume)
    summary = read_json(out / "COMPLETE.json")
    return {"role": run.role, "label": run.label, "withheld": [list(p) for p in run.withheld],
            "universe": run.universe, "model_preset": run.model_preset, "seed": run.seed, "path": str(out),
            "total_tokens": run.total_tokens, "tokens_per_modality": summary.get("tokens_per_modality", {}),
            "train_seconds": summary.get("wall_seconds"), "final_loss": summary.get("final_loss"),
            "allow_pairs": dict(run.allow_pairs), "only_paired": run.only_paired,
            **({"init_from": run.init_from} if run.init_from else {}),
            **({"pseudo": run.pseudo} if run.pseudo else {})}


def add_adapter(stage: AdapterStage, base: Path, shards: Path, out: Path,
                runtime: Runtime | None = None) -> dict:
    """Add ``stage.modality`` to the frozen run in ``base`` (reused when complete); what the report needs."""
    if not is_complete(out):
        runtime = runtime_or_default(runtime)
        config = stage.config(base, shards, out).model_copy(update={"threads": runtime.threads,
                                                                     "device": str(runtime.device)})
        add_modality(config)
    summary = read_json(out / "COMPLETE.json")
    keys = ("steps", "tokens", "final_loss", "wall_seconds", "trainable_parameters", "model_parameters",
            "trainable_fraction", "frozen_hash", "base_hash")
    # the base never saw the modality, the adapter saw it with the anchor only: every other pair is unseen
    trained = list(read_json(base / "COMPLETE.json").get("tokens_per_modality", {}))
    unseen = [[stage.modality, other] for other in trained if other != stage.anchor]
    return {"role": "adapter", "label": stage.label, "base": stage.base, "modality": stage.modality,
            "anchor": stage.anchor, "structure_weight": stage.structure_weight, "rank": stage.rank,
            "path": str(out), "withheld": unseen, "universe": [*trained, stage.modality],
            "total_tokens": stage.total_tokens,
            "train_seconds": summary.get("wall_seconds"), **{key: summary.get(key) for key in keys}}


def make_pseudo(stage: PseudoStage, generator: Path, shards: Path, out: Path,
                runtime: Runtime | None = None) -> dict:
    """Pseudo-pair shards made by the run in ``generator`` from ``shards`` (reused when complete)."""
    config = validate(PseudoPairsConfig, {"run": str(generator), "out": str(out), "shards": str(shards),
                                          **stage.model_dump(mode="json")})
    runtime = runtime_or_default(runtime)
    return make_pseudo_pairs(config, threads=runtime.threads, device=runtime.device)


