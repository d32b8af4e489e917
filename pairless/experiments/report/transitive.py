"""The transitive pseudo-pairs part of the report: does training on the model's own translations help, against
continuing the same run for the same budget on real data alone (the honest control)?

Runs of the ``transitive`` recipe: the zero-shot base run, ``pseudo-pairs`` runs (continued on real +
pseudo samples) and ``continued`` runs (the control), each per seed, started from that seed's base run.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean, stdev

from pairless.experiments.experiment import seedless_name
from pairless.experiments.report.markdown import arrow, plotted, pyplot, save_figure, table
from pairless.experiments.report.rows import (
    LEARNED_RATIO,
    ce_ratio,
    ce_values,
    mean_sd,
    recovered_fraction,
    role_run,
    runs_by_base,
    unlearned_notes,
)
from pairless.experiments.results import Results
from pairless.modalities import Direction


def _pseudo_runs(results: Results) -> list[str]:
    """Base names of the runs continued on pseudo-pairs, in the recipe's order."""
    groups = runs_by_base(results)
    return [run.name for run in results.recipe_runs if run.role == "pseudo-pairs" and run.name in groups]


def transitive_rows(results: Results) -> list[dict]:
    """Per direction: CE of base, control, each pseudo-pair run, many-shot, no input (per seed), the
    recovered fractions and pseudo - control per seed."""
    pseudo_runs, control_run = _pseudo_runs(results), role_run(results, "continued")
    if not pseudo_runs or control_run is None:
        return []
    groups = runs_by_base(results)
    base = seedless_name(results.runs[groups[pseudo_runs[0]][0]].init_from or "")
    many = role_run(results, "many-shot")
    rows = []
    for direction in results.directions:
        values = {key: ce_values(results, groups[name], direction) if name in groups else []
                  for key, name in (("base", base), ("control", control_run), ("many_shot", many))}
        pseudo = {name: ce_values(results, groups[name], direction) for name in pseudo_runs}
        unconditional = ce_values(results, groups.get(base, []), direction, "ce_unconditional")
        ratio = ce_ratio(results, groups[many], direction) if many in groups else None
        learned = ratio is None or ratio <= LEARNED_RATIO
        many_mean = mean(values["many_shot"]) if values["many_shot"] else float("nan")

        def recovered(ces: list[float], learned=learned, many_mean=many_mean, unconditional=unconditional):
            return [recovered_fraction(u, z, many_mean) if learned else float("nan")
                    for u, z in zip(unconditional, ces, strict=False)]

        rows.append(dict(direction=direction, **values, pseudo=pseudo, unconditional=unconditional,
                         many_shot_ratio=ratio,
                         recovered={key: recovered(ces) for key, ces in
                                    (("base", values["base"]), ("control", values["control"]),
                                     *pseudo.items())},
                         difference={name: [p - c for p, c in zip(ces, values["control"], strict=False)]
                                     for name, ces in pseudo.items()}))
    return rows


def verdict(row: dict, name: str) -> str:
    """One sentence: one pseudo-pair run against the control, with the seeds' spread or a one-seed caveat."""
    differences = row["difference"][name]
    direction = arrow(row["direction"])
    if not differences:
        return f"{direction}, {name}: not evaluated."
    gap = (mean(row["unconditional"]) - mean(row["many_shot"])) if row["unconditional"] and row["many_shot"] \
        else float("nan")
    learned = row["many_shot_ratio"] is None or row["many_shot_ratio"] <= LEARNED_RATIO
    moved = "loses" if mean(differences) > 0 else "gains"
    share = f" ({moved} {abs(mean(differences)) / gap:.0%} of the no-input to many-shot gap)" \
        if learned and math.isfinite(gap) and gap > 0 else ""
    if len(differences) == 1:
        better = "lower" if differences[0] < 0 else "higher"
        return (f"{direction}, {name}: {abs(differences[0]):.3f} nats {better} than the equal-budget "
                f"control{share}; one seed, so no spread to judge it by.")
    spread, average = stdev(differences), mean(differences)
    one_sign = all(d > 0 for d in differences) or all(d < 0 for d in differences)
    if not one_sign or abs(average) <= 2 * spread / math.sqrt(len(differences)):
        return (f"{direction}, {name}: {average:+.3f} ± {spread:.3f} nats against the equal-budget control "
                f"over {len(differences)} seeds: no difference beyond the seeds' spread.")
    better = "helps" if average < 0 else "hurts"
    return (f"{direction}, {name} {better} in all {len(differences)} seeds: {average:+.3f} ± {spread:.3f} "
            f"nats against the equal-budget control{share}.")


