"""The pairs-curve's report section: the exchange rate's interpolation, its sentence, monotonicity, figure.

Hand-made numbers check the logic (including estimates outside the measured k); the end-to-end run of the
recipe is in test_experiments.py.
"""

import json
import math
from pathlib import Path

import pytest

from pairless.experiments import stages
from pairless.experiments.recipes import get_recipe
from pairless.experiments.report import pairs_curve, write_report
from pairless.experiments.results import validate_results
from pairless.experiments.runner import Plan

# rgb -> depth CE per base run; the other direction gets the same numbers plus 1.
CURVE = {"zs-rgb-depth": 6.0, "pairs-k16": 5.6, "pairs-k64": 5.2, "many-shot": 4.0,
         "paired-only-k16": 8.0, "paired-only-k64": 5.0}


def _results(ce=CURVE, seeds: int = 1, seed_shift=lambda name, seed: 0.0, unconditional: float = 9.0):
    config = get_recipe("pairs-curve", "micro").model_copy(update={"seeds": seeds})
    runs = {r.name: {"role": r.role, "label": r.label, "withheld": [list(p) for p in r.withheld],
                     "universe": r.universe, "allow_pairs": r.allow_pairs, "only_paired": r.only_paired}
            for r in config.expanded_runs()}

    def entry(name, direction):
        base, _, seed = name.partition("@s")
        value = ce[base] + (1.0 if direction == "depth:rgb" else 0.0) + seed_shift(base, int(seed or 0))
        return {"ce": value, "ce_unconditional": unconditional, "num_samples": 4, "num_tokens": 256}

    evals = {name: {d: entry(name, d) for d in config.directions} for name in runs}
    decoded = {"rgb:depth": {name: {"abs_rel": 0.1 + 0.01 * index} for index, name in enumerate(CURVE)}}
    return validate_results({"recipe": "pairs-curve", "preset": "micro",
                             "config": config.model_dump(mode="json"), "runs": runs, "evals": evals,
                             "generation": {"metrics": decoded}, "tokenizer_ceiling": {}})


def test_exchange_rate_interpolates_in_log_k_and_says_when_outside():
    kind, value = pairs_curve.exchange_rate([16, 64], [8.0, 5.0], 6.0)
    assert kind == "within" and value == pytest.approx(16 * 4 ** (2 / 3))  # 2/3 of the way in log k
    assert pairs_curve.exchange_rate([16, 64], [8.0, 5.0], 8.0) == ("below", 16.0)  # k = 16 reaches it
    assert pairs_curve.exchange_rate([16, 64], [5.0, 4.0], 6.0) == ("below", 16.0)
    assert pairs_curve.exchange_rate([16, 64], [8.0, 7.0], 6.0) == ("above", 64.0)
    # not monotone: the first k that reaches it counts
    kind, value = pairs_curve.exchange_rate([16, 64, 256, 1024], [8.0, 7.0, 7.5, 4.0], 7.0)
    assert kind == "within" and value == pytest.approx(64.0)
    kind, value = pairs_curve.exchange_rate([16, 64, 256], [8.0, math.nan, 6.0], 7.0)  # a missing point
    assert kind == "within" and value == pytest.approx(64.0)  # halfway between 16 and 256 in log k
    with pytest.raises(ValueError, match="no finite"):
        pairs_curve.exchange_rate([16], [math.nan], 7.0)


def test_the_sentence_states_the_exchange_rate_or_that_there_is_nothing_to_exchange():
    sentence, numbers = pairs_curve.exchange_sentence(_results(), "rgb:depth")
    assert "zero-shot (k = 0, CE 6.000) is worth about 40 paired samples" in sentence
    assert "between k = 16 and 64" in sentence and numbers["kind"] == "within"
    worse = _results({**CURVE, "paired-only-k16": 5.5})
    assert "is worth fewer than 16 paired samples (fewer than the smallest k measured" in (
        pairs_curve.exchange_sentence(worse, "rgb:depth")[0])
    better = _results({**CURVE, "paired-only-k64": 7.0})
    assert "is worth more than 64 paired samples (more than the largest k measured" in (
        pairs_curve.exchange_sentence(better, "rgb:depth")[0])
    unlearned = _results({**CURVE, "many-shot": 8.5})  # CE ratio 8.5 / 9 > 0.9
    sentence, numbers = pairs_curve.exchange_sentence(unlearned, "rgb:depth")
    assert "has not learned this direction" in sentence and "nothing to exchange" in sentence
    assert "worth" not in sentence and numbers["kind"] == "not learned"


