"""A recipe's report (``pairless report RESULTS/RECIPE``): report.md, results.csv, summary.json and figures.

The report is a measurement, not an advertisement: each of the study's
findings is checked against our numbers and stated as holding or not, with
the numbers. The study's published values are shown beside ours, labelled
as theirs (they come from 4M-B on pseudo-labelled CC12M, not our world, so
only orderings and trends are comparable, not magnitudes). The rows and
sentences come from :mod:`pairless.experiments.tables`; this module renders
and writes them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from statistics import mean, stdev

from pairless.experiments.quality import learned_cell, quality_notes, quality_rows, recovered_notes
from pairless.experiments.tables import (
    LEARNED_RATIO,
    WORSE_RATIO,
    binding_rows,
    chained_lines,
    chained_rows,
    findings,
    mean_sd,
    region_rows,
    translation_rows,
)
from pairless.utils.storage import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    flatten,
    read_json,
)

# The study's Table I (cross-entropy, nats): direction -> (0-shot, many-shot, 4M-L).
PAPER_TABLE_I = {
    "rgb:normal": (8.211, 7.026, 6.637), "rgb:depth": (8.284, 7.021, 6.574),
    "rgb:semseg": (6.807, 6.347, 5.997), "normal:rgb": (10.327, 10.400, 10.333),
    "depth:rgb": (12.276, 10.666, 10.575), "semseg:rgb": (11.917, 11.785, 11.446),
}
# The study's Table II: number of binding modalities -> zero-shot rgb -> depth CE.
PAPER_TABLE_II = {0: 14.128, 1: 11.810, 3: 9.209, 5: 8.265}


def region_markdown(results: dict) -> list[str]:
    rows = region_rows(results)
    if not rows:
        return []
    samples = max(r["num_samples"] for r in rows)
    parts = ["## What is predictable: object tokens vs background, content words vs template", "",
             "The CE ratio (conditional / no input) over two groups of destination tokens. Images: tokens "
             "whose patch holds an object (any pixel not sky or floor, from the sample's decoded semseg "
             "tokens) and the rest; the checkered floor and the sky carry little about the other modalities. "
             "Captions: the colour, shape, size and number words, which an image can tell, and the "
             f"template words around them. {samples} held-out samples.",
             "",
             _table(["Task", "run", "role", "focus group", "focus: CE ratio", "rest: CE ratio",
                     "focus share"],
                    [[r["direction"].replace(":", " → "), r["run"], r["role"], r["focus"],
                      f"{r['focus_ratio']:.2f}", f"{r['rest_ratio']:.2f}", f"{r['focus_fraction']:.2f}"]
                     for r in rows]), ""]
    return parts


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def render_markdown(results: dict, figures: dict[str, str]) -> str:
    config = results["config"]
    parts = [f"# pairless report: {results['recipe']} (preset {results['preset']})", "",
             f"Run on {results.get('date', '?')}, {results.get('machine', '?')}. Seeds: "
             f"{config.get('seeds', 1)}. "
             f"Cross-entropies are mean nats per target token over at most {config['eval_samples']} held-out "
             "samples per direction (those that have both modalities; the tables give the count); ± is the "
             "standard deviation over seeds.", ""]
    from pairless.experiments import own_data_report  # it imports this module's helpers

    parts += own_data_report.inspection_markdown(results)
    rows = translation_rows(results)
    if rows:
        parts += ["## Translation cross-entropy (the study's Table I layout)", "",
                  "*recovered* = (CE no input − CE zero-shot) / (CE no input − CE many-shot). "
                  "The study's numbers (4M-B on CC12M, theirs, not ours) are given for reference.", ""]
        table = []
        on_world = not results["config"].get("data")  # the study's numbers are for its own world only
        outside = results.get("references") or {}
        for r in rows:
            paper = PAPER_TABLE_I.get(r["direction"]) if on_world else None
            columns = [_num(entry["evals"].get(r["direction"], {}).get("ce")) for entry in outside.values()]
            table.append([r["direction"].replace(":", " → "), _samples(results, r["direction"]),
                          mean_sd(r["zero_shot"]),
                          mean_sd(r["many_shot"]), mean_sd(r["larger"]), *columns,
                          mean_sd(r["unconditional"]), mean_sd(r["recovered"], 2),
                          " / ".join(f"{v:.2f}" for v in paper) if paper else "–"])
        parts += [_table(["Task", "samples", "0-shot", "Many-shot", "Larger",
                          *[f"{name} (outside model)" for name in outside], "No input", "Recovered",
                          "Study 0-shot / many / 4M-L"], table), ""]
        if outside:
            parts += [f"*{name} (outside model)*: {entry['path']}, not trained by this recipe, evaluated on "
                      "the same held-out samples with the same tokenizers (the study's 4M-L column)."
                      for name, entry in outside.items()] + [""]
    quality = quality_rows(results)
    if quality:
        parts += ["## Quality bar: did each model learn each direction?", "",
                  f"*ratio* = the run's CE / its own no-input CE (1.00 = the input is ignored; above "
                  f"{LEARNED_RATIO:.2f} = not learned; above {WORSE_RATIO:.2f} = worse than no input). The "
                  "decoded metric "
                  "scores generations against the tokenized ground truth, beside the same run's generation "
                  "from no input (a learned direction beats it) and the tokenizer's own encode → decode "
                  "score (the ceiling). *samples*: held-out samples the CE is measured on.", ""]
        table = [[r["direction"].replace(":", " → "), r["run"], r["role"], _count(r["samples"]),
                  f"{r['ratio']:.2f}", learned_cell(r),
                  f"{r['metric']} ({r['better']} is better)" if r["metric"] else "–", _num(r["value"]),
                  _num(r["no_input"]), _num(r["ceiling"])] for r in quality]
        parts += [_table(["Task", "run", "role", "samples", "CE ratio", "learned", "decoded metric", "value",
                          "no input", "tokenizer ceiling"], table), ""]
        notes = recovered_notes(results) + quality_notes(results, quality)
        parts += [f"- {note}" for note in notes] + ([""] if notes else [])
    brows = binding_rows(results)
    if brows:
        parts += ["## Binding modalities (the study's Table II, with matched many-shot controls)", "",
                  "Each binding set trains a zero-shot model (rgb and depth never together) and a *matched* "
                  "many-shot model on the same restricted universe, so that the recovered fraction separates "
                  "binding from how often rgb and depth are seen.", ""]
        table = [[str(r["binding"]), r["direction"].replace(":", " → "), mean_sd(r["zero_shot"]),
                  mean_sd(r["matched_many_shot"]), mean_sd(r["unconditional"]), mean_sd(r["recovered"], 2),
                  _tokens(r["rgb_tokens"]), _tokens(r["depth_tokens"]),
                  f"{PAPER_TABLE_II[r['binding']]:.2f}"
                  if r["direction"] == "rgb:depth" and r["binding"] in PAPER_TABLE_II else "–"]
                 for r in brows]
        parts += [_table(["# binding", "Task", "0-shot", "Matched many-shot", "No input", "Recovered",
                          "rgb tokens seen", "depth tokens seen", "Study 0-shot"], table), ""]
    crows = chained_rows(results)
    if crows:
        parts += ["## Chained through a binding modality", "",
                  "Each zero-shot model also reaches its withheld modality through a binder it saw with both "
                  "ends (4M's chained generation: the binder is generated first, then the destination from "
                  "the source and the generated binder), scored on the same samples and ground truth as the "
                  "direct translation. No-input CE is in the Table I section above.", "",
                  _table(["Task", "via", "zero-shot run", "metric", "direct 0-shot", "chained 0-shot",
                          "many-shot (direct)"],
                         [[r["direction"].replace(":", " → "), r["via"], r["run"],
                           f"{r['metric']} ({r['better']} is better)", _num(r["direct"]), _num(r["chained"]),
                           _num(r["many_shot"])] for r in crows]), ""]
        parts += [f"- {line}" for line in chained_lines(crows)] + [""]
    parts += region_markdown(results)
    from pairless.experiments import (  # they import this module
        adapter_report,
        binding_strength,
        pairs_curve,
        probes_report,
        transitive_report,
    )

    parts += binding_strength.markdown(results)
    parts += adapter_report.markdown(results)
    parts += pairs_curve.markdown(results)
    parts += transitive_report.markdown(results)
    parts += probes_report.markdown(results)
    parts += own_data_report.unpaired_markdown(results)
    lines = findings(results) if not results["config"].get("data") else []
    if lines:
        parts += ["## Do the study's findings hold here?", ""] + [f"- {line}" for line in lines] + [""]
    decoded = results.get("generation", {})
    if decoded.get("metrics"):
        parts += ["## Decoded generations", "",
                  "Generations decoded by the tokenizers and scored in each modality's own terms "
                  "(schedules from the study's Table III).", ""]
        for direction, entry in decoded["metrics"].items():
            per_run = {run: metrics for run, metrics in entry.items()
                       if isinstance(metrics, dict) and not run.startswith("_")}
            # the same runs generating with no input, on the same samples: what a translation has to beat
            no_input = entry.get("_no_input") or {}
            per_run.update({f"{run}, no input": metrics for run, metrics in no_input.items()})
            names = sorted({key for metrics in per_run.values() for key in metrics})
            table = [[run] + [_num(metrics.get(key)) for key in names] for run, metrics in per_run.items()]
            count = entry.get("_num_samples")
            samples = f" ({count} held-out samples)" if count is not None else ""
            parts += [f"**{direction.replace(':', ' → ')}**{samples}", "", _table(["run"] + names, table), ""]
    ceiling = results.get("tokenizer_ceiling") or {}
    if ceiling:
        parts += ["## Tokenizer ceiling (encode → decode on the val split)", "",
                  _table(["metric", "value"], [[k, _num(v)] for k, v in sorted(flatten(ceiling).items())
                                                  if isinstance(v, int | float)]), ""]
    if figures:
        parts += ["## Figures", ""] + [f"![{name}]({path})" for name, path in figures.items()] + [""]
    timings = results.get("timings_seconds", {})
    if timings:
        parts += ["## Time per stage", "",
                  _table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in timings.items()]), ""]
    return "\n".join(parts)


def _tokens(value) -> str:
    return "–" if value is None else f"{value / 1e6:.2f}M"


def _samples(results: dict, direction: str) -> str:
    """The held-out samples a direction's CE rests on, over the runs evaluated on it (a count or a range)."""
    counts = {entry[direction]["num_samples"] for entry in results["evals"].values()
              if direction in entry and "num_samples" in entry[direction]}
    if not counts:
        return "–"
    return str(min(counts)) if len(counts) == 1 else f"{min(counts)}–{max(counts)}"


