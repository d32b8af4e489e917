"""The cached runner (``pairless run RECIPE``): every stage a recipe needs, cached by config hash,
resumable.

Stage outputs live under ``OUT/cache/`` in folders named by a hash of the
config that produced them (and of the hashes of their inputs), so

- a second run reuses what exists (no stage is recomputed);
- a changed setting recomputes only the stages that depend on it;
- runs shared between recipes (the many-shot model, the tokenizers) are
  trained once, whichever recipe asks first;
- an interrupted run continues where it stopped (a stage folder without its
  completion marker is resumed or redone, never read as a result).

The recipe's own folder ``OUT/<recipe>/`` receives ``results.json``,
``report.md`` and the figures.
"""

from __future__ import annotations

import platform
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pairless.experiments import stages
from pairless.experiments.estimate import Throughput
from pairless.experiments.evaluation_stages import (
    analyse_unpaired,
    evaluate_run,
    make_figures,
    probe_run_pairs,
    region_run,
    snapshot_runs,
    tokenizer_ceiling,
)
from pairless.experiments.experiment import ExperimentConfig, seedless_name
from pairless.experiments.own_recipe import fit_budgets, fit_budgets_to_shards
from pairless.experiments.plan import plan_specs, plan_summary
from pairless.experiments.references import evaluate_references, reference_directions
from pairless.experiments.report import write_report
from pairless.experiments.results import validate_results
from pairless.training.compute import DeviceProfile, device_profile
from pairless.utils.runtime import Runtime
from pairless.utils.storage import FolderLock, atomic_write_json, config_hash, is_complete


class Plan:
    """The cache folders of every stage of one experiment, derived from its config."""

    def __init__(self, config: ExperimentConfig, out: Path, device_type: str | None = None):
        """``device_type``: the device the runs train on ("cpu", "cuda"; None: this machine's), which their
        ``model.attention="auto"`` resolves for, and so their keys: a plan made here for a GPU names the
        folders the GPU's runs will have."""
        self.config = config
        self.device_type = device_type
        # absolute: the runs record their shards, and a later command may open them from another directory
        out = self.out = Path(out).absolute()
        self.cache = out / "cache"
        if config.data is not None:  # a user's folder: keyed by its path and its file listing
            self.world = Path(config.data)
            self.world_key = config_hash({"data": str(self.world.resolve()),
                                          "listing": stages.listing_fingerprint(self.world)})
        else:
            self.world_key = config_hash(config.world)
            self.world = self.cache / f"world-{self.world_key}"
        self.tokenizer_key = config_hash({"world": self.world_key, "tokenizers": stages.tokenizer_key_fields(
            config.tokenizers)})
        self.tokenizers = self.cache / f"tokenizers-{self.tokenizer_key}"
        self.shards = self.cache / f"shards-{self.tokenizer_key}"
        self.expanded = {run.name: run for run in config.expanded_runs()}
        self.runs = {name: self.cache / "runs" / f"{seedless_name(name)}-{self.run_key(run)}"
                     for name, run in self.expanded.items()}
        for stage in config.expanded_adapters():  # evaluated and drawn like runs, under their names
            key = config_hash({"base": self.run_key(self.expanded[stage.base]),
                               "adapter": stages.adapter_key_fields(stage)})
            self.runs[stage.name] = self.cache / "adapters" / f"{seedless_name(stage.name)}-{key}"
        self.recipe_dir = out / config.recipe
        self._specs: tuple[bool, tuple[dict, str]] | None = None  # (shards complete?, plan_specs)

    def specs(self) -> tuple[dict, str]:
        """The token specs the plan counts with and where they come from (:func:`plan_specs`), read once per
        state of the shards: before they exist a user's folder is read file by file."""
        made = is_complete(self.shards)
        if self._specs is None or self._specs[0] != made:
            self._specs = (made, plan_specs(self))
        return self._specs[1]

    def run_key(self, run) -> str:
        """Cache key of a training run: the shards and the resolved TrainConfig it trains with.

        The key hashes what ``train`` receives (preset and defaults applied), not the recipe's
        description of the run, so that a changed default or preset trains anew instead of reusing
        a run of the old one; the report's grouping (``label``, ``role``) is not part of it, so
        recipes sharing a run find one folder.
        """
        key = {"shards": self.tokenizer_key, "train": stages.run_key_fields(run, self.device_type)}
        if run.init_from is not None:  # a continued run: the key of the run it starts from, and its data
            key["init_from"] = self.run_key(self.expanded[run.init_from])
        if run.pseudo is not None:
            key["pseudo"] = self.pseudo_key(run)
        return config_hash(key)

    def pseudo_key(self, run) -> str:
        """Cache key of the pseudo-pair shards a continued run trains on: the stage and its generator run."""
        return config_hash({"stage": self.config.pseudo[run.pseudo].model_dump(mode="json"),
                            "generator": self.run_key(self.expanded[run.init_from])})

    def pseudo_shards(self, run) -> Path:
        return self.cache / "pseudo" / f"{run.pseudo}-{self.pseudo_key(run)}"

    def eval_file(self, run_name: str, snapshot: str = "") -> Path:
        """Cached CE results of one run (outside the run folder, whose content hash they would change), or
        of its snapshot at a fraction of training."""
        key = config_hash({"samples": self.config.eval_samples, "split": "val"})
        at = f"-at{snapshot}" if snapshot else ""
        return self.cache / "evals" / f"{self.runs[run_name].name}{at}-{key}.json"

    def region_file(self, run_name: str) -> Path:
        """Cached object / background CE of one run (beside the evaluations)."""
        # version 2: two named groups per direction (captions too); older files are recomputed
        key = config_hash({"samples": self.config.region_samples, "split": "val", "version": 2})
        return self.cache / "regions" / f"{self.runs[run_name].name}-{key}.json"

    def probe_file(self, run_name: str, snapshot: str = "") -> Path:
        """Cached alignment probes of one run, or of one of its snapshots (beside the evaluations)."""
        key = config_hash({"samples": self.config.probe_samples, "k": self.config.probe_neighbours,
                           "split": "val"})
        at = f"-at{snapshot}" if snapshot else ""
        return self.cache / "probes" / f"{self.runs[run_name].name}{at}-{key}.json"

    def summary(self, profile: DeviceProfile | None = None, measure_seconds: float = 0.5,
                threads: int | None = None) -> str:
        """What will run, where, how long it takes and what memory and disk it needs (cached stages cost
        nothing): per stage a time from the FLOPs it executes over the throughput of ``profile`` (None:
        this CPU, each stage's operations timed at its shapes for about ``measure_seconds``, with
        ``threads`` torch threads as the run will use; None: the current count)."""
        return plan_summary(self, Throughput(profile, measure_seconds, threads))


