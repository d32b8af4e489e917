"""The runner's stages: typed configs built from a recipe and passed to each stage's library function.

Each function takes the stage's recipe config and its output folder; when the folder
is complete (its ``COMPLETE.json`` marker exists) the stage is skipped, and
when it exists but is incomplete (a killed run) the stage resumes or redoes it.
Errors are the library's own exceptions, with their tracebacks. Thread counts are
and devices come from one :class:`~pairless.utils.runtime.Runtime` the runner passes to every stage
(``pairless run --threads N --device ...``; by default the fixed count of the usable cores, never chosen from
the machine's load), outside every config hash; each output records them. A resumed training run keeps the
count its checkpoints recorded.
"""

from __future__ import annotations

import os
from pathlib import Path

from pairless.config import apply_overrides, validate
from pairless.data.co_occurrence import co_occurrence
from pairless.data.dataset import BAD_SAMPLES_FILE, list_splits
from pairless.data.shards import open_shards
from pairless.experiments.experiment import (
    AdapterStage,
    ExperimentConfig,
    PseudoStage,
    TokenizerStage,
    TrainingRun,
    WorldStage,
)
from pairless.experiments.pseudo_pairs import PseudoPairsConfig, make_pseudo_pairs
from pairless.inference.evaluate import evaluate_directions, load_run_model, run_shards_path
from pairless.inference.probes import probe_model
from pairless.inference.regions import evaluate_regions
from pairless.inference.translations import generate_and_score
from pairless.inference.unpaired import unpaired_analysis
from pairless.modalities import Pair, parse_direction
from pairless.tokenizers.build import build_tokenizers
from pairless.tokenizers.encode_dataset import write_token_shards
from pairless.tokenizers.neural_training import preset_config
from pairless.training.adapter import AdapterConfig, add_modality
from pairless.training.config import TrainConfig
from pairless.training.run import without_added_options
from pairless.training.saving import SNAPSHOT_FILE, recorded_threads, snapshot_folder
from pairless.training.train import train
from pairless.utils.runtime import Runtime
from pairless.utils.storage import atomic_write_json, config_hash, is_complete, read_json, weights_digest
from pairless.world.write import WorldConfig, write_world


def _or_default(runtime: Runtime | None) -> Runtime:
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
    runtime = _or_default(runtime)
    settings = apply_overrides(preset_config(config.preset, seed=config.seed), config.overrides)
    # a recipe's own count (its tokenizer overrides) wins over the runner's
    threads = settings.threads if settings.threads is not None else runtime.threads
    build_tokenizers(data, out, settings, config.modalities or None, threads=threads,
                     on_bad_sample=on_bad_sample, device=runtime.device)


def tokenize(data: Path, tokenizers: Path, out: Path, on_bad_sample: str = "error",
             runtime: Runtime | None = None) -> None:
    if is_complete(out):
        return
    runtime = _or_default(runtime)
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


def analyse_unpaired(config: ExperimentConfig, plan, runtime: Runtime | None = None) -> dict:
    """For each pair never recorded together, both directions with the all-data run (the first run):
    direct, chained, bridge-proxy, no-input and cycle measures (pairless.inference.unpaired)."""
    if not config.unpaired:
        return {}
    runtime = _or_default(runtime)
    run = config.runs[0]
    out = {}
    for pair in config.unpaired:
        a, b = Pair.parse(pair)
        bridges = config.bridges.get(pair, [])
        for src, dst in ((a, b), (b, a)):
            try:
                folder = Path("unpaired") / f"{src}-to-{dst}"  # relative to the recipe folder
                out[f"{src}:{dst}"] = {"run": run.name, "pair": pair, **unpaired_analysis(
                    plan.runs[run.name], src, dst, bridges, plan.tokenizers, plan.shards,
                    plan.recipe_dir / folder, num=max(config.decoded_samples, 1), threads=runtime.threads,
                    device=runtime.device),
                    "figure": str(folder / "figure.png")}
            except ValueError as error:  # e.g. no held-out sample has src
                out[f"{src}:{dst}"] = {"run": run.name, "pair": pair, "skipped": str(error)}
    return out


