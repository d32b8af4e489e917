"""The pairs-curve's part of the report: CE against k paired samples, the exchange rate, the figure.

The ``pairs-curve`` recipe withholds a pair except in k training samples (k = 0 is the zero-shot model,
k = all the many-shot model) and trains a *paired-only* baseline on the k samples alone. The exchange rate
reads the baseline's CE curve at the zero-shot model's CE: the number of paired samples that, trained on
alone, would do as well as zero-shot, interpolated in log k between the measured k.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean, stdev

from pairless.experiments.report.markdown import arrow, number, plotted, pyplot, save_figure, table
from pairless.experiments.report.rows import (
    LEARNED_RATIO,
    MAIN_METRIC,
    ce_ratio,
    ce_values,
    mean_sd,
    runs_by_base,
)
from pairless.experiments.results import Results
from pairless.modalities import Direction, Pair

ALL = "all"  # the k of the many-shot model: every training sample keeps both


def curve_runs(results: Results) -> dict | None:
    """The recipe's runs by k: ``{"pair", "few_shot": {k: run}, "paired_only": {k: run}}`` (None: not a
    pairs curve). ``few_shot`` holds k = 0 (the zero-shot run) and ``ALL`` (the many-shot run) too."""
    runs = results.recipe_runs
    allowed = [run for run in runs if run.role in ("few-shot", "paired-only") and run.allow_pairs]
    if not allowed:
        return None
    key = next(iter(allowed[0].allow_pairs))
    pair = Pair.parse(key)
    few_shot: dict = {}
    paired_only: dict = {}
    for run in runs:
        count = run.allow_pairs.get(key)
        withholds = any(set(p) == set(pair) for p in run.withheld)
        if run.role == "few-shot" and count:
            few_shot[count] = run.name
        elif run.role == "paired-only" and count:
            paired_only[count] = run.name
        elif run.role == "zero-shot" and withholds and run.universe is None and 0 not in few_shot:
            few_shot[0] = run.name
        elif run.role == "many-shot" and run.universe is None:
            few_shot[ALL] = run.name
    return {"pair": pair, "few_shot": few_shot, "paired_only": paired_only}


def _order(k) -> float:
    return math.inf if k == ALL else k


def curve_rows(results: Results) -> list[dict]:
    """Per direction of the pair and k: few-shot and paired-only CE (per seed), no input, decoded metric."""
    found = curve_runs(results)
    if found is None:
        return []
    groups = runs_by_base(results)
    decoded = results.generation.metrics
    rows = []
    for direction in results.directions:
        parsed = Direction.parse(direction)
        src, dst = parsed.source, parsed.destination
        if {src, dst} != set(found["pair"]):
            continue
        metric = MAIN_METRIC.get(dst, (None, "lower"))[0]

        def values(run, key="ce", direction=direction):
            return ce_values(results, groups.get(run, []), direction, key) if run else []

        def scored(run, direction=direction, metric=metric):
            return (decoded.get(direction, {}).get(run) or {}).get(metric) if run and metric else None

        for k in sorted(set(found["few_shot"]) | set(found["paired_only"]), key=_order):
            model, alone = found["few_shot"].get(k), found["paired_only"].get(k)
            rows.append(dict(direction=direction, k=k, run=model, paired_only_run=alone,
                             few_shot=values(model), paired_only=values(alone),
                             unconditional=values(model or alone, "ce_unconditional"),
                             metric=metric, decoded=scored(model), paired_only_decoded=scored(alone)))
    return rows


def exchange_rate(ks: list[int], baseline: list[float], target: float) -> tuple[str, float]:
    """Where the paired-only CE curve (``baseline`` at increasing ``ks``) first reaches ``target``.

    ``("within", N)``: N interpolated in log k between the last k above and the first at or below;
    ``("below", ks[0])``: the smallest k measured already reaches it; ``("above", ks[-1])``: none does.
    """
    points = [(k, ce) for k, ce in zip(ks, baseline, strict=True) if k > 0 and math.isfinite(ce)]
    if not points:
        raise ValueError("exchange_rate: no finite baseline CE at k > 0")
    for index, (k, ce) in enumerate(points):
        if ce <= target:
            if index == 0:
                return "below", float(k)
            k_before, ce_before = points[index - 1]
            fraction = (ce_before - target) / (ce_before - ce)
            return "within", math.exp(math.log(k_before) + fraction * (math.log(k) - math.log(k_before)))
    return "above", float(points[-1][0])


def _worth(kind: str, value: float) -> str:
    if kind == "below":
        return f"fewer than {value:,.0f}"
    if kind == "above":
        return f"more than {value:,.0f}"
    return f"about {value:,.0f}"


def _rank(estimate: tuple[str, float]) -> float:
    """Sort key of an estimate: "fewer than" below every interpolated value, "more than" above."""
    kind, value = estimate
    return {"below": -math.inf, "above": math.inf}.get(kind, value)


def _direction_rows(rows: list[dict], direction: str) -> list[dict]:
    return [row for row in rows if row["direction"] == direction]


def exchange_sentence(results: Results, direction: str, rows: list[dict] | None = None) -> tuple[str, dict]:
    """The exchange rate of one direction in words, and as numbers for summary.json."""
    rows = _direction_rows(curve_rows(results) if rows is None else rows, direction)
    head = f"Exchange rate ({arrow(direction)}): "
    many = next((row["run"] for row in rows if row["k"] == ALL), None)
    ratio = ce_ratio(results, runs_by_base(results).get(many, []), direction) if many else None
    if ratio is not None and ratio > LEARNED_RATIO:
        sentence = (head + f"the many-shot model has not learned this direction (CE ratio {ratio:.2f}, above "
                    f"{LEARNED_RATIO:.2f}), so there is nothing to exchange.")
        return sentence, {"kind": "not learned", "ratio": ratio}
    zero = next((row["few_shot"] for row in rows if row["k"] == 0), [])
    baseline = [row for row in rows if row["k"] != ALL and row["k"] > 0 and row["paired_only"]]
    if not zero or not baseline:
        return head + "no zero-shot model or no paired-only baseline was measured, so no exchange rate.", {
            "kind": "not measured"}
    ks = [row["k"] for row in baseline]
    kind, value = exchange_rate(ks, [mean(row["paired_only"]) for row in baseline], mean(zero))
    sentence = head + f"zero-shot (k = 0, CE {mean(zero):.3f}) is worth {_worth(kind, value)} paired samples"
    if kind == "within":
        lower = max(k for k in ks if k <= value)
        upper = min(k for k in ks if k >= value)
        sentence += (f": the paired-only baseline reaches its CE at k ≈ {value:,.0f} (interpolated in log k "
                     f"between k = {lower:,} and {upper:,}).")
    elif kind == "below":
        sentence += (f" (fewer than the smallest k measured: the paired-only baseline on {ks[0]:,} samples "
                     f"already reaches CE {mean(baseline[0]['paired_only']):.3f}).")
    else:
        sentence += (f" (more than the largest k measured: the paired-only baseline on {ks[-1]:,} samples "
                     f"reaches CE {mean(baseline[-1]['paired_only']):.3f}).")
    numbers = {"kind": kind, "value": value, "zero_shot_ce": mean(zero), "ks": ks}
    seeds = min(len(zero), *(len(row["paired_only"]) for row in baseline))
    if seeds > 1:
        per_seed = [exchange_rate(ks, [row["paired_only"][seed] for row in baseline], zero[seed])
                    for seed in range(seeds)]
        ordered = sorted(per_seed, key=_rank)
        low, high = ordered[0], ordered[-1]
        sentence += f" Over {seeds} seeds (each seed's zero-shot model against its own baseline) it ranges "
        sentence += f"from {_worth(*low).removeprefix('about ')} to {_worth(*high).removeprefix('about ')}."
        numbers["seeds"] = [{"kind": kind, "value": value} for kind, value in per_seed]
    return sentence, numbers


def monotone_sentence(rows: list[dict], direction: str, key: str = "few_shot") -> tuple[str, bool | None]:
    """Whether the CE curve falls with k at every step, within the seeds' spread (one seed: strictly)."""
    points = [row for row in _direction_rows(rows, direction) if row[key]]
    if len(points) < 2:
        return "", None
    seeds = min(len(row[key]) for row in points)
    rises = []
    for before, after in zip(points, points[1:], strict=False):
        change = mean(after[key]) - mean(before[key])
        spread = math.hypot(stdev(before[key]), stdev(after[key])) if seeds > 1 else 0.0
        if change > spread:
            rises.append(f"k = {before['k']} → {after['k']}: {change:+.3f}"
                         + (f" against a spread of {spread:.3f}" if seeds > 1 else ""))
    name = {"few_shot": "few-shot", "paired_only": "paired-only"}[key]
    within = f"within the seeds' spread ({seeds} seeds)" if seeds > 1 else "at every step (one seed)"
    verdict = "**holds**" if not rises else f"**does not hold** (rises at {'; '.join(rises)})"
    return (f"The {name} CE curve ({arrow(direction)}) falls as k grows {within}: "
            f"{verdict}."), not rises


