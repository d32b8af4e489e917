"""A recipe's report (``pairless report RESULTS/RECIPE``): report.md, results.csv, summary.json and figures.

The report is a measurement, not an advertisement: each of the study's findings is checked against our
numbers and stated as holding or not, with the numbers. The study's published values are shown beside ours,
labelled as theirs (they come from 4M-B on pseudo-labelled CC12M, not our world, so only orderings and
trends are comparable, not magnitudes).

The report is a list of sections (:data:`SECTIONS`), one module each, in the order report.md shows them.
A section module has ``markdown(results) -> list[str]`` (its lines; empty when the recipe has nothing for
it; ``results`` is results.json validated, a :class:`~pairless.experiments.results.Results`, read through
its attributes) and may have ``plot(results, folder) -> {title: file}`` (figures it draws into the recipe
folder) and ``summary(results) -> {key: rows}`` (its entries of summary.json). Sections share the table
and figure helpers of :mod:`.markdown` and the row builders of :mod:`.rows`, never each other's private names.
docs/architecture.md ("Adding a report section") walks through adding one.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pairless.experiments.report import (
    adapter,
    binding,
    binding_strength,
    ceiling,
    chained,
    decoded,
    findings,
    inspection,
    pairs_curve,
    probes,
    quality,
    regions,
    transitive,
    translation,
    unpaired,
)
from pairless.experiments.report.markdown import table
from pairless.experiments.results import Results, read_results
from pairless.utils.storage import atomic_write_json, atomic_write_text

SECTIONS = [inspection, translation, quality, binding, chained, regions, binding_strength, adapter,
            pairs_curve, transitive, probes, unpaired, findings, decoded, ceiling]


def header(results: Results) -> list[str]:
    """The title, the line saying when, where and over what the numbers were measured, and the recipe's
    notes (what its plan said before it ran: e.g. a budget known to be too small)."""
    notes = [f"**Note**: {note[0].upper()}{note[1:]}." for note in results.notes]
    return [f"# pairless report: {results.recipe} (preset {results.preset})", "",
            f"Run on {results.date or '?'}, {results.machine or '?'}. Seeds: "
            f"{results.seeds}. "
            f"Cross-entropies are mean nats per target token over at most {results.eval_samples} held-out "
            "samples per direction (those that have both modalities; the tables give the count); ± is the "
            "standard deviation over seeds.", "", *notes, *([""] if notes else [])]


def footer(results: Results, figures: dict[str, str]) -> list[str]:
    """Every figure of the report (generation grids, then the sections' plots) and the time per stage."""
    parts = ["## Figures", ""] + [f"![{name}]({path})" for name, path in figures.items()] + [""] \
        if figures else []
    timings = results.timings_seconds
    if timings:
        parts += ["## Time per stage", "",
                  table(["stage", "seconds"], [[key, f"{value:.0f}"] for key, value in timings.items()]), ""]
    return parts


def render_markdown(results: Results, figures: dict[str, str], sections=None) -> str:
    """report.md: the header, every section in order (``sections``, default :data:`SECTIONS`), the figures
    and the time per stage."""
    parts = header(results)
    for section in SECTIONS if sections is None else sections:
        parts += section.markdown(results)
    return "\n".join(parts + footer(results, figures))


def generation_figures(results: Results, recipe_dir: Path) -> dict[str, str]:
    """The generation grids of results.json, as paths relative to the recipe folder where they lie in it."""
    figures = {}
    for name, path in results.generation.figures.items():
        target = Path(path)
        inside = target.is_relative_to(recipe_dir)
        figures[name] = str(target.relative_to(recipe_dir)) if inside else str(target)
    return figures


def write_csv(results: Results, out: Path) -> None:
    """results.csv: one row per (run, direction) evaluation."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "role", "label", "direction", "ce", "ce_unconditional", "num_samples",
                     "num_tokens"])
    for name, per_direction in results.evals.items():
        info = results.runs[name]
        for direction, entry in per_direction.items():
            writer.writerow([name, info.role, info.label, direction, entry.ce, entry.ce_unconditional,
                             entry.num_samples, entry.num_tokens])
    atomic_write_text(out, buffer.getvalue())


def write_report(recipe_dir: Path, sections=None) -> Path:
    """Write report.md, results.csv, summary.json and the sections' figures for one recipe folder
    (``sections``: default :data:`SECTIONS`)."""
    sections = SECTIONS if sections is None else sections
    recipe_dir = Path(recipe_dir)
    # validated against the schema (an error names the bad key); the sections read its attributes
    results = read_results(recipe_dir / "results.json")
    figures = generation_figures(results, recipe_dir)
    summary: dict = {}
    for section in sections:
        if hasattr(section, "plot"):
            figures.update(section.plot(results, recipe_dir))
        if hasattr(section, "summary"):
            summary.update(section.summary(results))
    write_csv(results, recipe_dir / "results.csv")
    atomic_write_json(recipe_dir / "summary.json", summary)
    report = recipe_dir / "report.md"
    atomic_write_text(report, render_markdown(results, figures, sections))
    return report
