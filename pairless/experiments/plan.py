"""The printed plan of ``pairless run RECIPE`` (and ``--dry-run``): every stage the runner executes, with
where it runs, its estimated time and, per training run, its model, batch, budget, memory and checkpoint
disk.

Each row is one entry of the runner's ``timings_seconds`` (results.json: ``world``, ``tokenizers`` and
``shards`` (together ``tokenizers+shards``), ``train RUN``, ``pseudo-pairs RUN``, ``add M RUN``,
``evaluation``, ``regions``, ``probes``, ``snapshots``, ``generation``, ``unpaired``), so an estimate can be
held against what the run measured (benchmarks/plan_estimate.py). The numbers come from
:mod:`pairless.experiments.estimate` and :mod:`pairless.experiments.inference_work`; the stage folders from
the runner's :class:`~pairless.experiments.runner.Plan`. Cached stages cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pairless.experiments import stages
from pairless.experiments.estimate import (
    Throughput,
    estimate_adapter,
    estimate_run,
    planned_specs,
    sample_tokens,
)
from pairless.experiments.inference_work import CacheState, InferenceWork, inference_work, split_counts
from pairless.utils.storage import is_complete

WORLD_MODALITIES = ["rgb", "depth", "normal", "semseg", "caption", "det", "embed"]


@dataclass
class StageRow:
    """One stage of the plan: the runner's timing key, where it runs, its estimated seconds (None: not
    estimated), its folder, lines printed under it, and whether the runner will find it done."""

    key: str
    label: str
    where: str
    seconds: float | None
    folder: Path | None = None
    details: list[str] = field(default_factory=list)
    cached: bool = False


def _modalities(config) -> list[str]:
    if config.tokenizers.modalities:
        return list(config.tokenizers.modalities)
    if config.data is None:
        return WORLD_MODALITIES
    train = Path(config.data) / "train"
    folders = sorted(path.name for path in train.iterdir() if path.is_dir()) if train.is_dir() else []
    return folders or WORLD_MODALITIES


def _presence(config) -> dict | None:
    """The user folder's train listing ({modality: has it, per sample}); None for the world."""
    if config.data is None:
        return None
    from pairless.data.co_occurrence import listed_presence

    try:
        return listed_presence(config.data, "train")[1]
    except (OSError, ValueError):
        return None


def plan_specs(plan) -> tuple[dict, str]:
    """The token specs the plan counts with (the cached shards', a user's folder read as its tokenizers
    will read it, or the world's as the tokenizer preset makes them), and where they come from."""
    config = plan.config
    if config.data is not None:  # the modalities declared beside the user's data, planned like the others
        from pairless.data.declared import declare_from

        declare_from(config.data)
    return planned_specs(config.world.size, config.tokenizers.config(), _modalities(config),
                         plan.shards if is_complete(plan.shards) else None,
                         Path(config.data) if config.data is not None else None)


