"""What a recipe's report says, as rows and sentences: the data behind report.md and summary.json.

Each builder reads results.json (validated: :class:`~pairless.experiments.results.Results`) and returns
plain rows (one dict per direction, run or binding set) or sentences; :mod:`pairless.experiments.report`
renders them as markdown tables and figures and writes them to summary.json.
:func:`findings` checks each of the study's findings against our numbers and
states it as holding or not, with the numbers. The helpers here (``ce_values``,
``ce_ratio``, ``role_run``, ...) are shared by the report's other sections.
"""

from __future__ import annotations

import math
from statistics import mean, stdev

# the quality bar's thresholds (defined beside the metrics, for pairless eval too); re-exported here
from pairless.experiments.experiment import seedless_name
from pairless.experiments.report.markdown import arrow
from pairless.experiments.results import Results, RunRecord
from pairless.metrics import LEARNED_RATIO, WORSE_RATIO  # noqa: F401
from pairless.modalities import Direction

# The decoded metric shown for each destination beside its tokenizer ceiling: (metric, "lower"/"higher"
# better).
MAIN_METRIC = {"depth": ("abs_rel", "lower"), "semseg": ("miou", "higher"),
               "normal": ("angular_error", "lower"),
               "rgb": ("psnr", "higher"), "caption": ("fact_accuracy", "higher"), "det": ("map_50", "higher"),
               "embed": ("cosine", "higher")}
# Chained and direct decoded metrics closer than this (relative) are reported as a tie: one seed, 64 samples.
CHAIN_MARGIN = 0.05


def unlearned_note(direction: str, ratio: float | None, reference: str) -> str | None:
    """A report line when the reference model's CE is above LEARNED_RATIO of no input (None otherwise)."""
    if ratio is None or ratio <= LEARNED_RATIO:
        return None
    return (f"- {arrow(direction)}: the {reference} model's CE is {ratio:.2f} of no input: too "
            "little learned for a recovered fraction to mean anything.")


def recovered_fraction(ce_unconditional: float, ce_zero_shot: float, ce_many_shot: float) -> float:
    """(CE_no_input - CE_zero_shot) / (CE_no_input - CE_many_shot): 1 = as good as many-shot, 0 = no input."""
    gap = ce_unconditional - ce_many_shot
    if gap <= 0 or not math.isfinite(gap):
        return float("nan")
    return (ce_unconditional - ce_zero_shot) / gap


def runs_by_base(results: Results) -> dict[str, list[str]]:
    """Base run name -> the names of its seeds (``name``, ``name@s1``, ...)."""
    groups: dict[str, list[str]] = {}
    for name in results.runs:
        groups.setdefault(seedless_name(name), []).append(name)
    return groups


def ce_values(results: Results, run_names: list[str], direction: str, key: str = "ce") -> list[float]:
    """The ``key`` (``ce`` or ``ce_unconditional``) of each run evaluated in ``direction``."""
    values = []
    for name in run_names:
        entry = results.evals.get(name, {}).get(direction)
        if entry is not None:
            values.append(float(getattr(entry, key)))
    return values


def mean_sd(values: list[float], digits: int = 3) -> str:
    """``values`` as a table cell: the one value, or mean ± standard deviation over seeds; – when none."""
    if not values:
        return "–"
    if not all(math.isfinite(value) for value in values):
        # a recovered fraction where many-shot is no better than no input (see the report's note)
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{mean(values):.{digits}f} ± {stdev(values):.{digits}f}"


def _full_universe_first(results: Results) -> list[tuple[str, RunRecord]]:
    """(base run name, info of its first seed), runs on the full modality universe first.

    A recipe can hold several runs of one role for one pair (``binding`` has a zero-shot run per binding
    set); the Table I rows compare the zero-shot and many-shot runs that see every modality, not a
    restricted universe's run against the full many-shot model (which they once did).
    """
    runs = [(base, results.runs[names[0]]) for base, names in runs_by_base(results).items()]
    return sorted(runs, key=lambda item: item[1].universe is not None)


def _zero_shot_run(results: Results, direction: str, label: str | None = None) -> str | None:
    parsed = Direction.parse(direction)
    pair = {parsed.sources[0], parsed.destination}
    for base, info in _full_universe_first(results):
        if info.role != "zero-shot":
            continue
        if any(set(p) == pair for p in info.withheld) and (label is None or info.label == label):
            return base
    return None


