"""The report writer: tables, the recovered fraction and the findings verdicts.

These tests feed the writer hand-made evaluation numbers to check its logic
(ordering checks, verdicts that say "does not hold" when the numbers say so);
the end-to-end experiment tests run it on real results.
"""

import json
import math

import pytest

from pairless.experiments.recipes import get_recipe
from pairless.experiments.report import write_report
from pairless.experiments.report.quality import quality_rows
from pairless.experiments.report.rows import findings, recovered_fraction, translation_rows
from pairless.experiments.results import Results, validate_results


def test_recovered_fraction():
    assert recovered_fraction(10.0, 6.0, 5.0) == pytest.approx(0.8)
    assert recovered_fraction(10.0, 10.0, 5.0) == pytest.approx(0.0)
    assert math.isnan(recovered_fraction(5.0, 6.0, 5.0))  # no gap to recover


def typed(results: dict) -> Results:
    """A hand-made results dict as the report's sections take it: validated, the entries a test leaves out
    (the recipe and preset, sample counts) filled in."""
    full = {"recipe": "test", "preset": "micro", "config": {}, "evals": {}, **results}
    for per_direction in full["evals"].values():
        for entry in per_direction.values():
            entry.setdefault("num_samples", 4)
            entry.setdefault("num_tokens", 256)
    return validate_results(full)


def _results(recipe, ce):
    config = get_recipe(recipe, "micro")
    runs = {r.name: {"role": r.role, "label": r.label, "withheld": [list(p) for p in r.withheld],
                     "universe": r.universe, "tokens_per_modality": {"rgb": 1e6, "depth": 2e6}}
            for r in config.expanded_runs()}
    evals = {name: {d: {"ce": ce(name, d), "ce_unconditional": 9.0, "num_samples": 4, "num_tokens": 256}
                    for d in config.directions} for name in runs}
    return {"recipe": recipe, "preset": "micro", "config": config.model_dump(mode="json"), "runs": runs,
            "evals": evals, "generation": {}, "tokenizer_ceiling": {"rgb": {"psnr": 27.0}}}


def test_binding_findings_hold_and_fail(tmp_path):
    good = {"zs-bind0": 9.0, "zs-bind1": 7.0, "zs-bind3": 6.0, "zs-rgb-depth": 5.5}
    results = _results("binding", lambda name, d: good.get(name, 5.0))
    lines = findings(typed(results))
    assert any("falls as binding" in line and "**holds**" in line for line in lines)
    assert any("0 binding" in line and "**holds**" in line for line in lines)
    bad = {"zs-bind0": 6.0, "zs-bind1": 7.0, "zs-bind3": 6.5, "zs-rgb-depth": 5.5}
    lines = findings(typed(_results("binding", lambda name, d: bad.get(name, 5.0))))
    assert any("falls as binding" in line and "does not hold" in line for line in lines)
    assert any("0 binding" in line and "does not hold" in line for line in lines)


def test_report_files_and_tables(tmp_path):
    results = _results("visual-pairs", lambda name, d: 6.0 if name.startswith("zs") else 5.0)
    folder = tmp_path / "visual-pairs"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    report = write_report(folder).read_text()
    assert "Table I" in report
    for direction in ("rgb → normal", "depth → rgb", "semseg → rgb"):
        assert direction in report
    assert "**holds**" in report  # zero-shot 6.0 > many-shot 5.0 everywhere
    assert (folder / "results.csv").read_text().count("\n") == 1 + 5 * 6


def test_caption_finding_cannot_be_judged_when_many_shot_learned_nothing(tmp_path):
    # Many-shot no better than no input (9.0) on rgb->caption: the recovered fraction is undefined, the table
    # says n/a and the finding says it cannot be judged (instead of silently leaving it out).
    results = _results("caption", lambda name, d: 9.5 if d == "rgb:caption"
                       else (6.0 if name.startswith("zs") else 5.0))
    lines = findings(typed(results))
    assert any("hardest direction" in line and "cannot be judged" in line for line in lines)
    folder = tmp_path / "caption"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    report = write_report(folder).read_text()
    assert "| n/a |" in report and "| nan |" not in report


