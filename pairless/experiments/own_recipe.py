"""The ``own-data`` recipe: the study's comparison on a user's folder, where missing modalities are normal
and some pairs are never recorded together."""

from __future__ import annotations

from pathlib import Path

from pairless.batch import TokenSpec
from pairless.config import ConfigError
from pairless.experiments.experiment import ExperimentConfig, TokenizerStage
from pairless.experiments.scale import SCALE, common, figure_of, new_run
from pairless.modalities import Pair

# Held-out samples with both modalities a direction needs before it is evaluated on a user's data.
MIN_EVAL_PAIRS = 2


def own_data(preset: str = "tiny", data: str | None = None, withhold=(), compare=()) -> ExperimentConfig:
    """A user's folder: train on everything as it is, evaluate every direction with held-out ground truth,
    compare zero-shot with the all-data model for the ``compare`` pairs, and say what can be measured for
    the pairs never recorded together (``withhold`` simulates more of them)."""
    from pairless.data.co_occurrence import pair_count

    if data is None:
        raise ConfigError("own-data: --data DIR is required (a dataset folder with train/ and val/)")
    counts = {split: _split_counts(data, split) for split in ("train", "val")}
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
    scale = SCALE[preset]
    base = common("own-data", preset)
    base.update(data=str(Path(data).resolve()), on_bad_sample="skip",
                tokenizers=TokenizerStage(preset=scale["tokenizer_preset"]))
    withheld = [(a, b) for a, b in withhold]
    runs = [new_run(preset, "all-data", "many-shot", withheld=withheld)]
    for a, b in compare:
        runs.append(new_run(preset, f"zs-{a}-{b}", "zero-shot", withheld=[*withheld, (a, b)],
                            label=f"{a}:{b}"))
    notes = []
    runs, note = _fit_batch(runs, counts["train"]["num_samples"], base["data"], preset)
    notes += [note] if note else []
    directions = [f"{a}:{b}" for a in names for b in names
                  if a != b and pair_count(counts["val"], a, b) >= MIN_EVAL_PAIRS]
    if not directions:
        held_out = counts["val"]["num_samples"]
        notes.append(f"no direction is evaluated: no two modalities have {MIN_EVAL_PAIRS} or more samples "
                     f"with both in {base['data']}/val ({held_out} held-out samples). Put some samples that "
                     "hold both modalities of a pair in val/ to measure that pair")
    # never together in training (paired samples in val/ only are ground truth for a true zero-shot test)
    never = [f"{a}:{b}" for index, a in enumerate(names) for b in names[index + 1:]
             if pair_count(counts["train"], a, b) == 0]
    unpaired = never + [f"{a}:{b}" for a, b in withheld if f"{a}:{b}" not in never]
    train_pairs = {frozenset(Pair.parse(p)) for p, n in counts["train"]["pairs"].items() if n > 0}
    train_pairs -= {frozenset(p) for p in withheld}
    bridges = {pair: [m for m in names if m not in Pair.parse(pair)
                      and all(frozenset((m, end)) in train_pairs for end in Pair.parse(pair))]
               for pair in unpaired}
    figures = [figure_of(preset, src, dst, runs=[f"zs-{a}-{b}", "all-data"])
               for a, b in compare for src, dst in ((a, b), (b, a))]
    # every other evaluated direction is generated and decoded too (all-data only), so that the quality bar
    # judges it by its decoded metric against no input's, declared modalities included
    drawn = {(figure.src, figure.dst) for figure in figures}
    figures += [figure_of(preset, *Pair.parse(direction), runs=["all-data"]) for direction in directions
                if Pair.parse(direction) not in drawn]
    return ExperimentConfig(**base, runs=runs, directions=directions, figures=figures, unpaired=unpaired,
                            bridges=bridges, notes=notes)


def _split_counts(data: str, split: str) -> dict:
    """:func:`co_occurrence` of one split of the user's folder, refusing a split the recipe cannot do without
    (no folder, or no sample in train) with what to change."""
    from pairless.data.co_occurrence import co_occurrence
    from pairless.data.validate import DataError

    try:
        counts = co_occurrence(data, split)
    except DataError as error:
        if not str(error).endswith(f"no split {split!r}"):
            raise
        role = "the samples the models train on" if split == "train" else "the held-out samples every " \
            "number is measured on (a tenth of your samples is a usual share)"
        raise ConfigError(f"own-data: {data} has no {split}/ folder; the recipe needs {split}/ with "
                          f"{role}, one subfolder per modality (docs/data.md)") from None
    if split == "train" and counts["num_samples"] == 0:
        raise ConfigError(f"own-data: {data}/train holds no sample (no file that a known or declared "
                          "modality takes, in a modality subfolder); put your training samples there, one "
                          "subfolder per modality (docs/data.md)")
    return counts


def _fit_batch(runs: list, train_samples: int, data: str, preset: str) -> tuple[list, str | None]:
    """The runs with their batch clipped to the training samples the folder holds (a batch larger than the
    data cannot be drawn), and the line that says so (None when the preset's batch fits)."""
    batch = runs[0].batch_size
    if batch <= train_samples:
        return runs, None
    runs = [run.with_train(batch_size=train_samples) for run in runs]
    return runs, (f"batch {batch} of preset {preset} is more than the {train_samples} training samples in "
                  f"{data}/train: each run trains with batch {train_samples} (every step sees all of them; "
                  "the learning rate scales with the batch). More samples give a more reliable result")


def fit_budgets(config: ExperimentConfig, specs: dict[str, TokenSpec]) -> ExperimentConfig:
    """``config`` with each run's token budgets fitted to what a sample of the user's data holds (``specs``:
    its token shards', or the plan's :func:`pairless.experiments.folder_specs.folder_specs`; the preset's
    budgets assume the world's tokens per sample: 32x32 images and short captions hold fewer), and a note
    saying so; ``config`` itself when every budget fits."""
    runs, notes = [], []
    for run in config.runs:
        names = [name for name in (run.universe or specs) if name in specs]
        held = sum(specs[name].num_tokens for name in names)
        inputs, targets = run.input_budget, run.target_budget
        if inputs + targets <= held or held < 2:  # fits, or cannot be split (the trainer's check names it)
            runs.append(run)
            continue
        fitted = max(1, held * inputs // (inputs + targets))
        runs.append(run.with_train(masking={"input_budget": fitted, "target_budget": held - fitted}))
        note = (f"budgets {inputs} + {targets} tokens of preset {config.preset} are more than the {held} "
                f"tokens {', '.join(names)} hold per sample: each run masks {fitted} + {held - fitted} (a "
                "sample with every modality has all its tokens as inputs or targets)")
        notes += [note] if note not in notes else []
    if not notes:
        return config
    return config.model_copy(update={"runs": runs, "notes": [*config.notes, *notes]})


def fit_budgets_to_shards(config: ExperimentConfig, shards: Path) -> ExperimentConfig:
    """:func:`fit_budgets` to the specs of the token shards made from the user's folder."""
    from pairless.data.shards import read_manifest, specs_from_manifest

    return fit_budgets(config, specs_from_manifest(read_manifest(shards), Path(shards) / "manifest.json"))