def test_the_seeds_spread_becomes_an_interval():
    # seed 1's zero-shot model is better: its estimate is larger; seed 2's is below the smallest k
    shift = {("zs-rgb-depth", 1): -0.5, ("zs-rgb-depth", 2): +2.5}
    results = _results(seeds=3, seed_shift=lambda name, seed: shift.get((name, seed), 0.0))
    sentence, numbers = pairs_curve.exchange_sentence(results, "rgb:depth")
    assert [estimate["kind"] for estimate in numbers["seeds"]] == ["within", "within", "below"]
    assert numbers["seeds"][1]["value"] > numbers["seeds"][0]["value"]
    assert (f"Over 3 seeds (each seed's zero-shot model against its own baseline) it ranges from fewer than "
            f"16 to {numbers['seeds'][1]['value']:,.0f}.") in sentence


def test_monotone_within_the_seeds_spread():
    rows = pairs_curve.curve_rows(_results())
    assert [row["k"] for row in rows if row["direction"] == "rgb:depth"] == [0, 16, 64, "all"]
    sentence, holds = pairs_curve.monotone_sentence(rows, "rgb:depth")
    assert holds and "**holds**" in sentence
    rising = pairs_curve.curve_rows(_results({**CURVE, "pairs-k64": 5.7}))
    sentence, holds = pairs_curve.monotone_sentence(rising, "rgb:depth")
    assert not holds and "k = 16 → 64: +0.100" in sentence
    noisy = _results({**CURVE, "pairs-k64": 5.7}, seeds=2,
                     seed_shift=lambda name, seed: 0.3 * seed if name.startswith("pairs") else 0.0)
    sentence, holds = pairs_curve.monotone_sentence(pairs_curve.curve_rows(noisy), "rgb:depth")
    assert holds and "within the seeds' spread (2 seeds)" in sentence  # +0.1 against a spread of 0.3


def test_report_has_the_section_table_sentence_and_figure(tmp_path):
    folder = tmp_path / "pairs-curve"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(_results().to_json()))
    report = write_report(folder).read_text()
    assert "## Pairs curve" in report
    assert "| 16 | rgb → depth | 5.600 | 8.000 | 9.000 | abs_rel 0.110 / 0.140 |" in report
    assert "Exchange rate (rgb → depth): zero-shot (k = 0, CE 6.000) is worth about 40" in report
    assert "Exchange rate (depth → rgb)" in report
    assert "pairs_curve.png" in report and (folder / "pairs_curve.png").stat().st_size > 1000
    summary = json.loads((folder / "summary.json").read_text())["pairs_curve"]
    assert summary["exchange_rate"]["rgb:depth"]["kind"] == "within"
    assert summary["monotone"]["rgb:depth"]["few_shot"] is True


def test_k_zero_and_all_are_the_cached_zero_shot_and_many_shot_runs():
    for preset in ("micro", "tiny"):
        curve, study = Plan(get_recipe("pairs-curve", preset), Path("out")), Plan(
            get_recipe("visual-pairs", preset), Path("out"))
        assert curve.runs["zs-rgb-depth"] == study.runs["zs-rgb-depth"]
        assert curve.runs["many-shot"] == study.runs["many-shot"]
    config = get_recipe("pairs-curve", "micro")
    names = [run.name for run in config.runs]
    assert "pairs-k256" not in names and "pairs-k64" in names  # micro trains on 86 samples
    few_shot = config.runs[1]
    spelled_zero = few_shot.model_copy(update={"role": "zero-shot", "train": {**few_shot.train, "fragment": {
        **few_shot.train["fragment"], "allow_pairs": {"depth:rgb": 0}}}})
    spelled = config.model_copy(update={"runs": [config.runs[0], spelled_zero]})
    plan = Plan(spelled, Path("out"))
    assert plan.runs[spelled_zero.name].name.split("-")[-1] == plan.runs["zs-rgb-depth"].name.split("-")[-1]
    assert len(get_recipe("pairs-curve", "tiny").runs) == 2 + 2 * 5  # k = 0, all; 5 few-shot, 5 paired-only
    # runs cached before the option existed keep their keys: the neutral value is not hashed
    assert set(stages.run_key_fields(config.runs[0])["fragment"]) == {"universe", "withheld", "seed"}
    assert stages.run_key_fields(config.runs[1])["fragment"]["allow_pairs"] == {"rgb:depth": 16}
