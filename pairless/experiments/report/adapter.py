"""The adapter part of the report: a modality added to a frozen model through a light adapter trained with
one anchor modality, translated to and from modalities it never saw it with.

Runs of the ``adapter`` recipe: the frozen base (role ``frozen-base``, trained without the modality), the
adapters (role ``adapter``, one per structure-term setting, per seed) and the many-shot model that had the
modality from the start (the reference). Recovered = (no input - adapter) / (no input - from the start).
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean

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

# CE differences below this (nats per token) are not called a change: one seed, 2,500 samples
NEGLIGIBLE = 0.01


def _adapters(results: Results) -> list[str]:
    """Base names of the adapter runs, in the recipe's order."""
    return [stage.name for stage in results.adapter_steps if stage.name in runs_by_base(results)]


def adapter_rows(results: Results) -> list[dict]:
    """Per direction: each adapter's CE and recovered fraction, the from-the-start model, no input."""
    adapters = _adapters(results)
    if not adapters:
        return []
    groups = runs_by_base(results)
    reference = role_run(results, "many-shot")
    stages = {stage.name: stage for stage in results.adapter_steps}
    rows = []
    for direction in results.directions:
        parsed = Direction.parse(direction)
        src, dst = parsed.source, parsed.destination
        first = stages[adapters[0]]
        anchor_pair = {first.anchor, first.modality} == {src, dst}
        start = ce_values(results, groups.get(reference, []), direction)
        unconditional = ce_values(results, groups[adapters[0]], direction, "ce_unconditional")
        ratio = ce_ratio(results, groups[reference], direction) if reference in groups else None
        learned = ratio is None or ratio <= LEARNED_RATIO
        per_adapter = {}
        for name in adapters:
            values = ce_values(results, groups[name], direction)
            recovered = [recovered_fraction(u, value, mean(start)) if learned and start else float("nan")
                         for u, value in zip(unconditional, values, strict=False)]
            per_adapter[name] = {"ce": values, "recovered": recovered}
        rows.append(dict(direction=direction, seen_by_adapter=anchor_pair, from_start=start,
                         unconditional=unconditional, from_start_ratio=ratio, adapters=per_adapter))
    return rows


def adapter_summary(results: Results) -> dict:
    rows = adapter_rows(results)
    if not rows:
        return {}
    info = {name: results.runs[name].model_dump(include={
                "trainable_parameters", "model_parameters", "trainable_fraction", "train_seconds",
                "structure_weight", "frozen_hash", "base_hash"})
            for names in runs_by_base(results).values() for name in names
            if results.runs[name].role == "adapter"}
    return {"rows": rows, "adapters": info}


def markdown(results: Results) -> list[str]:
    rows = adapter_rows(results)
    if not rows:
        return []
    adapters = _adapters(results)
    stages = {stage.name: stage for stage in results.adapter_steps}
    first = stages[adapters[0]]
    parts = ["## Adding a modality through an adapter", "",
             f"`{first.modality}` is added to a model trained without it ({first.base}), every base "
             f"weight frozen: only its token embedding, modality embedding and output head are trained, on "
             f"{first.anchor}–{first.modality} pairs alone. The directions below that do not involve "
             f"{first.anchor} are zero-shot for the adapter. Reference: a model trained with "
             f"{first.modality} from the start; recovered = fraction of the gap from no input to it.", ""]
    for name in adapters:
        info = results.runs[name]
        fraction, seconds = info.trainable_fraction, info.train_seconds
        same = info.frozen_hash == info.base_hash and info.base_hash
        parts.append(f"- {name} (structure term weight {stages[name].structure_weight:g}): "
                     f"{info.trainable_parameters or 0:,} trained parameters "
                     f"({fraction:.2%} of the model)" if fraction is not None else f"- {name}")
        if seconds is not None:
            parts[-1] += f", {info.tokens or stages[name].total_tokens:,} tokens in {seconds:.0f} s"
        parts[-1] += "; base weights bit-identical (hash)." if same else "."
    parts.append("")
    headers = ["Task", "seen by the adapter"] + [f"{name}: CE" for name in adapters] + [
        "from the start", "no input"] + [f"{name}: recovered" for name in adapters]
    cells = [[arrow(r["direction"]), "yes (anchor)" if r["seen_by_adapter"] else "no"]
             + [mean_sd(r["adapters"][name]["ce"]) for name in adapters]
             + [mean_sd(r["from_start"]), mean_sd(r["unconditional"])]
             + [mean_sd(r["adapters"][name]["recovered"], 2) for name in adapters] for r in rows]
    parts += [table(headers, cells), ""]
    unseen = [r for r in rows if not r["seen_by_adapter"]]
    if len(adapters) > 1 and unseen:
        plain, structured = adapters[0], adapters[1]
        differences = [mean(r["adapters"][structured]["ce"]) - mean(r["adapters"][plain]["ce"])
                       for r in unseen if r["adapters"][structured]["ce"] and r["adapters"][plain]["ce"]]
        if differences:
            if all(abs(d) < NEGLIGIBLE for d in differences):
                verdict = f"barely changes (all within {NEGLIGIBLE} nats)"
            elif all(d <= -NEGLIGIBLE for d in differences):
                verdict = "lowers"
            elif all(d >= NEGLIGIBLE for d in differences):
                verdict = "raises"
            else:
                verdict = "moves both ways"
            parts.append(f"- The structure-preserving term ({structured} against {plain}) {verdict} the CE "
                         f"of the directions the adapter never saw: "
                         + ", ".join(f"{arrow(r['direction'])} {d:+.3f}"
                                     for r, d in zip(unseen, differences, strict=False))
                         + " nats" + (" (one seed: no spread to judge it by)."
                                      if results.seeds == 1 else "."))
    return parts + unlearned_notes(rows, "from_start_ratio", "from-the-start") + [""]


def draw(results: Results, out: Path) -> bool:
    """Recovered fraction per direction for each adapter (the anchor directions shaded)."""
    rows = adapter_rows(results)
    if not rows:
        return False
    plt = pyplot()

    adapters = _adapters(results)
    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 3.4), dpi=120)
    width = 0.8 / len(adapters)
    for index, name in enumerate(adapters):
        heights = [mean(v) if (v := [x for x in r["adapters"][name]["recovered"] if math.isfinite(x)])
                   else float("nan") for r in rows]
        ax.bar([position + index * width for position in range(len(rows))], heights, width, label=name)
    for position, row in enumerate(rows):
        if row["seen_by_adapter"]:
            ax.axvspan(position - width / 2 - 0.05, position + (len(adapters) - 0.5) * width + 0.05,
                       color="grey", alpha=0.12, lw=0)
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(1, color="grey", lw=0.8, ls="--")
    ax.set_xticks([position + 0.4 - width / 2 for position in range(len(rows))],
                  [arrow(r["direction"]) for r in rows], fontsize=8)
    ax.set_ylabel("recovered (1 = from the start)")
    ax.set_title("Adapter: zero-shot through a frozen model (shaded: trained with the anchor)", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    save_figure(fig, out)
    return True

def plot(results: Results, folder: Path) -> dict[str, str]:
    """The figures this section draws into ``folder``: {title: file name}."""
    return plotted(draw, results, folder, "adapter.png", "recovered fraction through the adapter")


def summary(results: Results) -> dict:
    return {"adapter": adapter_summary(results)}
