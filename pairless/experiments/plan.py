"""The printed plan of ``pairless run RECIPE`` (and ``--dry-run``): every stage with where it runs, its
estimated time and, per training run, its model, batch, budget, memory and checkpoint disk.

The numbers come from :mod:`pairless.experiments.estimate`; the stage folders from the runner's
:class:`~pairless.experiments.runner.Plan`. Cached stages cost nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

from pairless.config import apply_overrides
from pairless.experiments import stages
from pairless.experiments.estimate import (
    Throughput,
    estimate_run,
    inference_flops,
    planned_specs,
    tokenizer_flops,
)
from pairless.tokenizers.train import preset_config
from pairless.utils.storage import is_complete

WORLD_MODALITIES = ["rgb", "depth", "normal", "semseg", "caption", "det", "embed"]
SCENES_PER_SECOND = 400  # world rendering and tokenizing, on the CPU (measured on 2 cores)


def _schedule_steps(schedule: str, target_tokens: int) -> int:
    """Decoder passes of a generation schedule: roarN takes N, ar one per token."""
    if schedule.startswith("ar"):
        return target_tokens
    match = re.match(r"[a-z]+(\d+)", schedule)
    return int(match.group(1)) if match else 8


def _modalities(config, shards: Path) -> list[str]:
    if config.tokenizers.modalities:
        return list(config.tokenizers.modalities)
    if config.data is None:
        return WORLD_MODALITIES
    train = Path(config.data) / "train"
    folders = sorted(path.name for path in train.iterdir() if path.is_dir()) if train.is_dir() else []
    return folders or WORLD_MODALITIES


def plan_summary(plan, throughput: Throughput) -> str:
    """The plan as printed (see the module docstring)."""
    config, profile = plan.config, throughput.profile
    on_model = "GPU" if throughput.device_type == "cuda" else "CPU"
    settings = apply_overrides(preset_config(config.tokenizers.preset, seed=config.tokenizers.seed),
                                      config.tokenizers.overrides)
    modalities = _modalities(config, plan.shards)
    specs, specs_source = planned_specs(config.world.size, settings, modalities,
                                        plan.shards if is_complete(plan.shards) else None)
    device = (profile.describe() if profile is not None
              else "this CPU: throughput measured on a few real training steps of each run's model")
    lines = [f"pairless run {config.recipe} (preset {config.preset}) -> {plan.recipe_dir}",
             f"  device: {device}", f"  token specs: {specs_source}"]
    rows: list[tuple[str, str, float | None, Path | None, list[str]]] = []
    scenes = config.world.num_scenes
    if config.data is None:
        rows.append(("world", "CPU", scenes / SCENES_PER_SECOND, plan.world, []))
    else:
        rows.append(("data (your folder)", "", None, plan.world, []))
    run_rows, run_estimates = [], {}
    for run in config.expanded_runs():
        train = stages.train_config(run, plan.shards, plan.runs[run.name])
        run_specs = {name: spec for name, spec in specs.items()
                     if run.universe is None or name in run.universe}
        factor = 1.0
        if train.budget_modalities:  # the budget counts some modalities only: more tokens are trained
            factor = max(1.0, len(run_specs) / max(1, len(train.budget_modalities)))
        estimate = estimate_run(train, run_specs, throughput, factor)
        run_estimates[run.name] = (train, run_specs)
        if run.pseudo is not None:
            run_rows.append((f"pseudo-pairs {run.pseudo}", on_model, scenes / SCENES_PER_SECOND * 2,
                             plan.pseudo_shards(run), []))
        run_rows.append((f"train {run.name} ({run.role})", on_model, estimate.seconds, plan.runs[run.name],
                         estimate.details(train, train.keep_checkpoints, config.world.size,
                                          throughput.memory())))
    rate = throughput.any_rate()
    rows.append(("tokenizers", on_model, tokenizer_flops(config.world.size, settings, modalities) / rate,
                 plan.tokenizers, []))
    rows.append(("shards (tokenize)", "CPU", scenes / SCENES_PER_SECOND, plan.shards, []))
    rows += run_rows
    for stage in config.expanded_adapters():
        rows.append((f"add {stage.modality} ({stage.name})", on_model, stage.total_tokens / 12_000,
                     plan.runs[stage.name], ["(adapter time: 12,000 tokens/s, a CPU rate, not FLOP-based)"]))
    evaluation = generation = 0.0
    for name, (train, run_specs) in run_estimates.items():
        if is_complete(plan.runs[name]):
            continue
        directions = [item for item in config.directions
                      if all(part in run_specs for part in re.split(r"[+:]", item))]
        image_targets = [item for item in directions if run_specs[item.split(":")[1]].kind == "image"]
        evaluation += inference_flops(train.model, run_specs, directions, config.eval_samples)
        evaluation += inference_flops(train.model, run_specs, image_targets, config.region_samples)
        evaluation += inference_flops(train.model, run_specs, directions, config.probe_samples) / 4
        for direction in directions:
            target = run_specs[direction.split(":")[1]].num_tokens
            generation += inference_flops(train.model, run_specs, [direction], config.decoded_samples,
                                          passes=_schedule_steps("roar8", target))
    for figure in config.figures:
        if figure.dst in specs and figure.src in specs:
            target = specs[figure.dst].num_tokens
            model = run_estimates[figure.runs[0]][0].model if figure.runs[0] in run_estimates else None
            if model is not None:
                generation += len(figure.runs) * inference_flops(
                    model, specs, [f"{figure.src}:{figure.dst}"], figure.num,
                    passes=_schedule_steps(figure.schedule, target))
    total = 0.0
    for name, where, seconds, folder, details in rows:
        done = seconds is None or (folder is not None and is_complete(folder))
        total += 0.0 if done else seconds
        state = "" if seconds is None else "cached" if done else _duration(seconds)
        lines.append(f"  {name:<34} {where:<4} {state:>10}   {folder}")
        lines += [f"      {detail}" for detail in details]
    lines.append(f"  {'evaluation (CE, regions, probes)':<34} {on_model:<4} "
                 f"{_duration(evaluation / rate):>10}   {len(plan.runs) * len(config.directions)} directions")
    lines.append(f"  {'generation (figures, decoded)':<34} {on_model:<4} "
                 f"{_duration(generation / rate):>10}   {len(config.figures)} figures")
    if config.unpaired:  # own-data: the measures of the pairs never recorded together (not timed)
        lines.append(f"  and {len(config.unpaired)} unpaired analyses (both directions of "
                     f"{', '.join(config.unpaired)}: direct, chained, no input, cycle; not in the estimate)")
    total += (evaluation + generation) / rate
    lines.append(f"  estimated time for what is not cached: {_duration(total)}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"~{seconds:.0f} s"
    if seconds < 3600:
        return f"~{seconds / 60:.1f} min"
    if seconds < 86400 * 2:
        return f"~{seconds / 3600:.1f} h"
    return f"~{seconds / 86400:.1f} days"
