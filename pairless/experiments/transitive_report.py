"""The transitive pseudo-pairs part of the report: does training on the model's own translations help, against
continuing the same run for the same budget on real data alone (the honest control)?

Runs of the ``transitive`` recipe: the zero-shot base run, ``pseudo-pairs`` runs (continued on real +
pseudo samples) and ``continued`` runs (the control), each per seed, started from that seed's base run.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean, stdev

from pairless.experiments.report import (
    LEARNED_RATIO,
    _ce,
    _fmt,
    _ratio,
    _role_run,
    _runs_by_base,
    _table,
    recovered_fraction,
    save_figure,
)


def transitive_rows(results: dict) -> list[dict]:
    """Per direction: CE of base, control, pseudo-pairs, many-shot, no input (per seed), the recovered
    fractions and pseudo - control per seed."""
    pseudo_run, control_run = _role_run(results, "pseudo-pairs"), _role_run(results, "continued")
    if pseudo_run is None or control_run is None:
        return []
    groups = _runs_by_base(results)
    base = results["runs"][groups[pseudo_run][0]].get("init_from", "").split("@")[0]
    many = _role_run(results, "many-shot")
    rows = []
    for direction in results["config"]["directions"]:
        values = {key: _ce(results, groups[name], direction) if name in groups else []
                  for key, name in (("base", base), ("control", control_run), ("pseudo", pseudo_run),
                                    ("many_shot", many))}
        unconditional = _ce(results, groups.get(base, []), direction, "ce_unconditional")
        ratio = _ratio(results, groups[many], direction) if many in groups else None
        learned = ratio is None or ratio <= LEARNED_RATIO
        many_mean = mean(values["many_shot"]) if values["many_shot"] else float("nan")
        recovered = {key: [recovered_fraction(u, z, many_mean) if learned else float("nan")
                           for u, z in zip(unconditional, values[key], strict=False)]
                     for key in ("base", "control", "pseudo")}
        difference = [p - c for p, c in zip(values["pseudo"], values["control"], strict=False)]
        rows.append(dict(direction=direction, **values, unconditional=unconditional, many_shot_ratio=ratio,
                         recovered=recovered, difference=difference))
    return rows


def verdict(row: dict) -> str:
    """One sentence: pseudo-pairs against the control, with the seeds' spread or a one-seed caveat."""
    differences = row["difference"]
    name = row["direction"].replace(":", " → ")
    if not differences:
        return f"{name}: not evaluated."
    gap = (mean(row["unconditional"]) - mean(row["many_shot"])) if row["unconditional"] and row["many_shot"] \
        else float("nan")
    learned = row["many_shot_ratio"] is None or row["many_shot_ratio"] <= LEARNED_RATIO
    share = f" ({-mean(differences) / gap:+.0%} of the no-input to many-shot gap)" \
        if learned and math.isfinite(gap) and gap > 0 else ""
    if len(differences) == 1:
        better = "lower" if differences[0] < 0 else "higher"
        return (f"{name}: pseudo-pairs end {abs(differences[0]):.3f} nats {better} than the equal-budget "
                f"control{share}; one seed, so no spread to judge it by.")
    spread = stdev(differences)
    average = mean(differences)
    if abs(average) <= 2 * spread / math.sqrt(len(differences)):
        return (f"{name}: pseudo-pairs and the equal-budget control differ by {average:+.3f} ± {spread:.3f} "
                f"nats over {len(differences)} seeds: no difference beyond the seeds' spread.")
    better = "help" if average < 0 else "hurt"
    return (f"{name}: pseudo-pairs {better}: {average:+.3f} ± {spread:.3f} nats against the equal-budget "
            f"control over {len(differences)} seeds{share}.")


def summary(results: dict) -> dict:
    rows = transitive_rows(results)
    return {"rows": rows, "verdicts": [verdict(row) for row in rows],
            "pseudo_pairs": results.get("pseudo_pairs", {})} if rows else {}