def plan_stages(plan, throughput: Throughput, cache: CacheState | None = None) -> tuple[list[StageRow], str]:
    """Every stage of ``plan`` as a :class:`StageRow`, in the runner's order, marked cached where ``cache``
    (default: the plan's folders) holds it, as the runner skips it; and where the token specs come from."""
    config = plan.config
    cache = cache if cache is not None else CacheState(plan)
    # the device the plan is for, not this machine's: a GPU run's attention kernel ("auto": sdpa there) and
    # its memory are that device's
    device_type = throughput.device_type
    on_model = "GPU" if device_type == "cuda" else "CPU"
    settings = config.tokenizers.config()
    modalities = _modalities(config)
    specs, specs_source = plan.specs()  # plan_specs, read once per Plan
    # the images' size: a user's folder has its own (the tokenizers' and the tokenizing's time depend on it)
    size = next((spec.grid[0] * settings.spatial.downsample for spec in specs.values()
                 if spec.kind == "image" and spec.grid), config.world.size)
    rows: list[StageRow] = []
    if config.data is None:
        rows.append(StageRow("world", "world", "CPU",
                             throughput.world(config.world.num_scenes, config.world.size), plan.world,
                             cached=cache.stage("world", plan.world)))
    else:
        rows.append(StageRow("world", "data (your folder)", "", None, plan.world))
    rows.append(StageRow("tokenizers", "tokenizers", on_model,
                         throughput.tokenizers(size, settings, modalities), plan.tokenizers,
                         cached=cache.stage("tokenizers", plan.tokenizers)))
    rows.append(StageRow("shards", "shards (tokenize)", on_model,
                         throughput.tokenize(plan, settings, specs, size), plan.shards,
                         cached=cache.stage("shards", plan.shards)))
    trained = {}
    train_presence = _presence(config)
    for run in sorted(config.expanded_runs(), key=lambda run: run.init_from is not None):
        train = stages.train_config(run, plan.shards, plan.runs[run.name], device_type=device_type)
        run_specs = {name: spec for name, spec in specs.items()
                     if run.universe is None or name in run.universe}
        factor = 1.0
        if train.budget_modalities:  # the budget counts some modalities only: more tokens are trained
            factor = max(1.0, len(run_specs) / max(1, len(train.budget_modalities)))
        tokens = sample_tokens(train, run_specs, train_presence, split_counts(config, "train", []))
        estimate = estimate_run(train, run_specs, throughput, factor, tokens)
        trained[run.name] = (train, run_specs)
        if run.pseudo is not None:
            pseudo = config.pseudo[run.pseudo]
            seconds = throughput.inference_seconds(
                InferenceWork.pseudo_pairs(train.model, run_specs, pseudo, plan, config), train.model,
                run_specs, config.eval_batch_size)
            rows.append(StageRow(f"pseudo-pairs {run.name}", f"pseudo-pairs {run.pseudo}", on_model, seconds,
                                 plan.pseudo_shards(run), cached=cache.pseudo(run)))
        rows.append(StageRow(f"train {run.name}", f"train {run.name} ({run.role})", on_model,
                             estimate.seconds, plan.runs[run.name],
                             estimate.details(train, train.keep_checkpoints, size,
                                              throughput.memory()), cached=cache.run(run.name)))
    for run in config.adapter_runs():  # evaluated, probed and drawn like runs: the base model + a modality
        trained[run.name] = (stages.train_config(run, plan.shards, plan.runs[run.name],
                                                 device_type=device_type),
                             {name: spec for name, spec in specs.items()
                              if run.universe is None or name in run.universe})
    for stage in config.expanded_adapters():
        flops, seconds = estimate_adapter(stage, trained[stage.base][0], trained[stage.name][1], throughput)
        rows.append(StageRow(f"add {stage.modality} {stage.name}", f"add {stage.modality} ({stage.name})",
                             on_model, seconds, plan.runs[stage.name],
                             [f"adapter on {stage.base}: {stage.total_tokens:,} tokens, {flops / 1e15:,.2f} "
                              "PFLOP (frozen weights: no weight gradients)"], cached=cache.run(stage.name)))
    work = inference_work(plan, specs, trained, cache)
    for key, label in (("evaluation", "evaluation (CE)"), ("regions", "regions (object / background CE)"),
                       ("probes", "probes (alignment)"), ("snapshots", "snapshots (evals, probes)"),
                       ("generation", "generation (figures, decoded)"),
                       ("unpaired", "unpaired (direct, chained, cycle)")):
        if key in work:
            rows.append(StageRow(key, label, on_model, throughput.work_seconds(work[key], config), None,
                                 [work[key].describe()]))
    return rows, specs_source


def plan_summary(plan, throughput: Throughput) -> str:
    """The plan as printed (see the module docstring)."""
    config, profile = plan.config, throughput.profile
    rows, specs_source = plan_stages(plan, throughput)
    device = (profile.describe() if profile is not None
              else f"this CPU ({throughput.describe_threads()}): each stage's operations timed at its shapes "
                   "for a few seconds (pairless.experiments.calibrate)")
    lines = [f"pairless run {config.recipe} (preset {config.preset}) -> {plan.recipe_dir}",
             f"  device: {device}", f"  token specs: {specs_source}"]
    load = throughput.load_note()
    if load:
        lines.append(f"  {load}")
    total = 0.0
    for row in rows:
        state = "" if row.seconds is None else "cached" if row.cached else _duration(row.seconds)
        total += 0.0 if row.cached or row.seconds is None else row.seconds
        lines.append(f"  {row.label:<34} {row.where:<4} {state:>10}   {row.folder or ''}".rstrip())
        lines += [f"      {detail}" for detail in row.details]
    lines.append(f"  estimated time for what is not cached: {_duration(total)}")
    lines += [f"  note: {note}" for note in config.notes]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"~{seconds:.0f} s"
    if seconds < 3600:
        return f"~{seconds / 60:.1f} min"
    if seconds < 86400 * 2:
        return f"~{seconds / 3600:.1f} h"
    return f"~{seconds / 86400:.1f} days"