def role_run(results: Results, role: str, label: str | None = None) -> str | None:
    for base, info in _full_universe_first(results):
        if info.role == role and (label is None or info.label == label):
            return base
    return None


def translation_rows(results: Results) -> list[dict]:
    """One row per direction: zero-shot, many-shot, larger, no-input CE, recovered fraction (with seeds)."""
    groups = runs_by_base(results)
    many, larger = role_run(results, "many-shot"), role_run(results, "larger")
    rows = []
    for direction in results.directions:
        zero = _zero_shot_run(results, direction)
        if zero is None:
            continue
        zs = ce_values(results, groups[zero], direction)
        ms = ce_values(results, groups[many], direction) if many else []
        lg = ce_values(results, groups[larger], direction) if larger else []
        un = ce_values(results, groups[zero], direction, "ce_unconditional")
        many_ratio = ce_ratio(results, groups[many], direction) if many else None
        learned = many_ratio is None or many_ratio <= LEARNED_RATIO
        # Where the many-shot model learned nothing, the gap is not there: no fraction of it is computed.
        recovered = [recovered_fraction(u, z, m) if learned else float("nan")
                     for u, z, m in zip(un, zs, ms, strict=False)]
        rows.append(dict(direction=direction, zero_shot=zs, many_shot=ms, larger=lg, unconditional=un,
                         recovered=recovered, zero_shot_run=zero, many_shot_ratio=many_ratio,
                         many_shot_learned=learned))
    return rows


def ce_ratio(results: Results, run_names: list[str], direction: str) -> float | None:
    """Mean conditional CE / mean no-input CE of a run (over its seeds); None when not evaluated."""
    ce = ce_values(results, run_names, direction)
    un = ce_values(results, run_names, direction, "ce_unconditional")
    if not ce or not un or mean(un) <= 0:
        return None
    return mean(ce) / mean(un)


def binding_rows(results: Results) -> list[dict]:
    """Per binding set (label = number of binding modalities): zero-shot vs matched many-shot."""
    groups = runs_by_base(results)
    rows = []
    labels = sorted({info.label for info in results.runs.values() if info.label.isdigit()},
                    key=int)
    for label in labels:
        zero, matched = role_run(results, "zero-shot", label), role_run(results, "many-shot", label)
        if zero is None or matched is None:
            continue
        seen = results.runs[groups[zero][0]].tokens_per_modality
        for direction in results.directions:
            rows.append(dict(binding=int(label), direction=direction,
                             **matched_comparison(results, groups[zero], groups[matched], direction),
                             rgb_tokens=seen.get("rgb"), depth_tokens=seen.get("depth"), zero_shot_run=zero))
    return rows


def matched_comparison(results: Results, zero_shot: list[str], matched: list[str], direction: str) -> dict:
    """A zero-shot run (its seeds' names) against its matched many-shot control in one direction: the CEs
    per seed, no input, the control's CE ratio and the recovered fraction per seed (NaN where the control
    did not learn the direction: there is no gap to recover)."""
    zs = ce_values(results, zero_shot, direction)
    ms = ce_values(results, matched, direction)
    un = ce_values(results, zero_shot, direction, "ce_unconditional")
    ratio = ce_ratio(results, matched, direction)
    learned = ratio is None or ratio <= LEARNED_RATIO
    return dict(zero_shot=zs, matched_many_shot=ms, unconditional=un, matched_ratio=ratio,
                recovered=[recovered_fraction(u, z, m) if learned else float("nan")
                           for u, z, m in zip(un, zs, ms, strict=False)])


def unlearned_notes(rows: list[dict], ratio_key: str, reference: str) -> list[str]:
    """The :func:`unlearned_note` of every row whose reference model (CE ratio under ``ratio_key``) did not
    learn its direction."""
    notes = [unlearned_note(row["direction"], row[ratio_key], reference) for row in rows]
    return [note for note in notes if note]