def train_config(run: TrainingRun, shards: Path, out: Path, init_from: Path | None = None,
                 device_type: str | None = None) -> TrainConfig:
    """The TrainConfig of a recipe's run (the same ``pairless train --preset ... --set ...`` would build);
    ``init_from``: the folder of the run it starts from (``run.init_from``); ``device_type``: the device it
    is for ("cpu", "cuda"; None: this machine's), which ``model.attention="auto"`` resolves for."""
    return run.config(shards, out, init_from, device_type)


# TrainConfig fields that do not change what a run learns (paths, threads, logging and checkpoint cadence:
# a resumed run continues bit-identically); the runner's cache key leaves them out.
# (init_from is a path too: the runner's key holds the key of the run it names instead)
_RUN_KEY_EXCLUDED = {"shards", "out", "num_threads", "num_workers", "log_every", "checkpoint_every",
                     "keep_checkpoints", "init_from", "device_memory_gb"}


def run_key_fields(run: TrainingRun, device_type: str | None = None) -> dict:
    """What a run's cache key hashes: its resolved TrainConfig without the fields that leave results alone,
    with ``model.attention`` resolved for ``device_type`` (None: this machine's device).

    Options added after runs were cached (``ADDED_OPTIONS``) are left out at their neutral value, so adding
    an option does not retrain every cached run; a run that sets one otherwise gets a key of its own.
    """
    fields = train_config(run, Path("."), Path("."), device_type=device_type).model_dump(
        mode="json", exclude=_RUN_KEY_EXCLUDED)
    return without_added_options(fields)


def tokenizer_key_fields(config: TokenizerStage) -> dict:
    """What the tokenizers' cache key hashes: the resolved preset settings (not its name), the modalities."""
    settings = apply_overrides(preset_config(config.preset, seed=config.seed), config.overrides)
    return {"settings": settings.model_dump(mode="json", exclude={"threads"}),
            "modalities": sorted(config.modalities or [])}


def train_run(run: TrainingRun, shards: Path, out: Path, init_from: Path | None = None,
              runtime: Runtime | None = None) -> dict:
    """Train (or resume, or reuse) one run; returns what the report needs about it."""
    if not is_complete(out):
        runtime = _or_default(runtime)
        # The device and thread count stay outside the run's cache key (run_key_fields); the attention kernel
        # "auto" resolves to is in it, resolved for this device (as the runner's Plan keys the run)
        config = train_config(run, shards, out, init_from, runtime.device.type).model_copy(
            update={"device": str(runtime.device)})
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
        runtime = _or_default(runtime)
        # the stage's overrides stay `--set` strings: they are part of the adapter's cache key (Plan)
        config = apply_overrides(validate(AdapterConfig, {
            "base": str(base), "shards": str(shards), "out": str(out), "modality": stage.modality,
            "anchor": stage.anchor, "total_tokens": stage.total_tokens, "rank": stage.rank,
            "structure_weight": stage.structure_weight}), stage.overrides)
        config = config.model_copy(update={"threads": runtime.threads, "device": str(runtime.device)})
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


def snapshot_runs(run: TrainingRun, run_dir: Path, config: ExperimentConfig, plan,
                  runtime: Runtime | None = None) -> dict:
    """Evaluations and probes of a run's snapshots along training (``run.snapshots``), cached like the final
    weights'; {fraction: {"fraction", "step", "tokens", "evals", "probes"}} of those that exist."""
    out = {}
    for fraction in run.snapshots:
        folder = snapshot_folder(run_dir, fraction)
        if not (folder / SNAPSHOT_FILE).is_file():
            continue
        tag = f"{fraction:g}"
        out[tag] = {**read_json(folder / SNAPSHOT_FILE),
                    "evals": evaluate_run(run, folder, config, plan.eval_file(run.name, tag), runtime),
                    "probes": probe_run_pairs(run, folder, config, plan.probe_file(run.name, tag), runtime)}
    return out