def pairs_curve_summary(results: Results) -> dict:
    """What summary.json records of the pairs curve (empty when the recipe has none)."""
    rows = curve_rows(results)
    if not rows:
        return {}
    directions = list(dict.fromkeys(row["direction"] for row in rows))
    exchange = {direction: exchange_sentence(results, direction, rows) for direction in directions}
    monotone = {direction: {key: monotone_sentence(rows, direction, key)[1] for key in ("few_shot",
                                                                                         "paired_only")}
                for direction in directions}
    return {"rows": rows, "exchange_rate": {d: numbers for d, (_, numbers) in exchange.items()},
            "monotone": monotone, "statements": statements(results, rows)}


def statements(results: Results, rows: list[dict]) -> list[str]:
    lines = []
    for direction in dict.fromkeys(row["direction"] for row in rows):
        lines.append(exchange_sentence(results, direction, rows)[0])
        for key in ("few_shot", "paired_only"):
            sentence = monotone_sentence(rows, direction, key)[0]
            if sentence:
                lines.append(sentence)
    return lines


def markdown(results: Results) -> list[str]:
    """The report's pairs-curve section, as lines (none when the recipe is not a pairs curve)."""
    rows = curve_rows(results)
    if not rows:
        return []
    pair = curve_runs(results)["pair"]
    parts = [f"## Pairs curve: how many paired samples is zero-shot worth? ({pair[0]}, {pair[1]})", "",
             f"{pair[0]} and {pair[1]} appear together in exactly k training samples (chosen by a seeded "
             "hash among those that have both; each run folder's `paired_ids.json` lists them); k = 0 is the "
             "zero-shot model, k = all the many-shot model, same model and token budget. The *paired-only* "
             f"baseline trains the same model and budget on {pair[0]} and {pair[1]} of the k samples alone "
             "(what a user with only those pairs would train; at small k that is many passes over few "
             "samples, without early stopping). No input = the run's own CE without the source. Decoded "
             "metrics are of seed 0.", ""]
    cells = []
    for row in rows:
        metric = row["metric"]
        scored = metric and (row["decoded"] is not None or row["paired_only_decoded"] is not None)
        decoded = (f"{metric} {number(row['decoded'])} / {number(row['paired_only_decoded'])}" if scored
                   else "–")
        cells.append([str(row["k"]), arrow(row["direction"]), mean_sd(row["few_shot"]),
                      mean_sd(row["paired_only"]), mean_sd(row["unconditional"]), decoded])
    parts += [table(["k", "Task", "Few-shot CE", "Paired-only CE", "No input",
                      "Decoded (few-shot / paired-only)"], cells), ""]
    parts += [f"- {line}" for line in statements(results, rows)] + [""]
    return parts


