"""Recipes: small functions that return a typed experiment config.

Each recipe reproduces one part of the study (``visual-pairs`` = its Table I,
``binding`` = Table II plus matched many-shot controls, ``caption`` = its
Section IV-C), goes beyond it (``pairs-curve``: zero-shot to few-shot) or is the quick
``demo``. Every recipe has presets:

- ``micro``: seconds, for tests (tiny world, a few training steps);
- ``quick``: a smaller CPU budget (12k scenes, fast tokenizers, 3M tokens per run): a whole recipe in
  about 10-25 minutes on 2 cores, for a first look;
- ``tiny``: the CPU preset (32x32 world, tiny models, minutes per run);
- ``paper``: a GPU preset at the study's model sizes (4M-B and 4M-L roles).

A config lists the stages the runner executes: one world, one tokenizer set,
the training runs (each with its role and withheld pairs), the evaluation
directions and the generation figures. Runs that are identical across
recipes (the many-shot model, the larger model) hash to the same cache
folder and are trained once.
"""

from __future__ import annotations

from collections.abc import Callable

from pairless.config import ConfigError
from pairless.experiments.experiment import (
    AdapterStage,
    ExperimentConfig,
    Figure,
    PseudoStage,
    Role,
    TokenizerStage,
    TrainingRun,
    WorldStage,
)
from pairless.modalities import WORLD_MODALITIES

# Scale of each preset: world size, tokenizer preset, per-run token budgets, eval samples.
_SCALE: dict[str, dict] = {
    "micro": dict(num_scenes=96, size=32, tokenizer_preset="micro", model="tiny", larger="tiny",
                  model_overrides=["model.dim=32", "model.encoder_layers=1", "model.decoder_layers=1",
                                   "model.heads=2"],
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
                  # default
                  train_overrides=["base_lr=0.0001"],
                  tokens=2_000_000_000, larger_tokens=10_000_000_000, batch=256, budget=(128, 128),
                  eval_samples=2500, decoded=256, figure_num=8),
}

# The study's binding sets for Ma=rgb, Mb=depth (its Section IV-B).
BINDING_SETS: dict[int, tuple[str, ...]] = {
    0: (),
    1: ("normal",),
    3: ("normal", "semseg", "embed"),
    5: ("normal", "semseg", "embed", "caption", "det"),
}

# The binding modality each withheld rgb pair of visual-pairs is chained through.
CHAIN_VIA: dict[str, str] = {"normal": "depth", "depth": "normal", "semseg": "normal"}

# The study's generation schedules (its Table III), by direction.
SCHEDULE_FOR: dict[tuple[str, str], str] = {
    ("rgb", "normal"): "roar1", ("rgb", "depth"): "roar1", ("rgb", "semseg"): "roar1",
    ("normal", "rgb"): "roar8", ("depth", "rgb"): "roar8", ("semseg", "rgb"): "roar8",
    ("rgb", "caption"): "ar-caption", ("caption", "rgb"): "roar25-caption",
    ("normal", "depth"): "roar1", ("depth", "normal"): "roar1",  # geometry to geometry, like rgb -> depth
}


def _base(recipe: str, preset: str, tokenizer_modalities=None) -> dict:
    scale = _SCALE[preset]
    return dict(
        recipe=recipe,
        preset=preset,
        world=WorldStage(num_scenes=scale["num_scenes"], size=scale["size"]),
        tokenizers=TokenizerStage(preset=scale["tokenizer_preset"], modalities=tokenizer_modalities),
        eval_samples=scale["eval_samples"],
        decoded_samples=scale["decoded"],
        probe_neighbours=3 if preset == "micro" else 10,  # micro's val split holds ~10 samples
    )