def make_pseudo(stage: PseudoStage, generator: Path, shards: Path, out: Path,
                runtime: Runtime | None = None) -> dict:
    """Pseudo-pair shards made by the run in ``generator`` from ``shards`` (reused when complete)."""
    config = validate(PseudoPairsConfig, {"run": str(generator), "out": str(out), "shards": str(shards),
                                          **stage.model_dump(mode="json")})
    runtime = _or_default(runtime)
    return make_pseudo_pairs(config, threads=runtime.threads, device=runtime.device)


def _directions_for(run: TrainingRun, directions: list[str]) -> list[str]:
    """Directions whose modalities all lie inside the run's training universe."""
    if run.universe is None:
        return list(directions)
    allowed = set(run.universe)
    out = []
    for direction in directions:
        sources, destination = parse_direction(direction)
        if {*sources, destination} <= allowed:
            out.append(direction)
    return out


WEIGHTS_KEY = "_weights"  # in a per-run cache file: the hash of the weights it was computed from


def read_run_cache(cache_file: Path, run_dir: Path) -> dict:
    """A per-run cache (evaluations, probes, regions) if it was computed from the run's present weights, else
    empty: a run trained again under the same config (its folder deleted, say) is evaluated again. A file
    from before the weights were stamped counts when it is newer than the weights."""
    if not cache_file.is_file():
        return {}
    cached = read_json(cache_file)
    stamp = cached.pop(WEIGHTS_KEY, None)
    if stamp is not None:
        return cached if stamp == weights_digest(run_dir) else {}
    weights = run_dir / "model.safetensors"
    fresh = weights.is_file() and cache_file.stat().st_mtime >= weights.stat().st_mtime
    return cached if fresh else {}


def write_run_cache(cache_file: Path, cached: dict, run_dir: Path) -> None:
    atomic_write_json(cache_file, {**cached, WEIGHTS_KEY: weights_digest(run_dir)})


def evaluate_run(run: TrainingRun, run_dir: Path, config: ExperimentConfig, cache_file: Path,
                 runtime: Runtime | None = None) -> dict:
    """Translation CE of one run for the recipe's directions, cached per (run, samples)."""
    cached = read_run_cache(cache_file, run_dir)
    wanted = [d for d in _directions_for(run, config.directions) if d not in cached]
    if wanted:
        runtime = _or_default(runtime)
        results = evaluate_directions(run_dir, wanted, num_samples=config.eval_samples,
                                      batch_size=config.eval_batch_size, threads=runtime.threads,
                                      device=runtime.device)
        cached.update(results)
        write_run_cache(cache_file, cached, run_dir)
    return {d: cached[d] for d in _directions_for(run, config.directions) if d in cached}


def make_figures(config: ExperimentConfig, plan, runtime: Runtime | None = None) -> dict:
    """Generation grids and decoded metrics for every figure of the recipe."""
    runtime = _or_default(runtime)
    figures, metrics, chained = {}, {}, {}
    for figure in config.figures:
        runs = {name: plan.runs[name] for name in figure.runs if name in plan.runs}
        if not runs:
            continue
        direction = f"{figure.src}:{figure.dst}"
        if figure.via:
            out = plan.recipe_dir / "figures" / f"{figure.src}-to-{figure.via}-to-{figure.dst}"
            result = generate_and_score(runs=runs, src=figure.src, dst=f"{figure.via}:{figure.dst}",
                                        schedule=figure.schedule, num=max(figure.num, config.decoded_samples),
                                        tokenizers=plan.tokenizers, shards=plan.shards, out=out,
                                        figure_rows=figure.num, threads=runtime.threads,
                                        device=runtime.device)
            if result.get("figure"):
                name = f"{figure.src} → {figure.via} → {figure.dst} ({figure.schedule})"
                figures[name] = str(result["figure"])
            chained[direction] = {"via": figure.via, "metrics": result.get("metrics", {})}
            continue
        out = plan.recipe_dir / "figures" / f"{figure.src}-to-{figure.dst}"
        result = generate_and_score(runs=runs, src=figure.src, dst=figure.dst, schedule=figure.schedule,
                                    num=max(figure.num, config.decoded_samples), tokenizers=plan.tokenizers,
                                    shards=plan.shards, out=out, figure_rows=figure.num,
                                    threads=runtime.threads, device=runtime.device, no_input=True)
        if result.get("figure"):
            figures[f"{figure.src} → {figure.dst} ({figure.schedule})"] = str(result["figure"])
        metrics[direction] = result.get("metrics", {})
        scored = {name: plan.runs[name] for name in figure.scored_runs
                  if name in plan.runs and name not in runs}
        if scored:  # scored with the same samples and schedule, drawn in a grid of their own (not reported)
            extra = generate_and_score(runs=scored, src=figure.src, dst=figure.dst, schedule=figure.schedule,
                                       num=max(figure.num, config.decoded_samples),
                                       tokenizers=plan.tokenizers, shards=plan.shards,
                                       out=out.with_name(f"{out.name}-scored"), figure_rows=figure.num,
                                       threads=runtime.threads, device=runtime.device, no_input=True)
            no_input = {**extra.get("metrics", {}).get("_no_input", {}),
                        **metrics[direction].get("_no_input", {})}
            metrics[direction] = {**extra.get("metrics", {}), **metrics[direction],
                                  **({"_no_input": no_input} if no_input else {})}
    return {"figures": figures, "metrics": metrics, "chained": chained}