def transitive_summary(results: Results) -> dict:
    rows = transitive_rows(results)
    return {"rows": rows, "verdicts": [verdict(row, name) for row in rows for name in row["pseudo"]],
            "pseudo_pairs": results.pseudo_pairs} if rows else {}


def markdown(results: Results) -> list[str]:
    rows = transitive_rows(results)
    if not rows:
        return []
    parts = ["## Transitive pseudo-pairs", "",
             "The zero-shot run generates the withheld modality for its own training samples that lack it "
             "(LoReTTa-style pseudo-pairs; no real pair is ever shown: the audit counts generated tokens "
             "apart), then continues training on real + pseudo samples. The control continues the same run "
             "for the same extra budget on real data alone. CE in nats per token on held-out samples; "
             "recovered = fraction of the gap from no input to the many-shot model.", ""]
    extra = {info.total_tokens for info in results.runs.values()
             if info.role in ("pseudo-pairs", "continued")}
    base_tokens = {info.total_tokens for info in results.runs.values() if info.role == "zero-shot"}
    if len(extra) == 1 and len(base_tokens) == 1:
        parts += [f"Both continued runs train {next(iter(extra)):,} tokens more than the base's "
                  f"{next(iter(base_tokens)):,} (so more than the many-shot model, which is the reference "
                  "level, not an equal-budget competitor).", ""]
    for run, stage in sorted(results.pseudo_pairs.items()):
        consistency = stage.get("consistency_all") or {}
        threshold = stage.get("threshold")
        parts.append(f"- {run}: {stage['kept']:,} of {stage['candidates']:,} training samples got a "
                     f"generated {Direction.parse(stage['direction']).destination} ({stage['schedule']}"
                     + (f" through {stage['via']}" if stage.get("via") else "")
                     + (f", consistency filter >= {threshold:g}" if threshold is not None else ", no filter")
                     + (f"; consistency median {consistency['median']:.3f}, p10 {consistency['p10']:.3f}, "
                        f"p90 {consistency['p90']:.3f}" if consistency else "") + ").")
    parts.append("")
    names = list(rows[0]["pseudo"])
    cells = []
    for r in rows:
        task = arrow(r["direction"])
        cells.append([task, "zero-shot base", mean_sd(r["base"]), mean_sd(r["recovered"]["base"], 2), "–"])
        cells.append([task, "continued (control)", mean_sd(r["control"]),
                      mean_sd(r["recovered"]["control"], 2), "–"])
        cells += [[task, f"continued on pseudo-pairs: {name}", mean_sd(r["pseudo"][name]),
                   mean_sd(r["recovered"][name], 2), mean_sd(r["difference"][name])] for name in names]
        cells.append([task, "many-shot", mean_sd(r["many_shot"]), "1 (by definition)", "–"])
        cells.append([task, "no input", mean_sd(r["unconditional"]), "0", "–"])
    parts += [table(["Task", "model", "CE", "recovered", "− control"], cells), ""]
    parts += [f"- {verdict(row, name)}" for row in rows for name in names] + [""]
    return parts + unlearned_notes(rows, "many_shot_ratio", "many-shot") + [""]


def draw(results: Results, out: Path) -> bool:
    """CE per direction for base, control, pseudo-pairs, many-shot and no input (points, seeds' spread)."""
    rows = transitive_rows(results)
    if not rows:
        return False
    plt = pyplot()

    names = list(rows[0]["pseudo"])
    keys = [("unconditional", "no input"), ("base", "zero-shot base"), ("control", "continued (control)"),
            *[(name, f"pseudo: {name}") for name in names], ("many_shot", "many-shot")]
    fig, axes = plt.subplots(1, len(rows), figsize=(4.8 * len(rows), 3.6), dpi=120, squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        for position, (key, _) in enumerate(keys):
            values = row[key] if key in row else row["pseudo"][key]
            if not values:
                continue
            ax.errorbar([position], [mean(values)], yerr=[stdev(values) if len(values) > 1 else 0.0], fmt="o",
                        capsize=3)
            ax.scatter([position] * len(values), values, s=8, alpha=0.5, color="grey")
        ax.set_xticks(range(len(keys)), [label for _, label in keys], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("CE (nats/token)")
        ax.set_title(arrow(row["direction"]))
    save_figure(fig, out)
    return True

def plot(results: Results, folder: Path) -> dict[str, str]:
    """The figures this section draws into ``folder``: {title: file name}."""
    return plotted(draw, results, folder, "transitive.png",
                   "CE: pseudo-pairs against the equal-budget control")


def summary(results: Results) -> dict:
    return {"transitive": transitive_summary(results)}