def test_binding_steps_are_judged_against_the_seed_spread():
    config = get_recipe("binding", "micro").model_copy(update={"seeds": 2})
    # seed 0 / seed 1 zero-shot rgb->depth CE per binding set: 0->1 falls far beyond the spread, 1->3 and
    # 3->5 change less than the seeds disagree
    ce = {"zs-bind0": 9.0, "zs-bind0@s1": 9.1, "zs-bind1": 7.0, "zs-bind1@s1": 7.4,
          "zs-bind3": 7.1, "zs-bind3@s1": 7.2, "zs-rgb-depth": 7.0, "zs-rgb-depth@s1": 7.3}
    runs = {r.name: {"role": r.role, "label": r.label, "withheld": [list(p) for p in r.withheld],
                     "universe": r.universe, "tokens_per_modality": {}} for r in config.expanded_runs()}
    evals = {name: {d: {"ce": ce.get(name, 5.0), "ce_unconditional": 9.0} for d in config.directions}
             for name in runs}
    lines = findings(typed({"config": config.model_dump(mode="json"), "runs": runs, "evals": evals}))
    steps = next(line for line in lines if line.startswith("Step by step over 2 seeds"))
    assert "0->1: -1.850 (spread 0.292, beyond the seed spread)" in steps
    assert "1->3: -0.050 (spread 0.292, within the seed spread)" in steps
    assert "3->5: +0.000" in steps and steps.count("within the seed spread") == 2
    # seed 0 rises at 1->3 (7.0 -> 7.1), seed 1 at 3->5 (7.2 -> 7.3)
    assert steps.endswith("It falls at every step in 0 of 2 seeds.")


def test_table_one_compares_the_full_universe_runs_of_the_binding_recipe():
    # binding's zs-bind0 (rgb and depth alone) also withholds rgb-depth, and comes first in the recipe: the
    # Table I row must still use zs-rgb-depth, which sees every modality like the many-shot model it meets
    ce = {"zs-bind0": 9.0, "zs-bind1": 7.0, "zs-bind3": 6.0, "zs-rgb-depth": 5.5, "ms-bind0": 4.0,
          "ms-bind1": 4.5, "ms-bind3": 4.8, "many-shot": 5.0}
    results = _results("binding", lambda name, d: ce[name])
    assert list(results["runs"]).index("zs-bind0") < list(results["runs"]).index("zs-rgb-depth")
    rows = {row["direction"]: row for row in translation_rows(typed(results))}
    assert rows["rgb:depth"]["zero_shot_run"] == "zs-rgb-depth"
    assert rows["rgb:depth"]["zero_shot"] == [5.5] and rows["rgb:depth"]["many_shot"] == [5.0]


def test_quality_bar_shows_ratio_and_ceiling_and_refuses_a_fraction_of_no_gap(tmp_path):
    # rgb->depth: many-shot 5.0 against no input 9.0 (ratio 0.56, learned); depth->rgb: many-shot 8.7 against
    # 9.0 (ratio 0.97): within 10% of no input, so no recovered fraction and a note saying why
    def ce(name, direction):
        if direction == "depth:rgb":
            return 8.8 if name.startswith("zs") else 8.7
        return 6.0 if name.startswith("zs") else 5.0

    results = _results("demo", ce)
    results["generation"] = {"metrics": {"rgb:depth": {"many-shot": {"abs_rel": 0.04}}}}
    results["tokenizer_ceiling"] = {"depth": {"abs_rel": 0.012}}
    rows = {row["direction"]: row for row in translation_rows(typed(results))}
    assert rows["rgb:depth"]["many_shot_learned"] and rows["rgb:depth"]["recovered"] == [pytest.approx(0.75)]
    assert not rows["depth:rgb"]["many_shot_learned"] and math.isnan(rows["depth:rgb"]["recovered"][0])
    quality = {(row["direction"], row["run"]): row for row in quality_rows(typed(results))}
    assert quality[("rgb:depth", "many-shot")]["ratio"] == pytest.approx(5.0 / 9.0)
    assert quality[("rgb:depth", "many-shot")]["value"] == 0.04
    assert quality[("rgb:depth", "many-shot")]["ceiling"] == 0.012
    assert not quality[("depth:rgb", "many-shot")]["learned"]
    lines = findings(typed(results))
    assert any(line.startswith("Not judged") and "depth:rgb (ratio 0.97)" in line for line in lines)
    # the ordering finding is judged on the learned direction only
    assert any("worse than many-shot" in line and "**holds**" in line and "depth:rgb" not in line
               for line in lines)
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    report = write_report(folder).read_text()
    assert "## Quality bar" in report
    row = ("| rgb → depth | many-shot | many-shot | 4 | 0.56 | yes | abs_rel (lower is better) | 0.040 | – "
           "| 0.012 |")
    assert row in report
    assert "depth → rgb: the many-shot model is within 10% of its no-input CE (ratio 0.97)" in report


