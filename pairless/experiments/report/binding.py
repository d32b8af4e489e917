"""The report's Table II section: zero-shot rgb -> depth per number of binding modalities, each with a
matched many-shot control, beside the study's numbers; and its plot."""

from __future__ import annotations

from pathlib import Path
from statistics import mean, stdev

from pairless.experiments.report.markdown import arrow, pyplot, save_figure, table, tokens
from pairless.experiments.report.rows import binding_rows, mean_sd
from pairless.experiments.results import Results

# The study's Table II: number of binding modalities -> zero-shot rgb -> depth CE.
PAPER_TABLE_II = {0: 14.128, 1: 11.810, 3: 9.209, 5: 8.265}


def markdown(results: Results) -> list[str]:
    rows = binding_rows(results)
    if not rows:
        return []
    cells = [[str(r["binding"]), arrow(r["direction"]), mean_sd(r["zero_shot"]),
              mean_sd(r["matched_many_shot"]), mean_sd(r["unconditional"]), mean_sd(r["recovered"], 2),
              tokens(r["rgb_tokens"]), tokens(r["depth_tokens"]),
              f"{PAPER_TABLE_II[r['binding']]:.2f}"
              if r["direction"] == "rgb:depth" and r["binding"] in PAPER_TABLE_II else "–"]
             for r in rows]
    return ["## Binding modalities (the study's Table II, with matched many-shot controls)", "",
            "Each binding set trains a zero-shot model (rgb and depth never together) and a *matched* "
            "many-shot model on the same restricted universe, so that the recovered fraction separates "
            "binding from how often rgb and depth are seen.", "",
            table(["# binding", "Task", "0-shot", "Matched many-shot", "No input", "Recovered",
                   "rgb tokens seen", "depth tokens seen", "Study 0-shot"], cells), ""]


def plot(results: Results, folder: Path) -> dict[str, str]:
    """CE against the number of binding modalities (zero-shot, matched many-shot, no input): binding.png."""
    rows = [r for r in binding_rows(results) if r["direction"] == "rgb:depth" and r["zero_shot"]]
    if len(rows) < 2:
        return {}
    plt = pyplot()
    counts = [r["binding"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for key, label, style in (("zero_shot", "zero-shot", "o-"),
                              ("matched_many_shot", "matched many-shot", "s--"),
                              ("unconditional", "no input", "x:")):
        means = [mean(r[key]) if r[key] else float("nan") for r in rows]
        errors = [stdev(r[key]) if len(r[key]) > 1 else 0.0 for r in rows]
        ax.errorbar(counts, means, yerr=errors, fmt=style, label=label, capsize=3)
    ax.set_xlabel("number of binding modalities")
    ax.set_ylabel("rgb → depth CE (nats/token)")
    ax.set_xticks(counts)
    ax.legend(frameon=False)
    ax.set_title("Zero-shot rgb → depth vs binding modalities")
    save_figure(fig, folder / "binding.png")
    return {"CE vs binding modalities": "binding.png"}


def summary(results: Results) -> dict:
    return {"binding": binding_rows(results)}