def _count(value) -> str:
    return "–" if value is None else str(int(value))


def _num(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def plot_binding(results: dict, out: Path) -> bool:
    """CE against the number of binding modalities (zero-shot, matched many-shot, no input)."""
    rows = [r for r in binding_rows(results) if r["direction"] == "rgb:depth" and r["zero_shot"]]
    if len(rows) < 2:
        return False
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
    save_figure(fig, out)
    return True


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use (fast start-up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path) -> None:
    """Lay out, render to PNG in memory, write atomically (a killed report never leaves half a PNG), close."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())


def write_csv(results: dict, out: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "role", "label", "direction", "ce", "ce_unconditional", "num_samples",
                     "num_tokens"])
    for name, per_direction in results["evals"].items():
        info = results["runs"][name]
        for direction, entry in per_direction.items():
            writer.writerow([name, info["role"], info.get("label", ""), direction, entry.get("ce"),
                             entry.get("ce_unconditional"), entry.get("num_samples"),
                             entry.get("num_tokens")])
    atomic_write_text(out, buffer.getvalue())


def write_report(recipe_dir: Path) -> Path:
    """Write report.md, results.csv, summary.json and the binding plot for one recipe folder."""
    recipe_dir = Path(recipe_dir)
    results = read_json(recipe_dir / "results.json")
    figures = {}
    for name, path in (results.get("generation", {}).get("figures") or {}).items():
        target = Path(path)
        inside = target.is_relative_to(recipe_dir)
        figures[name] = str(target.relative_to(recipe_dir)) if inside else str(target)
    if plot_binding(results, recipe_dir / "binding.png"):
        figures["CE vs binding modalities"] = "binding.png"
    from pairless.experiments import (  # they import this module
        adapter_report,
        binding_strength,
        pairs_curve,
        probes_report,
        transitive_report,
    )

    if adapter_report.plot(results, recipe_dir / "adapter.png"):
        figures["recovered fraction through the adapter"] = "adapter.png"
    if transitive_report.plot(results, recipe_dir / "transitive.png"):
        figures["CE: pseudo-pairs against the equal-budget control"] = "transitive.png"
    if binding_strength.plot(results, recipe_dir / "binding_strength.png"):
        figures["CE by binding modality (binding strength)"] = "binding_strength.png"
    if pairs_curve.plot(results, recipe_dir / "pairs_curve.png"):
        figures["CE vs paired samples (pairs curve)"] = "pairs_curve.png"
    if probes_report.plot_training(results, recipe_dir / "probes_training.png"):
        figures["recovered fraction and alignment along training"] = "probes_training.png"
    if probes_report.plot(results, recipe_dir / "probes.png"):
        figures["recovered fraction vs alignment probes"] = "probes.png"
    write_csv(results, recipe_dir / "results.csv")
    summary = {"translation": translation_rows(results), "binding": binding_rows(results),
               "quality": quality_rows(results), "findings": findings(results),
               "pairs_curve": pairs_curve.summary(results), "probes": probes_report.summary(results),
               "regions": region_rows(results), "binding_strength": binding_strength.summary(results),
               "transitive": transitive_report.summary(results), "adapter": adapter_report.summary(results)}
    atomic_write_json(recipe_dir / "summary.json", summary)
    report = recipe_dir / "report.md"
    atomic_write_text(report, render_markdown(results, figures))
    return report