def probe_pairs(run: TrainingRun, directions: list[str]) -> list[str]:
    """The modality pairs of a run's single-source directions (``a:b`` once, whichever way it is asked)."""
    pairs: list[str] = []
    for direction in _directions_for(run, directions):
        sources, destination = parse_direction(direction)
        if len(sources) == 1 and not any(set(Pair.parse(p)) == {sources[0], destination} for p in pairs):
            pairs.append(f"{sources[0]}:{destination}")
    return pairs


def probe_run_pairs(run: TrainingRun, run_dir: Path, config: ExperimentConfig, cache_file: Path,
                    runtime: Runtime | None = None) -> dict:
    """Alignment probes of one run (last layer, shuffled control), cached per (run, samples, k)."""
    if not config.probe_samples:
        return {}
    cached = read_run_cache(cache_file, run_dir)
    wanted = [pair for pair in probe_pairs(run, config.directions) if pair not in cached]
    if wanted:
        runtime = _or_default(runtime)
        model, shards = load_run_model(run_dir, runtime.device), open_shards(run_shards_path(run_dir), "val")
        for pair in wanted:
            first, second = Pair.parse(pair)
            try:
                result = probe_model(model, shards, first, second, config.probe_samples,
                                     config.eval_batch_size, runtime.threads, k=config.probe_neighbours)
                cached[pair] = {key: result[key] for key in ("num_samples", "k", "summary", "shuffled")}
            except ValueError as error:  # too few samples with both: say so in the report
                cached[pair] = {"skipped": str(error)}
        write_run_cache(cache_file, cached, run_dir)
    return {pair: cached[pair] for pair in probe_pairs(run, config.directions) if pair in cached}


def region_run(run: TrainingRun, run_dir: Path, config: ExperimentConfig, cache_file: Path,
               tokenizers: Path, runtime: Runtime | None = None) -> dict:
    """Object / background (images) and content / template (captions) CE of one run, cached per (run,
    samples); not on a user's data (its semseg classes need not mean the world's sky and floor)."""
    if not config.region_samples or config.data is not None:
        return {}
    cached = read_run_cache(cache_file, run_dir)
    directions = _directions_for(run, config.directions)
    wanted = [d for d in directions if d not in cached]
    if wanted:  # evaluate_regions splits the directions it applies to (region_directions); the rest: none
        runtime = _or_default(runtime)
        results = evaluate_regions(run_dir, wanted, tokenizers, num_samples=config.region_samples,
                                   batch_size=config.eval_batch_size, threads=runtime.threads,
                                   device=runtime.device)
        for direction in wanted:
            cached[direction] = results.get(direction, {"skipped": "no token split for this destination"})
        write_run_cache(cache_file, cached, run_dir)
    return {d: cached[d] for d in directions if d in cached and "skipped" not in cached[d]}


def tokenizer_ceiling(tokenizers: Path) -> dict:
    report = tokenizers / "report.json"
    return read_json(report) if report.is_file() else {}