def chained_rows(results: Results) -> list[dict]:
    """Per chained figure: the zero-shot run's decoded metric direct and chained; many-shot direct."""
    decoded = results.generation.metrics
    rows = []
    for direction, chain in results.generation.chained.items():
        metric, better = MAIN_METRIC.get(Direction.parse(direction).destination, (None, None))
        zero, many = _zero_shot_run(results, direction), role_run(results, "many-shot")
        if metric is None or zero is None:
            continue

        def value(metrics: dict, run: str | None, metric: str = metric) -> float | None:
            return (metrics.get(run) or {}).get(metric) if run else None

        chained, direct = value(chain.metrics, zero), value(decoded.get(direction, {}), zero)
        verdict = None  # True: chaining better by more than CHAIN_MARGIN; False: direct better; "tie"
        if chained is not None and direct is not None:
            gain = (direct - chained) if better == "lower" else (chained - direct)
            verdict = "tie" if abs(gain) <= CHAIN_MARGIN * max(abs(direct), 1e-9) else gain > 0
        rows.append({"direction": direction, "via": chain.via, "run": zero, "metric": metric,
                     "better": better, "chained": chained, "direct": direct,
                     "many_shot": value(decoded.get(direction, {}), many), "chain_wins": verdict})
    return rows


def chained_lines(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        if row["chain_wins"] is None:
            continue
        parsed = Direction.parse(row["direction"])
        src, dst = parsed.source, parsed.destination
        name = f"{src} → {row['via']} → {dst}"
        if row["chain_wins"] == "tie":
            lines.append(f"{name}: chained and direct zero-shot {src} → {dst} are within "
                         f"{CHAIN_MARGIN:.0%} of each other ({row['metric']} {row['chained']:.3f} vs "
                         f"{row['direct']:.3f}): no difference this report can tell.")
        elif row["chain_wins"]:
            lines.append(f"{name}: chaining through {row['via']} **beats** direct zero-shot {src} → {dst} "
                         f"({row['metric']} {row['chained']:.3f} vs {row['direct']:.3f}): the model has "
                         "learned two translations better than the one it was never shown, not a shared "
                         "latent.")
        else:
            lines.append(f"{name}: direct zero-shot {src} → {dst} is at least as good as chaining through "
                         f"{row['via']} ({row['metric']} {row['direct']:.3f} vs {row['chained']:.3f}).")
    return lines


def region_rows(results: Results) -> list[dict]:
    """Per direction with a token split (objects / background of an image, content / template words of a
    caption) and run: the CE ratio on each group and the focus group's share of the tokens."""
    rows = []
    for direction in results.directions:
        for name, per_direction in results.regions.items():
            row = per_direction.get(direction)
            if not row or "groups" not in row:
                continue
            focus, rest = row["groups"]
            if "ratio" not in row[focus] or "ratio" not in row[rest]:
                continue
            run = results.runs.get(name)
            rows.append({"direction": direction, "run": name, "role": run.role if run else "?",
                         "focus": focus, "rest": rest, "focus_ratio": row[focus]["ratio"],
                         "rest_ratio": row[rest]["ratio"], "focus_ce": row[focus]["ce"],
                         "rest_ce": row[rest]["ce"], "focus_fraction": row["focus_fraction"],
                         "num_samples": row["num_samples"]})
    return rows


def findings(results: Results) -> list[str]:
    """The study's findings, each checked on our numbers (holds / does not hold, with numbers)."""
    lines = []
    rows = translation_rows(results)
    unlearned_rows = [r for r in rows if not r["many_shot_learned"]]
    if unlearned_rows:
        lines.append("Not judged where the many-shot model has not learned the direction (CE within "
                     f"{1 - LEARNED_RATIO:.0%} of no input): "
                     + ", ".join(f"{r['direction']} (ratio {r['many_shot_ratio']:.2f})"
                                 for r in unlearned_rows) + ".")
    rows = [r for r in rows if r["many_shot_learned"]]
    if rows and any(row["many_shot"] for row in rows):
        worse = [r for r in rows if r["zero_shot"] and r["many_shot"]
                 and mean(r["zero_shot"]) > mean(r["many_shot"])]
        verdict = "holds" if len(worse) == len(rows) else f"holds in {len(worse)} of {len(rows)} directions"
        detail = "; ".join(f"{r['direction']}: {mean_sd(r['zero_shot'])} vs {mean_sd(r['many_shot'])}"
                           for r in rows)
        lines.append(f"Zero-shot CE is worse than many-shot in every direction: **{verdict}** ({detail}).")
        per_seed = _seed_ordering(rows)
        if per_seed:
            lines.append(per_seed)
    brows = [r for r in binding_rows(results) if r["direction"] == "rgb:depth" and r["zero_shot"]]
    if len(brows) >= 2:
        values = [mean(r["zero_shot"]) for r in brows]
        falling = all(b < a for a, b in zip(values, values[1:], strict=False))
        detail = ", ".join(f"{r['binding']}: {v:.3f}" for r, v in zip(brows, values, strict=False))
        lines.append(f"Zero-shot rgb->depth CE falls as binding modalities are added: "
                     f"**{'holds' if falling else 'does not hold'}** ({detail}).")
        steps = _binding_steps(brows)
        if steps:
            lines.append(steps)
        zero = next((r for r in brows if r["binding"] == 0), None)
        if zero and zero["recovered"]:
            fraction = mean(zero["recovered"])
            lines.append("With 0 binding modalities zero-shot is no better than no input (recovered "
                         f"fraction <= 0.1): **{'holds' if fraction <= 0.1 else 'does not hold'}** "
                         f"(recovered {fraction:.3f}; CE {mean(zero['zero_shot']):.3f} vs no input "
                         f"{mean(zero['unconditional']):.3f}).")
    recovered = {r["direction"]: mean(r["recovered"]) for r in rows if r["recovered"] and
                 all(math.isfinite(x) for x in r["recovered"])}
    unlearned = [r for r in translation_rows(results) if r["direction"] == "rgb:caption" and r["recovered"]
                 and not all(math.isfinite(x) for x in r["recovered"])]
    if unlearned:
        row = unlearned[0]
        lines.append("rgb->caption is the hardest direction: **cannot be judged here**: the many-shot model "
                     f"is no better than no input on it (CE {mean(row['many_shot']):.3f} vs "
                     f"{mean(row['unconditional']):.3f}"
                     "), so no model learned this translation at this budget and its recovered fraction is "
                     "undefined (n/a in the table). What budget it takes is measured in docs/learning.md "
                     "(\"Captions with the model of 2026-12-07\"): on rgb and caption alone, about 7M tokens "
                     "for a CE ratio of 0.9; this recipe's many-shot model spreads its budget over every "
                     "modality.")
    if "rgb:caption" in recovered and len(recovered) > 1:
        hardest = min(recovered, key=recovered.get)
        detail = ", ".join(f"{d}: {v:.2f}" for d, v in sorted(recovered.items(), key=lambda kv: kv[1]))
        lines.append(f"rgb->caption is the hardest direction (lowest recovered fraction): "
                     f"**{'holds' if hardest == 'rgb:caption' else 'does not hold'}** ({detail}).")
    return lines


def _binding_steps(brows: list[dict]) -> str:
    """With 2+ seeds: each step's change of mean CE against the seeds' spread, and the per-seed verdicts."""
    seeds = min(len(r["zero_shot"]) for r in brows)
    if seeds < 2:
        return ""
    parts = []
    for a, b in zip(brows, brows[1:], strict=False):
        change = mean(b["zero_shot"]) - mean(a["zero_shot"])
        spread = math.hypot(stdev(a["zero_shot"]), stdev(b["zero_shot"]))
        verdict = "beyond the seed spread" if abs(change) > spread else "within the seed spread"
        parts.append(f"{a['binding']}->{b['binding']}: {change:+.3f} (spread {spread:.3f}, {verdict})")
    per_seed = [all(r2["zero_shot"][i] < r1["zero_shot"][i] for r1, r2 in zip(brows, brows[1:], strict=False))
                for i in range(seeds)]
    return (f"Step by step over {seeds} seeds, change of the mean zero-shot rgb->depth CE (spread = the "
            f"seeds' standard deviations of both ends, combined): {'; '.join(parts)}. It falls at every step "
            f"in {sum(per_seed)} of {seeds} seeds.")


def _seed_ordering(rows: list[dict]) -> str:
    broken = []
    seeds = max((len(r["zero_shot"]) for r in rows), default=0)
    if seeds < 2:
        return ""
    for row in rows:
        for index, (z, m) in enumerate(zip(row["zero_shot"], row["many_shot"], strict=False)):
            if not z > m:
                broken.append(f"{row['direction']} seed {index}")
    if not broken:
        return (f"The ordering zero-shot > many-shot holds in every one of the {seeds} seeds, "
                "in every direction.")
    return f"The ordering zero-shot > many-shot does not hold in: {', '.join(broken)}."