def _run(preset: str, name: str, role: Role, *, withheld=(), universe=None, label: str = "") -> TrainingRun:
    scale = _SCALE[preset]
    larger = role == "larger"
    return TrainingRun(
        name=name,
        role=role,
        label=label,
        model_preset=scale["larger"] if larger else scale["model"],
        withheld=[tuple(pair) for pair in withheld],
        universe=list(universe) if universe is not None else None,
        total_tokens=scale["larger_tokens"] if larger else scale["tokens"],
        batch_size=scale["batch"],
        input_budget=scale["budget"][0],
        target_budget=scale["budget"][1],
        overrides=[*scale.get("model_overrides", []), *scale.get("train_overrides", [])],
    )


def _figure(preset: str, src: str, dst: str, runs: list[str]) -> Figure:
    return Figure(src=src, dst=dst, schedule=SCHEDULE_FOR.get((src, dst), "roar8"), runs=runs,
                  num=_SCALE[preset]["figure_num"])


def visual_pairs(preset: str = "tiny") -> ExperimentConfig:
    """Table I: rgb <-> normal / depth / semseg, zero-shot vs many-shot vs a larger model."""
    runs = [_run(preset, f"zs-rgb-{other}", "zero-shot", withheld=[("rgb", other)], label=other)
            for other in ("normal", "depth", "semseg")]
    runs += [_run(preset, "many-shot", "many-shot"), _run(preset, "larger", "larger")]
    directions = [f"rgb:{o}" for o in ("normal", "depth", "semseg")] + [f"{o}:rgb"
                                                                        for o in ("normal", "depth",
                                                                                  "semseg")]
    figures = [_figure(preset, *d.split(":"), runs=[f"zs-rgb-{_other(d)}", "many-shot", "larger"])
               for d in directions]
    # The chained baseline: each zero-shot model reaches its withheld modality through a binder it did see
    # with both ends (rgb -> normal -> depth); if that beats the direct translation, the model has learned
    # two translations rather than a shared latent.
    figures += [_figure(preset, "rgb", other, runs=[f"zs-rgb-{other}"]).model_copy(update={"via": via})
                for other, via in CHAIN_VIA.items()]
    return ExperimentConfig(**_base("visual-pairs", preset), runs=runs, directions=directions,
                            figures=figures)


def binding(preset: str = "tiny") -> ExperimentConfig:
    """Table II, and beyond it: zero-shot and matched many-shot per binding set (rgb, depth withheld)."""
    runs = []
    for count, binding_set in BINDING_SETS.items():
        universe = ["rgb", "depth", *binding_set]
        label = f"{count}"
        if count == 5:  # the full universe: these are the visual-pairs runs, shared through the cache
            runs.append(_run(preset, "zs-rgb-depth", "zero-shot", withheld=[("rgb", "depth")], label=label))
            runs.append(_run(preset, "many-shot", "many-shot", label=label))
        else:
            runs.append(_run(preset, f"zs-bind{count}", "zero-shot", withheld=[("rgb", "depth")],
                             universe=universe, label=label))
            runs.append(_run(preset, f"ms-bind{count}", "many-shot", universe=universe, label=label))
    figures = [_figure(preset, "rgb", "depth", runs=[f"zs-bind{c}" for c in (0, 1, 3)] + ["zs-rgb-depth"])]
    return ExperimentConfig(**_base("binding", preset), runs=runs, directions=["rgb:depth", "depth:rgb"],
                            figures=figures)


def binding_exposure(preset: str = "tiny") -> ExperimentConfig:
    """The binding ablation with exposure matched: every run trains until it has seen the same number of
    rgb and depth tokens (half the preset's budget, what one binding modality sees at the full budget), so
    the binding sets differ in binders only; runs with more binders train longer."""
    counted = _SCALE[preset]["tokens"] // 2
    runs = []
    for count, binding_set in BINDING_SETS.items():
        universe = ["rgb", "depth", *binding_set]
        for name, role, withheld in ((f"zs-exp{count}", "zero-shot", [("rgb", "depth")]),
                                     (f"ms-exp{count}", "many-shot", [])):
            run = _run(preset, name, role, withheld=withheld, universe=universe, label=f"{count}")
            runs.append(run.model_copy(update={"total_tokens": counted, "overrides": [
                *run.overrides, 'budget_modalities=["rgb","depth"]']}))
    figures = [_figure(preset, "rgb", "depth", runs=[f"zs-exp{c}" for c in BINDING_SETS])]
    return ExperimentConfig(**_base("binding-exposure", preset), runs=runs,
                            directions=["rgb:depth", "depth:rgb"], figures=figures)