def draw(results: Results, out: Path) -> bool:
    """CE against k (log axis, k = 0 at a marked position left of the smallest k), both curves, per
    direction, with the many-shot and no-input levels as horizontal lines."""
    rows = curve_rows(results)
    directions = list(dict.fromkeys(row["direction"] for row in rows))
    if not directions:
        return False
    plt = pyplot()

    fig, axes = plt.subplots(1, len(directions), figsize=(5 * len(directions), 3.8), dpi=120, squeeze=False)
    for ax, direction in zip(axes[0], directions, strict=True):
        subset = _direction_rows(rows, direction)
        measured = sorted(row["k"] for row in subset if row["k"] not in (0, ALL))
        zero_x = (measured[0] if measured else 16) / 4  # where k = 0 is drawn on the log axis

        def curve(key, subset=subset, zero_x=zero_x):
            points = [(zero_x if row["k"] == 0 else row["k"], row[key]) for row in subset
                      if row["k"] != ALL and row[key]]
            return ([x for x, _ in points], [mean(v) for _, v in points],
                    [stdev(v) if len(v) > 1 else 0.0 for _, v in points])

        xs, means, errors = curve("few_shot")
        # k = 0 (zero-shot) stands alone, left of the axis break; the line joins the measured k only
        joined = [index for index, x in enumerate(xs) if x != zero_x]
        line = ax.errorbar([xs[i] for i in joined], [means[i] for i in joined],
                           yerr=[errors[i] for i in joined], fmt="o-", capsize=3,
                           label="allowed in k samples (+ unpaired data)")
        if zero_x in xs:
            at = xs.index(zero_x)
            ax.errorbar([zero_x], [means[at]], yerr=[errors[at]], fmt="D", capsize=3,
                        color=line[0].get_color(), label="zero-shot (k = 0)")
        xs, means, errors = curve("paired_only")
        if xs:
            ax.errorbar(xs, means, yerr=errors, fmt="s--", capsize=3, label="paired-only (k samples alone)")
        many = next((row["few_shot"] for row in subset if row["k"] == ALL and row["few_shot"]), None)
        if many:
            ax.axhline(mean(many), color="tab:green", linestyle="-.", label="many-shot (k = all)")
        none = next((row["unconditional"] for row in subset if row["k"] == 0 and row["unconditional"]), None)
        if none:
            ax.axhline(mean(none), color="grey", linestyle=":", label="no input")
        ax.set_xscale("log")
        ticks = [zero_x, *measured]
        ax.set_xticks(ticks, ["0", *(f"{k:,}" for k in measured)])
        ax.minorticks_off()
        if measured:  # the axis is broken between k = 0 and the smallest k
            ax.axvline(math.sqrt(zero_x * measured[0]), color="black", linewidth=0.6, linestyle=(0, (2, 2)))
        ax.set_xlabel("k: paired training samples (log; k = 0 left of the break)")
        ax.set_ylabel(f"{arrow(direction)} CE (nats/token)")
        ax.set_title(f"{arrow(direction)} against paired samples")
        ax.legend(frameon=False, fontsize=7)
    save_figure(fig, out)
    return True

def plot(results: Results, folder: Path) -> dict[str, str]:
    """The figures this section draws into ``folder``: {title: file name}."""
    return plotted(draw, results, folder, "pairs_curve.png", "CE vs paired samples (pairs curve)")


def summary(results: Results) -> dict:
    return {"pairs_curve": pairs_curve_summary(results)}