def markdown(results: dict) -> list[str]:
    rows = transitive_rows(results)
    if not rows:
        return []
    parts = ["## Transitive pseudo-pairs", "",
             "The zero-shot run generates the withheld modality for its own training samples that lack it "
             "(LoReTTa-style pseudo-pairs; no real pair is ever shown: the audit counts generated tokens "
             "apart), then continues training on real + pseudo samples. The control continues the same run "
             "for the same extra budget on real data alone. CE in nats per token on held-out samples; "
             "recovered = fraction of the gap from no input to the many-shot model.", ""]
    extra = {info.get("total_tokens") for info in results["runs"].values()
             if info["role"] in ("pseudo-pairs", "continued")}
    base_tokens = {info.get("total_tokens") for info in results["runs"].values()
                   if info["role"] == "zero-shot"}
    if len(extra) == 1 and len(base_tokens) == 1:
        parts += [f"Both continued runs train {next(iter(extra)):,} tokens more than the base's "
                  f"{next(iter(base_tokens)):,} (so more than the many-shot model, which is the reference "
                  "level, not an equal-budget competitor).", ""]
    for run, stage in sorted((results.get("pseudo_pairs") or {}).items()):
        consistency = stage.get("consistency_all") or {}
        threshold = stage.get("threshold")
        parts.append(f"- {run}: {stage['kept']:,} of {stage['candidates']:,} training samples got a "
                     f"generated {stage['direction'].split(':')[1]} ({stage['schedule']}"
                     + (f" through {stage['via']}" if stage.get("via") else "")
                     + (f", consistency filter >= {threshold:g}" if threshold is not None else ", no filter")
                     + (f"; consistency median {consistency['median']:.3f}, p10 {consistency['p10']:.3f}, "
                        f"p90 {consistency['p90']:.3f}" if consistency else "") + ").")
    parts.append("")
    table = [[r["direction"].replace(":", " → "), _fmt(r["base"]), _fmt(r["control"]), _fmt(r["pseudo"]),
              _fmt(r["many_shot"]), _fmt(r["unconditional"]), _fmt(r["recovered"]["control"], 2),
              _fmt(r["recovered"]["pseudo"], 2), _fmt(r["difference"])] for r in rows]
    parts += [_table(["Task", "zero-shot base", "continued (control)", "continued on pseudo-pairs",
                      "many-shot", "no input", "recovered: control", "recovered: pseudo",
                      "pseudo − control"], table), ""]
    parts += [f"- {verdict(row)}" for row in rows] + [""]
    for row in rows:
        ratio = row["many_shot_ratio"]
        if ratio is not None and ratio > LEARNED_RATIO:
            parts.append(f"- {row['direction'].replace(':', ' → ')}: the many-shot model's CE is "
                         f"{ratio:.2f} of no input: too little learned for a recovered fraction to mean "
                         "anything.")
    return parts + [""]


def plot(results: dict, out: Path) -> bool:
    """CE per direction for base, control, pseudo-pairs, many-shot and no input (points, seeds' spread)."""
    rows = transitive_rows(results)
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("unconditional", "no input"), ("base", "zero-shot base"), ("control", "continued (control)"),
            ("pseudo", "continued on pseudo-pairs"), ("many_shot", "many-shot")]
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.4), dpi=120, squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        for position, (key, _) in enumerate(keys):
            values = row[key]
            if not values:
                continue
            ax.errorbar([position], [mean(values)], yerr=[stdev(values) if len(values) > 1 else 0.0], fmt="o",
                        capsize=3)
            ax.scatter([position] * len(values), values, s=8, alpha=0.5, color="grey")
        ax.set_xticks(range(len(keys)), [label for _, label in keys], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("CE (nats/token)")
        ax.set_title(row["direction"].replace(":", " → "))
    save_figure(fig, out)
    return True
