"""The quality bar of a report: did each model learn each direction, in numbers and in words.

A direction counts as learned when both hold:

- its CE is at most ``LEARNED_RATIO`` of the run's own no-input CE (above ``WORSE_RATIO`` the input makes
  the model *worse than no input*, and the report says so in those words);
- where a decoder exists, its decoded metric is better than that of the same run's generation from no input
  (scored on the same samples): a CE ratio of 0.87 with generations no closer to the truth than guessing is
  not a learned translation.

:func:`main_metric` picks the decoded metric shown for a modality: its field's own for the built-in ones,
the one its declared kind gives for a modality declared with the data.
"""

from __future__ import annotations

from pairless.experiments.report.markdown import arrow, count, number, table
from pairless.experiments.report.rows import (
    CHAIN_MARGIN,
    LEARNED_RATIO,
    MAIN_METRIC,
    WORSE_RATIO,
    ce_ratio,
    runs_by_base,
    translation_rows,
)
from pairless.experiments.results import Results
from pairless.modalities import Direction

# The tokenizer report names some metrics differently.
CEILING_NAME = {"angular_error": "angular_error_degrees"}
# Metrics of any modality (pairless.inference.decoded_metrics.declared_metrics), in order of preference;
# an 8-bit declared image shows psnr first, a float one its rmse in its own units.
_GENERIC = (("miou", "higher"), ("cosine", "higher"), ("token_f1", "higher"), ("bleu4", "higher"),
            ("rmse", "lower"), ("psnr", "higher"))
_FALLBACK = {"caption": (("token_f1", "higher"),)}  # user captions: no scene to check facts against


def main_metric(modality: str, available=None) -> tuple[str | None, str]:
    """(metric, "lower"/"higher" better) shown for ``modality``; with ``available`` (metric names), the
    preferred one among them."""
    if modality in MAIN_METRIC and (available is None or MAIN_METRIC[modality][0] in available):
        return MAIN_METRIC[modality]
    preferred = list(_FALLBACK.get(modality, ()))
    from pairless import modalities as registry

    try:
        entry = registry.get(modality)
    except KeyError:
        entry = None
    if entry is not None:  # a declared modality: the metric of its kind first
        if entry.kind == "sequence":
            preferred.append(("token_f1", "higher"))
        elif entry.kind == "vector":
            preferred.append(("cosine", "higher"))
        elif entry.num_classes:
            preferred.append(("miou", "higher"))
        else:
            preferred.append(("psnr", "higher") if entry.dtype == "uint8" else ("rmse", "lower"))
    if available is None:  # nothing measured to choose among: the kind's metric, or none for an unknown name
        return preferred[0] if preferred else (None, "lower")
    for name, better in [*preferred, *_GENERIC]:
        if name in available:
            return name, better
    return None, "lower"


def compare(value: float, baseline: float, better: str) -> str:
    """"better", "worse" or "tie" (within CHAIN_MARGIN of the baseline, relative: one seed, few samples)."""
    gain = (baseline - value) if better == "lower" else (value - baseline)
    if abs(gain) <= CHAIN_MARGIN * max(abs(baseline), 1e-12):
        return "tie"
    return "better" if gain > 0 else "worse"


def quality_rows(results: Results) -> list[dict]:
    """Per direction and run: samples, CE ratio, decoded metric against the no-input generation's and the
    tokenizer ceiling, and whether it is learned (both tests), with the reason when it is not."""
    groups = runs_by_base(results)
    decoded = results.generation.metrics
    ceiling = results.tokenizer_ceiling
    rows = []
    for direction in results.directions:
        destination = Direction.parse(direction).destination
        per_run = decoded.get(direction, {})
        available = {key for run, values in per_run.items() if isinstance(values, dict)
                     and not run.startswith("_") for key in values}
        metric, better = main_metric(destination, available or None)
        for base, names in groups.items():
            ratio = ce_ratio(results, names, direction)
            if ratio is None:
                continue
            value = (per_run.get(base) or {}).get(metric) if metric else None
            no_input = ((per_run.get("_no_input") or {}).get(base) or {}).get(metric) if metric else None
            bound = (ceiling.get(destination) or {}).get(CEILING_NAME.get(metric, metric)) if metric else None
            entry = results.evals.get(names[0], {}).get(direction)
            samples = entry.num_samples if entry is not None else None
            reason = None
            if ratio > WORSE_RATIO:
                reason = "worse than no input"
            elif ratio > LEARNED_RATIO:
                reason = "CE ratio"
            elif value is not None and no_input is not None and compare(value, no_input, better) != "better":
                reason = "decoded no better than no input"
            rows.append(dict(direction=direction, run=base, role=results.runs[names[0]].role,
                             ratio=ratio, learned=reason is None, reason=reason, metric=metric, better=better,
                             value=value, no_input=no_input, ceiling=bound, samples=samples))
    return rows