# One binding modality each, from the strongest to the weakest tie to depth: surface normals carry the
# geometry, semseg only where objects are, embed (a global feature vector) no layout at all.
SINGLE_BINDERS: tuple[str, ...] = ("normal", "semseg", "embed")


def binding_strength(preset: str = "tiny") -> ExperimentConfig:
    """Binding strength, not count: rgb and depth withheld, one binding modality at a time (strong to weak),
    each with its matched many-shot control; no binder is the floor."""
    runs = [_run(preset, "zs-bind0", "zero-shot", withheld=[("rgb", "depth")], universe=["rgb", "depth"],
                 label="binder:none"),
            _run(preset, "ms-bind0", "many-shot", universe=["rgb", "depth"], label="binder:none")]
    for binder in SINGLE_BINDERS:
        universe = ["rgb", "depth", binder]
        name = "bind1" if binder == "normal" else f"bind1-{binder}"  # bind1: the binding recipe's runs
        runs.append(_run(preset, f"zs-{name}", "zero-shot", withheld=[("rgb", "depth")], universe=universe,
                         label=f"binder:{binder}"))
        runs.append(_run(preset, f"ms-{name}", "many-shot", universe=universe, label=f"binder:{binder}"))
    shown = ["zs-bind0", *[f"zs-bind1{'' if b == 'normal' else '-' + b}" for b in SINGLE_BINDERS]]
    figures = [_figure(preset, "rgb", "depth", runs=shown)]
    return ExperimentConfig(**_base("binding-strength", preset), runs=runs,
                            directions=["rgb:depth", "depth:rgb"], figures=figures)


def caption(preset: str = "tiny") -> ExperimentConfig:
    """Section IV-C: rgb and caption withheld; rgb -> caption and caption -> rgb."""
    runs = [_run(preset, "zs-rgb-caption", "zero-shot", withheld=[("rgb", "caption")]),
            _run(preset, "many-shot", "many-shot"), _run(preset, "larger", "larger")]
    names = ["zs-rgb-caption", "many-shot", "larger"]
    figures = [_figure(preset, "rgb", "caption", names), _figure(preset, "caption", "rgb", names)]
    return ExperimentConfig(**_base("caption", preset), runs=runs, directions=["rgb:caption", "caption:rgb"],
                            figures=figures)


def demo(preset: str = "tiny") -> ExperimentConfig:
    """A fast version for the README's first command: rgb+depth withheld vs many-shot, 4 modalities."""
    universe = ["rgb", "depth", "normal", "semseg"]
    base = _base("demo", preset, tokenizer_modalities=universe)
    if preset == "tiny":  # the demo must finish in ~15 minutes on 2 cores, set-up included
        base["world"] = WorldStage(num_scenes=12000, size=32)
        base["tokenizers"] = TokenizerStage(preset="demo", modalities=universe)
        base["eval_samples"] = 1000
    runs = [_run(preset, "zs-rgb-depth", "zero-shot", withheld=[("rgb", "depth")], universe=universe),
            _run(preset, "many-shot", "many-shot", universe=universe)]
    if preset == "tiny":
        runs = [run.model_copy(update={"total_tokens": 8_000_000}) for run in runs]
    names = [run.name for run in runs]
    figures = [_figure(preset, "rgb", "depth", names), _figure(preset, "depth", "rgb", names)]
    return ExperimentConfig(**base, runs=runs, directions=["rgb:depth", "depth:rgb"], figures=figures)