class StageClock:
    """Wall seconds per stage, in the order the stages ran (results.json's ``timings_seconds``)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        return {name: round(value, 1) for name, value in self.seconds.items()}


def fitted_plan(config: ExperimentConfig, out: Path, device_type: str | None = None) -> Plan:
    """The plan of ``config`` for ``device_type`` (see :class:`Plan`) with a user's token budgets fitted as
    the run will fit them: to the cached shards, or before they exist to the folder read as its tokenizers
    will read it (what ``--dry-run`` prints and the run starts with; the run fits again to the shards it
    made)."""
    plan = Plan(config, out, device_type)
    if config.data is None:
        return plan
    fitted = fit_budgets(config, plan.specs()[0])
    if fitted is config:
        return plan
    refitted = Plan(fitted, out, device_type)
    refitted._specs = plan._specs  # the budgets changed, not the data or the tokenizers: the same specs
    return refitted


def run_experiment(config: ExperimentConfig, out: Path, runtime: Runtime | None = None,
                   references: dict[str, Path] | None = None) -> Path:
    """Execute every stage of ``config`` under ``out``; returns the recipe folder.

    ``runtime``: the thread count and device of every stage (default: the fixed count of the usable cores,
    on the CPU); recorded in results.json. ``references``: outside models (name -> run folder) evaluated on
    the same samples and shown as columns of their own (:mod:`pairless.experiments.references`).
    """
    runtime = runtime if runtime is not None else Runtime.resolve(None, "cpu")
    device_type = runtime.device.type  # the runs' attention kernel, and so their keys, are this device's
    recipe, plan = config, fitted_plan(config, out, device_type)
    config = plan.config
    print(plan.summary(device_profile(runtime.device), threads=runtime.threads), flush=True)
    plan.recipe_dir.mkdir(parents=True, exist_ok=True)
    clock = StageClock()
    with FolderLock(plan.recipe_dir):
        check_same_data(config, plan.recipe_dir)
        inspection = prepare_data(config, plan, runtime, clock)
        if config.data is not None:  # a user's tokens per sample are known now: budgets fitted to them
            fitted = fit_budgets_to_shards(recipe, plan.shards)
            for note in fitted.notes:
                if note not in config.notes:  # the plan's reading of the folder missed it
                    print(f"  note: {note}", flush=True)
            config, plan = fitted, Plan(fitted, out, device_type)
        # outside models: their tokenizers checked now, before anything is trained
        chosen = reference_directions(references, config.directions, plan.tokenizers) if references else {}
        runs, pseudo = train_runs(config, plan, runtime, clock)
        measured = measure_runs(config, plan, runtime, clock)
        if references:  # timed with the evaluation, as they always were
            with clock.stage("evaluation (outside models)"):
                measured["references"] = evaluate_references(
                    references, chosen, plan.shards, config.eval_samples, config.eval_batch_size,
                    runtime.threads, runtime.device)
        with clock.stage("generation"):
            generation = make_figures(config, plan, runtime)
        unpaired = {}
        if config.unpaired:
            with clock.stage("unpaired"):
                unpaired = analyse_unpaired(config, plan, runtime)
        results = validate_results({
            "recipe": config.recipe, "preset": config.preset, "config": config.model_dump(mode="json"),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()} {platform.processor() or ''} {_cpu_count()} cores".strip(),
            "runtime": runtime.record(), "timings_seconds": clock.rounded(), "runs": runs, **measured,
            **({"inspection": inspection} if inspection is not None else {}),
            **({"unpaired": unpaired} if unpaired else {}), **({"pseudo_pairs": pseudo} if pseudo else {}),
            "generation": generation, "tokenizer_ceiling": tokenizer_ceiling(plan.tokenizers),
            "paths": {"world": str(plan.world), "tokenizers": str(plan.tokenizers),
                      "shards": str(plan.shards)},
        }, plan.recipe_dir / "results.json")
        atomic_write_json(plan.recipe_dir / "results.json", results.to_json())
        report = write_report(plan.recipe_dir)
    print(f"report: {report}", flush=True)
    return plan.recipe_dir


def prepare_data(config: ExperimentConfig, plan: Plan, runtime: Runtime, clock: StageClock) -> dict | None:
    """The world (or a user's folder, inspected), the tokenizers and the token shards; returns the
    inspection of a user's folder (None on the world)."""
    inspection = None
    with clock.stage("world"):
        if config.data is None:
            stages.build_world(config.world, plan.world)
        else:
            inspection = stages.inspect_data(plan.world)
    with clock.stage("tokenizers+shards"):
        stages.train_tokenizers(config.tokenizers, plan.world, plan.tokenizers, config.on_bad_sample, runtime)
        stages.tokenize(plan.world, plan.tokenizers, plan.shards, config.on_bad_sample, runtime)
    if inspection is not None:
        inspection["bad_samples"] = stages.bad_samples(plan.tokenizers, plan.shards)
        inspection["used"] = stages.used_counts(plan.shards)  # the listing less the skipped files
    return inspection


def train_runs(config: ExperimentConfig, plan: Plan, runtime: Runtime,
               clock: StageClock) -> tuple[dict, dict]:
    """Every run (and its pseudo-pairs) and every adapter; returns (what the report needs of each run,
    what each pseudo-pair stage made)."""
    runs, pseudo = {}, {}
    # runs that start from another run's weights (and, with pseudo-pairs, its translations) come last
    for run in sorted(config.expanded_runs(), key=lambda run: run.init_from is not None):
        shards = plan.shards
        init_from = plan.runs[run.init_from] if run.init_from is not None else None
        if run.pseudo is not None:
            shards = plan.pseudo_shards(run)
            with clock.stage(f"pseudo-pairs {run.name}"):
                pseudo[run.name] = stages.make_pseudo(config.pseudo[run.pseudo], init_from, plan.shards,
                                                      shards, runtime)
        with clock.stage(f"train {run.name}"):
            runs[run.name] = stages.train_run(run, shards, plan.runs[run.name], init_from, runtime)
    for stage in config.expanded_adapters():
        with clock.stage(f"add {stage.modality} {stage.name}"):
            runs[stage.name] = stages.add_adapter(stage, plan.runs[stage.base], plan.shards,
                                                  plan.runs[stage.name], runtime)
    return runs, pseudo


def measure_runs(config: ExperimentConfig, plan: Plan, runtime: Runtime, clock: StageClock) -> dict:
    """Evaluations, regions, probes and snapshots of every run and adapter (results.json's entries)."""
    every_run = [*config.expanded_runs(), *config.adapter_runs()]
    folder = plan.runs
    with clock.stage("evaluation"):
        evals = {run.name: evaluate_run(run, folder[run.name], config, plan.eval_file(run.name), runtime)
                 for run in every_run}
    with clock.stage("regions"):
        regions = {run.name: region_run(run, folder[run.name], config, plan.region_file(run.name),
                                        plan.tokenizers, runtime) for run in every_run}
    with clock.stage("probes"):
        probes = {run.name: probe_run_pairs(run, folder[run.name], config, plan.probe_file(run.name), runtime)
                  for run in every_run}
    measured = {"evals": evals, "probes": probes,
                "regions": {name: value for name, value in regions.items() if value}}
    if any(run.snapshots for run in every_run):
        with clock.stage("snapshots"):
            measured["snapshots"] = {run.name: snapshot_runs(run, folder[run.name], config, plan, runtime)
                                     for run in every_run if run.snapshots}
    return measured


def check_same_data(config: ExperimentConfig, recipe_dir: Path) -> None:
    """Refuse to replace the report of one user folder with another's in the same ``--out`` (the cache
    beside it is keyed by the data and shared; the report folder is not)."""
    previous = recipe_dir / "results.json"
    if config.data is None or not previous.is_file():
        return
    from pairless.config import ConfigError
    from pairless.utils.storage import read_json

    before = (read_json(previous).get("config") or {}).get("data")
    if before is not None and Path(before) != Path(config.data):
        raise ConfigError(f"{recipe_dir} holds the report of {before}; this run is on {config.data} and "
                          "would replace it: give this dataset its own --out, or remove "
                          f"{recipe_dir} to replace it")


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

