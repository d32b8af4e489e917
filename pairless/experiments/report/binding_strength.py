"""The binding-strength part of the report: one binding modality at a time, from strong to weak.

The ``binding-strength`` recipe withholds rgb and depth and gives each zero-shot model one binding modality
(runs labelled ``binder:<name>``, ``binder:none`` for none), each with a many-shot control trained on the
same universe, so that the recovered fraction compares binders of the same count and exposure.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean, stdev

from pairless.experiments.report.markdown import arrow, plotted, pyplot, save_figure, table
from pairless.experiments.report.rows import (
    matched_comparison,
    mean_sd,
    role_run,
    runs_by_base,
)
from pairless.experiments.results import Results

PREFIX = "binder:"


def strength_rows(results: Results) -> list[dict]:
    """Per binder (in the recipe's order) and direction: zero-shot, matched many-shot, no input, recovered."""
    groups = runs_by_base(results)
    labels = []
    for run in results.recipe_runs:
        label = run.label
        if label.startswith(PREFIX) and label not in labels:
            labels.append(label)
    rows = []
    for label in labels:
        zero, matched = role_run(results, "zero-shot", label), role_run(results, "many-shot", label)
        if zero is None or matched is None:
            continue
        for direction in results.directions:
            rows.append(dict(binder=label[len(PREFIX):], direction=direction,
                             **matched_comparison(results, groups[zero], groups[matched], direction)))
    return rows


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def markdown(results: Results) -> list[str]:
    rows = strength_rows(results)
    if not rows:
        return []
    cells = [[r["binder"], arrow(r["direction"]), mean_sd(r["zero_shot"]),
              mean_sd(r["matched_many_shot"]), mean_sd(r["unconditional"]), mean_sd(r["recovered"], 2)]
             for r in rows]
    parts = ["## Binding strength: one binding modality, strong to weak", "",
             "rgb and depth never together; each zero-shot model has one binding modality (none, normal: the "
             "geometry; semseg: where the objects are; embed: a global feature vector, no layout) and a "
             "many-shot control on the same universe. *recovered* as in Table I, against that control "
             "(n/a where the control did not learn the direction).", "",
             table(["binder", "Task", "0-shot", "Matched many-shot", "No input", "Recovered"], cells), ""]
    parts += [f"- {line}" for line in strength_lines(rows)] + [""]
    return parts


def strength_lines(rows: list[dict]) -> list[str]:
    """The ordering of the binders by recovered fraction, in words, for rgb -> depth."""
    chosen = [r for r in rows if r["direction"] == "rgb:depth" and r["binder"] != "none"]
    scored = [(r["binder"], _finite(r["recovered"])) for r in chosen]
    scored = [(binder, values) for binder, values in scored if values]
    if len(scored) < 2:
        return ["rgb → depth: fewer than two binders with a learned control; no ordering."]
    ranked = sorted(scored, key=lambda item: -mean(item[1]))
    spread = max((stdev(values) for _, values in scored if len(values) > 1), default=None)
    text = " > ".join(f"{binder} ({mean(values):.2f})" for binder, values in ranked)
    note = (f"largest seed spread {spread:.2f}" if spread is not None
            else "one seed: an ordering, not a measured difference")
    return [f"rgb → depth, recovered fraction by binder: {text} ({note})."]


def draw(results: Results, out: Path) -> bool:
    rows = [r for r in strength_rows(results) if r["direction"] == "rgb:depth" and r["zero_shot"]]
    if len(rows) < 2:
        return False
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    positions = list(range(len(rows)))
    series = (("zero_shot", "zero-shot", "o"), ("matched_many_shot", "matched many-shot", "s"),
              ("unconditional", "no input", "x"))
    for key, label, style in series:
        means = [mean(r[key]) if r[key] else float("nan") for r in rows]
        errors = [stdev(r[key]) if len(r[key]) > 1 else 0.0 for r in rows]
        ax.errorbar(positions, means, yerr=errors, fmt=style, label=label, capsize=3)
    ax.set_xticks(positions, [r["binder"] for r in rows])
    ax.set_xlabel("the one binding modality")
    ax.set_ylabel("rgb → depth CE (nats/token)")
    ax.legend(frameon=False)
    ax.set_title("Zero-shot rgb → depth by binder")
    save_figure(fig, out)
    return True


def binding_strength_summary(results: Results) -> list[dict]:
    return strength_rows(results)

def plot(results: Results, folder: Path) -> dict[str, str]:
    """The figures this section draws into ``folder``: {title: file name}."""
    return plotted(draw, results, folder, "binding_strength.png", "CE by binding modality (binding strength)")


def summary(results: Results) -> dict:
    return {"binding_strength": binding_strength_summary(results)}