# Paired samples allowed in the pairs-curve's few-shot runs (those a preset's training split can hold).
PAIRS_CURVE_KS: tuple[int, ...] = (16, 64, 256, 1024, 4096)


def train_samples(world: WorldStage) -> int:
    """Training samples of a world stage (every scene has every modality): the scenes not in val."""
    return world.num_scenes - int(round(world.num_scenes * world.val_fraction))


def pairs_curve(preset: str = "tiny") -> ExperimentConfig:
    """Zero-shot to few-shot: rgb:depth withheld except in k samples, and a model on those k samples alone.

    k = 0 is the zero-shot run of ``visual-pairs`` and ``binding``, k = all their many-shot run (shared
    through the cache); the k that the training split cannot hold are left out. The paired-only baseline
    trains the same model and budget on rgb and depth of the k samples alone (its batch at most k).
    """
    base = _base("pairs-curve", preset)
    pair = ("rgb", "depth")
    key = ":".join(pair)
    available = train_samples(base["world"])
    ks = [k for k in PAIRS_CURVE_KS if k < available]
    runs = [_run(preset, "zs-rgb-depth", "zero-shot", withheld=[pair], label="k=0")]
    for k in ks:
        few_shot = _run(preset, f"pairs-k{k}", "few-shot", withheld=[pair], label=f"k={k}")
        runs.append(few_shot.model_copy(update={"allow_pairs": {key: k}}))
    runs.append(_run(preset, "many-shot", "many-shot", label="k=all"))
    for k in ks:
        alone = _run(preset, f"paired-only-k{k}", "paired-only", withheld=[pair], universe=pair,
                     label=f"k={k}")
        runs.append(alone.model_copy(update={"allow_pairs": {key: k}, "only_paired": True,
                                             "batch_size": min(alone.batch_size, k)}))
    middle = f"pairs-k{ks[len(ks) // 2]}" if ks else None
    shown = ["zs-rgb-depth", *([middle] if middle else []), "many-shot"]
    figure = _figure(preset, "rgb", "depth", shown).model_copy(
        update={"scored_runs": [run.name for run in runs if run.name not in shown]})
    return ExperimentConfig(**base, runs=runs, directions=["rgb:depth", "depth:rgb"], figures=[figure])


def transitive(preset: str = "tiny") -> ExperimentConfig:
    """Transitive pseudo-pairs (LoReTTa-style) against the honest control: the rgb:depth zero-shot run
    generates depth for its training samples that show rgb without depth, then continues on real + pseudo
    samples; the control continues the same run for the same extra budget on real data alone."""
    pair = ("rgb", "depth")
    extra = _SCALE[preset]["tokens"] // 2
    base = "zs-rgb-depth"
    runs = [_run(preset, base, "zero-shot", withheld=[pair], label="base"),
            _run(preset, "many-shot", "many-shot")]
    for name, role, pseudo in (("pp-pseudo", "pseudo-pairs", "rgb-to-depth"),
                               ("pp-filtered", "pseudo-pairs", "rgb-to-depth-filtered"),
                               ("pp-sampled", "pseudo-pairs", "rgb-to-depth-sampled"),
                               ("pp-control", "continued", None)):
        run = _run(preset, name, role, withheld=[pair], label=name.split("-")[1])
        runs.append(run.model_copy(update={"total_tokens": extra, "init_from": base, "pseudo": pseudo}))
    # the study's schedule (near the mode: temperature 0.01, guidance 2); the same keeping the more
    # consistent half; and samples of the model's own distribution (8 steps, temperature 1, no guidance)
    stages = {"rgb-to-depth": PseudoStage(direction="rgb:depth", schedule=SCHEDULE_FOR[pair]),
              "rgb-to-depth-filtered": PseudoStage(direction="rgb:depth", schedule=SCHEDULE_FOR[pair],
                                                   keep_fraction=0.5),
              "rgb-to-depth-sampled": PseudoStage(direction="rgb:depth", schedule="sample8")}
    shown = [base, "pp-control", "pp-pseudo", "pp-filtered", "pp-sampled", "many-shot"]
    figures = [_figure(preset, "rgb", "depth", shown), _figure(preset, "depth", "rgb", shown)]
    return ExperimentConfig(**_base("transitive", preset), runs=runs, directions=["rgb:depth", "depth:rgb"],
                            figures=figures, pseudo=stages)