def learned_cell(row: dict) -> str:
    if row["learned"]:
        return "yes"
    return "**no**" if row["reason"] == "CE ratio" else f"**no: {row['reason']}**"


def quality_notes(results: Results, rows: list[dict] | None = None) -> list[str]:
    """Plain words for each direction and run that the CE ratio alone would misread."""
    notes = []
    for row in quality_rows(results) if rows is None else rows:
        name = f"{arrow(row['direction'])} ({row['run']})"
        if row["reason"] == "worse than no input":
            notes.append(f"{name}: the CE is {row['ratio']:.2f} of the CE with no input: **worse than no "
                         "input**, the model predicts the destination worse when it sees the source.")
        elif row["reason"] == "decoded no better than no input":
            notes.append(f"{name}: the CE ratio ({row['ratio']:.2f}) alone would say learned, but the "
                         f"decoded {row['metric']} ({row['value']:.3f}) is no better than that of a "
                         f"generation with no input ({row['no_input']:.3f}; a difference within "
                         f"{CHAIN_MARGIN:.0%} counts as none): **not learned**.")
    return notes


def recovered_notes(results: Results) -> list[str]:
    """Plain words for each direction the many-shot model has not learned (nothing to compare there)."""
    notes = []
    for row in translation_rows(results):
        if not row["many_shot_learned"]:
            notes.append(f"{arrow(row['direction'])}: the many-shot model is within "
                         f"{1 - LEARNED_RATIO:.0%} of its no-input CE (ratio {row['many_shot_ratio']:.2f}): "
                         "it has not learned this direction, so there is nothing to compare the zero-shot "
                         "model with; no recovered fraction is computed (n/a).")
    return notes


def learned_directions(results: Results) -> dict[tuple[str, str], dict]:
    """{(direction, run): quality row}: what the unpaired verdicts check the directions they rest on with."""
    return {(row["direction"], row["run"]): row for row in quality_rows(results)}


def markdown(results: Results) -> list[str]:
    rows = quality_rows(results)
    if not rows:
        return []
    parts = ["## Quality bar: did each model learn each direction?", "",
             f"*ratio* = the run's CE / its own no-input CE (1.00 = the input is ignored; above "
             f"{LEARNED_RATIO:.2f} = not learned; above {WORSE_RATIO:.2f} = worse than no input). The "
             "decoded metric "
             "scores generations against the tokenized ground truth, beside the same run's generation "
             "from no input (a learned direction beats it) and the tokenizer's own encode → decode "
             "score (the ceiling). *samples*: held-out samples the CE is measured on.", ""]
    cells = [[arrow(r["direction"]), r["run"], r["role"], count(r["samples"]), f"{r['ratio']:.2f}",
              learned_cell(r), f"{r['metric']} ({r['better']} is better)" if r["metric"] else "–",
              number(r["value"]), number(r["no_input"]), number(r["ceiling"])] for r in rows]
    parts += [table(["Task", "run", "role", "samples", "CE ratio", "learned", "decoded metric", "value",
                     "no input", "tokenizer ceiling"], cells), ""]
    notes = recovered_notes(results) + quality_notes(results, rows)
    return parts + [f"- {note}" for note in notes] + ([""] if notes else [])


def summary(results: Results) -> dict:
    return {"quality": quality_rows(results)}