def test_learned_needs_the_decoded_metric_to_beat_no_input_and_a_ce_above_no_input_is_named(tmp_path):
    def ce(name, direction):
        return {"rgb:depth": 7.8, "depth:rgb": 9.5}[direction]  # ratios 0.87 and 1.06 of no input (9.0)

    results = _results("demo", ce)
    results["generation"] = {"metrics": {"rgb:depth": {
        "many-shot": {"abs_rel": 0.197}, "_no_input": {"many-shot": {"abs_rel": 0.190}}}}}
    quality = {(row["direction"], row["run"]): row for row in quality_rows(typed(results))}
    assert quality[("rgb:depth", "many-shot")]["reason"] == "decoded no better than no input"
    assert quality[("depth:rgb", "many-shot")]["reason"] == "worse than no input"
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    report = write_report(folder).read_text()
    assert "| 0.87 | **no: decoded no better than no input** | abs_rel (lower is better) | 0.197 | 0.190 |" \
        in report
    worse = "depth → rgb (many-shot): the CE is 1.06 of the CE with no input: **worse than no input**"
    assert worse in report


def test_chained_baseline_verdicts_respect_the_metric_direction_and_the_margin():
    from pairless.experiments.report.rows import CHAIN_MARGIN, chained_lines, chained_rows

    def results(chained_value, direct_value, dst="depth"):
        runs = {"zs": {"role": "zero-shot", "withheld": [["rgb", dst]], "universe": None, "label": dst},
                "ms": {"role": "many-shot", "withheld": [], "universe": None, "label": ""}}
        metric = {"depth": "abs_rel", "semseg": "miou"}[dst]
        direct = {"zs": {metric: direct_value}, "ms": {metric: 0.01}}
        return typed({"runs": runs, "config": {"directions": [f"rgb:{dst}"]},
                "generation": {"metrics": {f"rgb:{dst}": direct},
                               "chained": {f"rgb:{dst}": {"via": "normal",
                                                          "metrics": {"zs": {metric: chained_value}}}}}})

    assert chained_rows(results(0.05, 0.10))[0]["chain_wins"] is True  # abs_rel: lower is better
    assert chained_rows(results(0.10, 0.05))[0]["chain_wins"] is False
    assert chained_rows(results(0.5, 0.4, "semseg"))[0]["chain_wins"] is True  # mIoU: higher is better
    close = 0.10 * (1 + CHAIN_MARGIN / 2)
    assert chained_rows(results(close, 0.10))[0]["chain_wins"] == "tie"
    lines = chained_lines(chained_rows(results(0.05, 0.10)))
    assert "**beats**" in lines[0] and "rgb → normal → depth" in lines[0]
    assert "within" in chained_lines(chained_rows(results(close, 0.10)))[0]


def test_probe_correlation_on_hand_made_points():
    from pairless.experiments.report.probes import correlation, spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    perfect = correlation(list(range(8)), [x * x for x in range(8)])
    assert perfect["rho"] == pytest.approx(1.0) and perfect["low"] == pytest.approx(1.0) and perfect["n"] == 8
    noisy = correlation([0, 1, 2, 3, 4, 5], [0, 2, 1, 4, 3, 5])
    assert noisy["low"] < noisy["rho"] < 1.0 and noisy["high"] <= 1.0