def adapter(preset: str = "tiny") -> ExperimentConfig:
    """Add normal to a model trained without it, through an adapter trained on rgb-normal pairs only
    (M2M-style; every base weight frozen), with and without the structure-preserving term; then translate
    between normal and what the adapter never saw it with (depth, semseg), against a model trained with
    normal from the start and against no input."""
    added, anchor = "normal", "rgb"
    without = [name for name in WORLD_MODALITIES if name != added]
    runs = [_run(preset, "base-no-normal", "frozen-base", universe=without, label="base"),
            _run(preset, "many-shot", "many-shot", label="from the start")]
    tokens = {"micro": 20_000}.get(preset, 2_000_000)
    overrides = [f"batch_size={_SCALE[preset]['batch']}"]  # the masking budgets: the base run's
    adapters = [AdapterStage(name="adapter", base="base-no-normal", modality=added, anchor=anchor,
                             label="adapter", total_tokens=tokens, overrides=overrides),
                AdapterStage(name="adapter-structure", base="base-no-normal", modality=added, anchor=anchor,
                             label="adapter + structure term", total_tokens=tokens, structure_weight=1.0,
                             overrides=overrides)]
    directions = ["normal:depth", "depth:normal", "normal:semseg", "rgb:normal", "normal:rgb"]
    shown = ["adapter", "adapter-structure", "many-shot"]
    figures = [_figure(preset, "normal", "depth", shown), _figure(preset, "depth", "normal", shown)]
    return ExperimentConfig(**_base("adapter", preset), runs=runs, directions=directions, figures=figures,
                            adapters=adapters)


# Fractions of the budget at which the probe-curve's runs keep their weights (the end is the final model).
PROBE_SNAPSHOTS: tuple[float, ...] = (0.0625, 0.125, 0.25, 0.5)


def probe_curve(preset: str = "tiny") -> ExperimentConfig:
    """Alignment along training: the rgb:depth zero-shot run and the many-shot run keep their weights at a
    few fractions of the budget; each snapshot is evaluated and probed, so the probes can be set against
    the recovered fraction as the model learns (snapshots of both runs at the same fraction)."""
    runs = [_run(preset, "zs-rgb-depth", "zero-shot", withheld=[("rgb", "depth")]),
            _run(preset, "many-shot", "many-shot")]
    runs = [run.model_copy(update={"snapshots": list(PROBE_SNAPSHOTS)}) for run in runs]
    return ExperimentConfig(**_base("probe-curve", preset), runs=runs, directions=["rgb:depth", "depth:rgb"])


def _other(direction: str) -> str:
    src, dst = direction.split(":")
    return dst if src == "rgb" else src


# Held-out samples with both modalities a direction needs before it is evaluated on a user's data.
MIN_EVAL_PAIRS = 2


