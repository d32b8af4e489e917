"""The ``own-data`` recipe: the study's comparison on a user's folder, where missing modalities are normal
and some pairs are never recorded together."""

from __future__ import annotations

from pathlib import Path

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
    from pairless.data.co_occurrence import co_occurrence, pair_count

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
    scale = SCALE[preset]
    base = common("own-data", preset)
    base.update(data=str(Path(data).resolve()), on_bad_sample="skip",
                tokenizers=TokenizerStage(preset=scale["tokenizer_preset"]))
    withheld = [(a, b) for a, b in withhold]
    runs = [new_run(preset, "all-data", "many-shot", withheld=withheld)]
    for a, b in compare:
        runs.append(new_run(preset, f"zs-{a}-{b}", "zero-shot", withheld=[*withheld, (a, b)],
                            label=f"{a}:{b}"))
    directions = [f"{a}:{b}" for a in names for b in names
                  if a != b and pair_count(counts["val"], a, b) >= MIN_EVAL_PAIRS]
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
                            bridges=bridges)