def test_probe_points_pair_zero_shot_runs_with_their_matched_many_shot():
    from pairless.experiments.report.probes import markdown, points

    def probe(foscttm):
        row = {"recall_at_1": 0.1, "recall_at_10": 0.5, "foscttm": foscttm, "mutual_knn": 0.2, "cka": 0.3}
        shuffled = {**row, "foscttm": 0.5}
        return {"rgb:depth": {"num_samples": 100, "k": 10, "summary": row, "shuffled": shuffled}}

    runs, evals, probes = {}, {}, {}
    for index, (ce_zero, foscttm) in enumerate([(2.9, 0.45), (2.4, 0.2), (2.5, 0.3), (2.6, 0.35)]):
        runs[f"zs{index}"] = {"role": "zero-shot", "withheld": [["rgb", "depth"]], "label": str(index),
                              "seed": 0}
        runs[f"ms{index}"] = {"role": "many-shot", "withheld": [], "label": str(index), "seed": 0}
        evals[f"zs{index}"] = {"rgb:depth": {"ce": ce_zero, "ce_unconditional": 3.0}}
        evals[f"ms{index}"] = {"rgb:depth": {"ce": 2.0 + 0.1 * index, "ce_unconditional": 3.0}}
        probes[f"zs{index}"] = probe(foscttm)
    found = points(typed({"runs": runs, "evals": evals, "probes": probes}))
    assert [p["run"] for p in found] == ["zs0", "zs1", "zs2", "zs3"]
    assert found[1]["recovered"] == pytest.approx((3.0 - 2.4) / (3.0 - 2.1))  # against ms1, its own label
    text = "\n".join(markdown(typed({"runs": runs, "evals": evals, "probes": probes})))
    assert "| foscttm | -1.00 |" in text  # lower FOSCTTM, higher recovered fraction, in every point


def test_snapshots_add_probe_points_against_the_many_shot_snapshot_of_the_same_fraction():
    from pairless.experiments.report.probes import markdown, points, training_rows

    def probe(foscttm):
        row = {"recall_at_1": 0.1, "recall_at_10": 0.5, "foscttm": foscttm, "mutual_knn": 0.2, "cka": 0.3}
        shuffled = {**row, "foscttm": 0.5}
        return {"rgb:depth": {"num_samples": 100, "k": 10, "summary": row, "shuffled": shuffled}}

    def ce(value):
        return {"rgb:depth": {"ce": value, "ce_unconditional": 3.0, "num_samples": 4, "num_tokens": 256}}

    runs = {"zs": {"role": "zero-shot", "withheld": [["rgb", "depth"]], "seed": 0, "total_tokens": 1000},
            "ms": {"role": "many-shot", "withheld": [], "seed": 0}}
    snapshots = {"zs": {"0.25": {"tokens": 250, "evals": ce(2.9), "probes": probe(0.4)},
                        "0.5": {"tokens": 500, "evals": ce(2.7), "probes": probe(0.3)}},
                 "ms": {"0.25": {"tokens": 250, "evals": ce(2.5)}, "0.5": {"tokens": 500, "evals": ce(2.3)}}}
    snapshots = {name: {tag: {"fraction": float(tag), "step": 0, **snapshot}
                        for tag, snapshot in per_tag.items()} for name, per_tag in snapshots.items()}
    results = typed({"runs": runs, "evals": {"zs": ce(2.5), "ms": ce(2.0)}, "probes": {"zs": probe(0.2)},
                     "snapshots": snapshots})
    found = {p["run"]: p for p in points(results)}
    assert set(found) == {"zs", "zs at 0.25", "zs at 0.5"}
    assert found["zs at 0.25"]["recovered"] == pytest.approx((3.0 - 2.9) / (3.0 - 2.5))  # ms at 0.25
    assert found["zs at 0.5"]["recovered"] == pytest.approx((3.0 - 2.7) / (3.0 - 2.3))
    rows = training_rows(results)
    assert [(r["fraction"], r["tokens"]) for r in rows] == [(0.25, 250), (0.5, 500), (1.0, 1000)]
    assert [r["foscttm"] for r in rows] == [0.4, 0.3, 0.2]
    assert "Along training" in "\n".join(markdown(results))