def own_data(preset: str = "tiny", data: str | None = None, withhold=(), compare=()) -> ExperimentConfig:
    """A user's folder: train on everything as it is, evaluate every direction with held-out ground truth,
    compare zero-shot with the all-data model for the ``compare`` pairs, and say what can be measured for
    the pairs never recorded together (``withhold`` simulates more of them)."""
    from pathlib import Path

    from pairless.data.inspect import co_occurrence, pair_count

    if data is None:
        raise ConfigError("own-data: --data DIR is required (a dataset folder with train/ and val/)")
    counts = {split: co_occurrence(data, split) for split in ("train", "val")}
    names = list(counts["train"]["modalities"])
    for option, pairs in (("--withhold", withhold), ("--compare", compare)):
        for a, b in pairs:
            for name in (a, b):
                if name not in names:
                    raise ConfigError(f"{option} {a}:{b}: {name!r} is not in {data}/train "
                                      f"(it holds {', '.join(names)})")
    for a, b in compare:
        if pair_count(counts["train"], a, b) == 0 or pair_count(counts["val"], a, b) < MIN_EVAL_PAIRS:
            raise ConfigError(f"--compare {a}:{b}: needs samples with both in train and at least "
                              f"{MIN_EVAL_PAIRS} in val (found {pair_count(counts['train'], a, b)} and "
                              f"{pair_count(counts['val'], a, b)}); a pair never recorded together is "
                              "reported without it")
    scale = _SCALE[preset]
    base = _base("own-data", preset)
    base.update(data=str(Path(data).resolve()), on_bad_sample="skip",
                tokenizers=TokenizerStage(preset=scale["tokenizer_preset"]))
    withheld = [(a, b) for a, b in withhold]
    runs = [_run(preset, "all-data", "many-shot", withheld=withheld)]
    for a, b in compare:
        runs.append(_run(preset, f"zs-{a}-{b}", "zero-shot", withheld=[*withheld, (a, b)], label=f"{a}:{b}"))
    directions = [f"{a}:{b}" for a in names for b in names
                  if a != b and pair_count(counts["val"], a, b) >= MIN_EVAL_PAIRS]
    # never together in training (paired samples in val/ only are ground truth for a true zero-shot test)
    never = [f"{a}:{b}" for index, a in enumerate(names) for b in names[index + 1:]
             if pair_count(counts["train"], a, b) == 0]
    unpaired = never + [f"{a}:{b}" for a, b in withheld if f"{a}:{b}" not in never]
    train_pairs = {frozenset(p.split(":")) for p, n in counts["train"]["pairs"].items() if n > 0}
    train_pairs -= {frozenset(p) for p in withheld}
    bridges = {pair: [m for m in names if m not in pair.split(":")
                      and all(frozenset((m, end)) in train_pairs for end in pair.split(":"))]
               for pair in unpaired}
    figures = [_figure(preset, src, dst, runs=[f"zs-{a}-{b}", "all-data"])
               for a, b in compare for src, dst in ((a, b), (b, a))]
    return ExperimentConfig(**base, runs=runs, directions=directions, figures=figures, unpaired=unpaired,
                            bridges=bridges)


RECIPES: dict[str, Callable[..., ExperimentConfig]] = {
    "demo": demo,
    "visual-pairs": visual_pairs,
    "binding": binding,
    "binding-exposure": binding_exposure,
    "binding-strength": binding_strength,
    "caption": caption,
    "pairs-curve": pairs_curve,
    "transitive": transitive,
    "adapter": adapter,
    "probe-curve": probe_curve,
    "own-data": own_data,
}
DATA_RECIPES = {"own-data"}  # recipes on a user's folder (--data, --withhold, --compare)


def get_recipe(name: str, preset: str = "tiny", **options) -> ExperimentConfig:
    """The config of recipe ``name`` at ``preset``; errors name the allowed values. ``options``:
    ``data``, ``withhold``, ``compare`` for own-data."""
    if name not in RECIPES:
        raise ConfigError(f"recipe: unknown recipe {name!r}; allowed: {', '.join(RECIPES)}")
    if preset not in _SCALE:
        raise ConfigError(f"preset: unknown preset {preset!r}; allowed: {', '.join(_SCALE)}")
    given = {key: value for key, value in options.items() if value}
    if given and name not in DATA_RECIPES:
        raise ConfigError(f"{', '.join('--' + key for key in given)}: only for {', '.join(DATA_RECIPES)}; "
                          f"{name!r} runs on the built-in world")
    config = RECIPES[name](preset, **given)
    if config.data is None:
        for run in config.runs:
            for modality in (run.universe or []):
                if modality not in WORLD_MODALITIES:
                    raise ConfigError(f"runs.{run.name}.universe: unknown modality {modality!r}")
    return config
