"""The scale of each recipe preset (world, tokenizers, budgets, evaluation) and the helpers every recipe
builds its stages with (pairless.experiments.recipes, own_recipe)."""

from __future__ import annotations

from pairless.experiments.experiment import Figure, Role, TokenizerStage, TrainingRun, WorldStage

# Scale of each preset: world size, tokenizer preset, per-run token budgets, eval samples.
SCALE: dict[str, dict] = {
    "micro": dict(num_scenes=96, size=32, tokenizer_preset="micro", model="tiny", larger="tiny",
                  model_settings=dict(dim=32, encoder_layers=1, decoder_layers=1, heads=2),
                  tokens=40_000, larger_tokens=60_000, batch=16, budget=(48, 48), eval_samples=16,
                  decoded=4, figure_num=2),
    "quick": dict(num_scenes=12000, size=32, tokenizer_preset="demo", model="tiny", larger="small",
                  tokens=3_000_000, larger_tokens=4_000_000, batch=32, budget=(64, 64), eval_samples=1000,
                  decoded=16, figure_num=6),
    "tiny": dict(num_scenes=22000, size=32, tokenizer_preset="tiny", model="tiny", larger="small",
                 tokens=8_000_000, larger_tokens=12_000_000, batch=32, budget=(64, 64), eval_samples=2500,
                 decoded=64, figure_num=8),
    "paper": dict(num_scenes=200_000, size=64, tokenizer_preset="base", model="base", larger="large",
                  # 4M's own learning rate (base 1e-4 per 256 samples); the CPU presets use the trainer's
                  # default. The micro-batch that fits the device: the larger run's batch of 256 needs
                  # ~136 GiB in one pass with explicit attention, 64 per pass fits an 80 GB GPU
                  # (pairless.training.memory; docs/training.md)
                  train_settings=dict(base_lr=0.0001, micro_batch_size="auto"),
                  tokens=2_000_000_000, larger_tokens=10_000_000_000, batch=256, budget=(128, 128),
                  eval_samples=2500, decoded=256, figure_num=8),
}

# The study's generation schedules (its Table III), by direction.
SCHEDULE_FOR: dict[tuple[str, str], str] = {
    ("rgb", "normal"): "roar1", ("rgb", "depth"): "roar1", ("rgb", "semseg"): "roar1",
    ("normal", "rgb"): "roar8", ("depth", "rgb"): "roar8", ("semseg", "rgb"): "roar8",
    ("rgb", "caption"): "ar-caption", ("caption", "rgb"): "roar25-caption",
    ("normal", "depth"): "roar1", ("depth", "normal"): "roar1",  # geometry to geometry, like rgb -> depth
}


def common(recipe: str, preset: str, tokenizer_modalities=None) -> dict:
    """The fields every recipe's ExperimentConfig shares at ``preset``: world, tokenizers, eval sizes."""
    scale = SCALE[preset]
    return dict(
        recipe=recipe,
        preset=preset,
        world=WorldStage(num_scenes=scale["num_scenes"], size=scale["size"]),
        tokenizers=TokenizerStage(preset=scale["tokenizer_preset"], modalities=tokenizer_modalities),
        eval_samples=scale["eval_samples"],
        decoded_samples=scale["decoded"],
        probe_neighbours=3 if preset == "micro" else 10,  # micro's val split holds ~10 samples
    )


def new_run(preset: str, name: str, role: Role, *, withheld=(), universe=None,
            label: str = "") -> TrainingRun:
    """A training run at ``preset``'s scale (the larger model's preset and budget for role ``larger``)."""
    scale = SCALE[preset]
    larger = role == "larger"
    fragment: dict = {"seed": 0, "withheld": [list(pair) for pair in withheld]}
    if universe is not None:
        fragment["universe"] = list(universe)
    train = {"model": {"preset": scale["larger"] if larger else scale["model"],
                       **scale.get("model_settings", {})},
             "total_tokens": scale["larger_tokens"] if larger else scale["tokens"],
             "batch_size": scale["batch"], "seed": 0, "fragment": fragment,
             "masking": {"input_budget": scale["budget"][0], "target_budget": scale["budget"][1]},
             **scale.get("train_settings", {})}
    return TrainingRun(name=name, role=role, label=label, train=train)


def figure_of(preset: str, src: str, dst: str, runs: list[str]) -> Figure:
    """A generation figure of ``src`` -> ``dst`` with the study's schedule for that direction."""
    return Figure(src=src, dst=dst, schedule=SCHEDULE_FOR.get((src, dst), "roar8"), runs=runs,
                  num=SCALE[preset]["figure_num"])


def presets_epilog() -> str:
    """The preset table as the ``--help`` of run, tokenizers and train shows it."""
    return "presets across commands (docs/data.md):\n" + preset_table()


def preset_table() -> str:
    """How the preset names of ``pairless run``, ``tokenizers train`` and ``train`` map to each other (a
    markdown table, also shown by their ``--help``): each run preset is a tokenizer preset and a model preset
    at one data scale."""
    lines = ["| run --preset | tokenizers train --preset | train --preset (larger model) | world scenes | "
             "tokens per run |", "|---|---|---|---|---|"]
    for name, scale in SCALE.items():
        model = scale["model"] + (" with dim 32, 1 layer each side" if scale.get("model_settings") else "")
        lines.append(f"| {name} | {scale['tokenizer_preset']} | {model} ({scale['larger']}) | "
                     f"{scale['num_scenes']:,} | {scale['tokens']:,} |")
    return "\n".join(lines)
