"""Recipes: small functions that return a typed experiment config.

Each recipe reproduces one part of the study (``visual-pairs`` = its Table I,
``binding`` = Table II plus matched many-shot controls, ``caption`` = its
Section IV-C), goes beyond it (``pairs-curve``: zero-shot to few-shot) or is the quick
``demo``. Every recipe has presets (their scale: :mod:`pairless.experiments.scale`; the recipe on a
user's folder: :mod:`pairless.experiments.own_recipe`):

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
    PseudoStage,
    TokenizerStage,
    WorldStage,
)
from pairless.experiments.own_recipe import own_data
from pairless.experiments.scale import SCALE, SCHEDULE_FOR, common, figure_of, new_run
from pairless.modalities import WORLD_MODALITIES, Pair

# The study's binding sets for Ma=rgb, Mb=depth (its Section IV-B).
BINDING_SETS: dict[int, tuple[str, ...]] = {
    0: (),
    1: ("normal",),
    3: ("normal", "semseg", "embed"),
    5: ("normal", "semseg", "embed", "caption", "det"),
}

# The binding modality each withheld rgb pair of visual-pairs is chained through.
CHAIN_VIA: dict[str, str] = {"normal": "depth", "depth": "normal", "semseg": "normal"}

def visual_pairs(preset: str = "tiny") -> ExperimentConfig:
    """Table I: rgb <-> normal / depth / semseg, zero-shot vs many-shot vs a larger model."""
    runs = [new_run(preset, f"zs-rgb-{other}", "zero-shot", withheld=[("rgb", other)], label=other)
            for other in ("normal", "depth", "semseg")]
    runs += [new_run(preset, "many-shot", "many-shot"), new_run(preset, "larger", "larger")]
    others = ("normal", "depth", "semseg")
    pairs = [Pair("rgb", other) for other in others] + [Pair(other, "rgb") for other in others]
    directions = [str(pair) for pair in pairs]
    figures = [figure_of(preset, src, dst, runs=[f"zs-rgb-{dst if src == 'rgb' else src}", "many-shot",
                                                 "larger"])
               for src, dst in pairs]
    # The chained baseline: each zero-shot model reaches its withheld modality through a binder it did see
    # with both ends (rgb -> normal -> depth); if that beats the direct translation, the model has learned
    # two translations rather than a shared latent.
    figures += [figure_of(preset, "rgb", other, runs=[f"zs-rgb-{other}"]).model_copy(update={"via": via})
                for other, via in CHAIN_VIA.items()]
    return ExperimentConfig(**common("visual-pairs", preset), runs=runs, directions=directions,
                            figures=figures)


def binding(preset: str = "tiny") -> ExperimentConfig:
    """Table II, and beyond it: zero-shot and matched many-shot per binding set (rgb, depth withheld)."""
    runs = []
    for count, binding_set in BINDING_SETS.items():
        universe = ["rgb", "depth", *binding_set]
        label = f"{count}"
        if count == 5:  # the full universe: these are the visual-pairs runs, shared through the cache
            runs.append(new_run(preset, "zs-rgb-depth", "zero-shot", withheld=[("rgb", "depth")],
                                label=label))
            runs.append(new_run(preset, "many-shot", "many-shot", label=label))
        else:
            runs.append(new_run(preset, f"zs-bind{count}", "zero-shot", withheld=[("rgb", "depth")],
                             universe=universe, label=label))
            runs.append(new_run(preset, f"ms-bind{count}", "many-shot", universe=universe, label=label))
    figures = [figure_of(preset, "rgb", "depth", runs=[f"zs-bind{c}" for c in (0, 1, 3)] + ["zs-rgb-depth"])]
    return ExperimentConfig(**common("binding", preset), runs=runs, directions=["rgb:depth", "depth:rgb"],
                            figures=figures)


def binding_exposure(preset: str = "tiny") -> ExperimentConfig:
    """The binding ablation with exposure matched: every run trains until it has seen the same number of
    rgb and depth tokens (half the preset's budget, what one binding modality sees at the full budget), so
    the binding sets differ in binders only; runs with more binders train longer."""
    counted = SCALE[preset]["tokens"] // 2
    runs = []
    for count, binding_set in BINDING_SETS.items():
        universe = ["rgb", "depth", *binding_set]
        for name, role, withheld in ((f"zs-exp{count}", "zero-shot", [("rgb", "depth")]),
                                     (f"ms-exp{count}", "many-shot", [])):
            run = new_run(preset, name, role, withheld=withheld, universe=universe, label=f"{count}")
            runs.append(run.with_train(total_tokens=counted, budget_modalities=["rgb", "depth"]))
    figures = [figure_of(preset, "rgb", "depth", runs=[f"zs-exp{c}" for c in BINDING_SETS])]
    return ExperimentConfig(**common("binding-exposure", preset), runs=runs,
                            directions=["rgb:depth", "depth:rgb"], figures=figures)


# One binding modality each, from the strongest to the weakest tie to depth: surface normals carry the
# geometry, semseg only where objects are, embed (a global feature vector) no layout at all.
SINGLE_BINDERS: tuple[str, ...] = ("normal", "semseg", "embed")


def binding_strength(preset: str = "tiny") -> ExperimentConfig:
    """Binding strength, not count: rgb and depth withheld, one binding modality at a time (strong to weak),
    each with its matched many-shot control; no binder is the floor."""
    runs = [new_run(preset, "zs-bind0", "zero-shot", withheld=[("rgb", "depth")], universe=["rgb", "depth"],
                 label="binder:none"),
            new_run(preset, "ms-bind0", "many-shot", universe=["rgb", "depth"], label="binder:none")]
    for binder in SINGLE_BINDERS:
        universe = ["rgb", "depth", binder]
        name = "bind1" if binder == "normal" else f"bind1-{binder}"  # bind1: the binding recipe's runs
        runs.append(new_run(preset, f"zs-{name}", "zero-shot", withheld=[("rgb", "depth")], universe=universe,
                         label=f"binder:{binder}"))
        runs.append(new_run(preset, f"ms-{name}", "many-shot", universe=universe, label=f"binder:{binder}"))
    shown = ["zs-bind0", *[f"zs-bind1{'' if b == 'normal' else '-' + b}" for b in SINGLE_BINDERS]]
    figures = [figure_of(preset, "rgb", "depth", runs=shown)]
    return ExperimentConfig(**common("binding-strength", preset), runs=runs,
                            directions=["rgb:depth", "depth:rgb"], figures=figures)


# What captions take on the CPU, measured on rgb + caption alone with the default model (docs/learning.md,
# "Captions with the model of 2026-12-07"): the CPU presets' caption recipe trains far less than that.
CAPTION_BUDGET = ("captions are not expected to be learned at this preset: a model on rgb and caption "
                  "alone took about 7M tokens of that pair to reach a rgb -> caption CE of 0.9 of no input, "
                  "about 13M for the content words to reach 0.85, and its fact accuracy was 0.29 at 16M "
                  "(docs/learning.md); this preset's many-shot run trains {tokens:,} tokens over seven "
                  "modalities")


def caption(preset: str = "tiny") -> ExperimentConfig:
    """Section IV-C: rgb and caption withheld; rgb -> caption and caption -> rgb."""
    runs = [new_run(preset, "zs-rgb-caption", "zero-shot", withheld=[("rgb", "caption")]),
            new_run(preset, "many-shot", "many-shot"), new_run(preset, "larger", "larger")]
    names = ["zs-rgb-caption", "many-shot", "larger"]
    figures = [figure_of(preset, "rgb", "caption", names), figure_of(preset, "caption", "rgb", names)]
    notes = [] if preset == "paper" else [CAPTION_BUDGET.format(tokens=SCALE[preset]["tokens"])]
    return ExperimentConfig(**common("caption", preset), runs=runs, directions=["rgb:caption", "caption:rgb"],
                            figures=figures, notes=notes)


def demo(preset: str = "tiny") -> ExperimentConfig:
    """A fast version for the README's first command: rgb+depth withheld vs many-shot, 4 modalities."""
    universe = ["rgb", "depth", "normal", "semseg"]
    base = common("demo", preset, tokenizer_modalities=universe)
    if preset == "tiny":  # the demo must finish in ~15 minutes on 2 cores, set-up included
        base["world"] = WorldStage(num_scenes=12000, size=32)
        base["tokenizers"] = TokenizerStage(preset="demo", modalities=universe)
        base["eval_samples"] = 1000
    runs = [new_run(preset, "zs-rgb-depth", "zero-shot", withheld=[("rgb", "depth")], universe=universe),
            new_run(preset, "many-shot", "many-shot", universe=universe)]
    if preset == "tiny":
        runs = [run.with_train(total_tokens=8_000_000) for run in runs]
    names = [run.name for run in runs]
    figures = [figure_of(preset, "rgb", "depth", names), figure_of(preset, "depth", "rgb", names)]
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
    base = common("pairs-curve", preset)
    pair = ("rgb", "depth")
    key = ":".join(pair)
    available = train_samples(base["world"])
    ks = [k for k in PAIRS_CURVE_KS if k < available]
    runs = [new_run(preset, "zs-rgb-depth", "zero-shot", withheld=[pair], label="k=0")]
    for k in ks:
        few_shot = new_run(preset, f"pairs-k{k}", "few-shot", withheld=[pair], label=f"k={k}")
        runs.append(few_shot.with_train(fragment={"allow_pairs": {key: k}}))
    runs.append(new_run(preset, "many-shot", "many-shot", label="k=all"))
    for k in ks:
        alone = new_run(preset, f"paired-only-k{k}", "paired-only", withheld=[pair], universe=pair,
                     label=f"k={k}")
        runs.append(alone.with_train(fragment={"allow_pairs": {key: k}, "only_paired": True},
                                     batch_size=min(alone.batch_size, k)))
    middle = f"pairs-k{ks[len(ks) // 2]}" if ks else None
    shown = ["zs-rgb-depth", *([middle] if middle else []), "many-shot"]
    figure = figure_of(preset, "rgb", "depth", shown).model_copy(
        update={"scored_runs": [run.name for run in runs if run.name not in shown]})
    return ExperimentConfig(**base, runs=runs, directions=["rgb:depth", "depth:rgb"], figures=[figure])


def transitive(preset: str = "tiny") -> ExperimentConfig:
    """Transitive pseudo-pairs (LoReTTa-style) against the honest control: the rgb:depth zero-shot run
    generates depth for its training samples that show rgb without depth, then continues on real + pseudo
    samples; the control continues the same run for the same extra budget on real data alone."""
    pair = ("rgb", "depth")
    extra = SCALE[preset]["tokens"] // 2
    base = "zs-rgb-depth"
    runs = [new_run(preset, base, "zero-shot", withheld=[pair], label="base"),
            new_run(preset, "many-shot", "many-shot")]
    for name, role, pseudo in (("pp-pseudo", "pseudo-pairs", "rgb-to-depth"),
                               ("pp-filtered", "pseudo-pairs", "rgb-to-depth-filtered"),
                               ("pp-sampled", "pseudo-pairs", "rgb-to-depth-sampled"),
                               ("pp-control", "continued", None)):
        run = new_run(preset, name, role, withheld=[pair], label=name.split("-")[1])
        continued = run.with_train(total_tokens=extra)
        runs.append(continued.model_copy(update={"init_from": base, "pseudo": pseudo}))
    # the study's schedule (near the mode: temperature 0.01, guidance 2); the same keeping the more
    # consistent half; and samples of the model's own distribution (8 steps, temperature 1, no guidance)
    stages = {"rgb-to-depth": PseudoStage(direction="rgb:depth", schedule=SCHEDULE_FOR[pair]),
              "rgb-to-depth-filtered": PseudoStage(direction="rgb:depth", schedule=SCHEDULE_FOR[pair],
                                                   keep_fraction=0.5),
              "rgb-to-depth-sampled": PseudoStage(direction="rgb:depth", schedule="sample8")}
    shown = [base, "pp-control", "pp-pseudo", "pp-filtered", "pp-sampled", "many-shot"]
    figures = [figure_of(preset, "rgb", "depth", shown), figure_of(preset, "depth", "rgb", shown)]
    return ExperimentConfig(**common("transitive", preset), runs=runs, directions=["rgb:depth", "depth:rgb"],
                            figures=figures, pseudo=stages)


def adapter(preset: str = "tiny") -> ExperimentConfig:
    """Add normal to a model trained without it, through an adapter trained on rgb-normal pairs only
    (M2M-style; every base weight frozen), with and without the structure-preserving term; then translate
    between normal and what the adapter never saw it with (depth, semseg), against a model trained with
    normal from the start and against no input."""
    added, anchor = "normal", "rgb"
    without = [name for name in WORLD_MODALITIES if name != added]
    runs = [new_run(preset, "base-no-normal", "frozen-base", universe=without, label="base"),
            new_run(preset, "many-shot", "many-shot", label="from the start")]
    tokens = {"micro": 20_000}.get(preset, 2_000_000)
    settings = {"batch_size": SCALE[preset]["batch"]}  # the masking budgets: the base run's
    adapters = [AdapterStage(name="adapter", base="base-no-normal", modality=added, anchor=anchor,
                             label="adapter", total_tokens=tokens, settings=settings),
                AdapterStage(name="adapter-structure", base="base-no-normal", modality=added, anchor=anchor,
                             label="adapter + structure term", total_tokens=tokens, structure_weight=1.0,
                             settings=settings)]
    directions = ["normal:depth", "depth:normal", "normal:semseg", "rgb:normal", "normal:rgb"]
    shown = ["adapter", "adapter-structure", "many-shot"]
    figures = [figure_of(preset, "normal", "depth", shown), figure_of(preset, "depth", "normal", shown)]
    return ExperimentConfig(**common("adapter", preset), runs=runs, directions=directions, figures=figures,
                            adapters=adapters)


# Fractions of the budget at which the probe-curve's runs keep their weights (the end is the final model).
PROBE_SNAPSHOTS: tuple[float, ...] = (0.0625, 0.125, 0.25, 0.5)


def probe_curve(preset: str = "tiny") -> ExperimentConfig:
    """Alignment along training: the rgb:depth zero-shot run and the many-shot run keep their weights at a
    few fractions of the budget; each snapshot is evaluated and probed, so the probes can be set against
    the recovered fraction as the model learns (snapshots of both runs at the same fraction)."""
    runs = [new_run(preset, "zs-rgb-depth", "zero-shot", withheld=[("rgb", "depth")]),
            new_run(preset, "many-shot", "many-shot")]
    runs = [run.with_train(snapshots=list(PROBE_SNAPSHOTS)) for run in runs]
    return ExperimentConfig(**common("probe-curve", preset), runs=runs, directions=["rgb:depth", "depth:rgb"])


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
    if preset not in SCALE:
        raise ConfigError(f"preset: unknown preset {preset!r}; allowed: {', '.join(SCALE)}")
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
