"""The report's Table I section: translation cross-entropy per direction (zero-shot, many-shot, larger, any
outside model, no input) and the recovered fraction, beside the study's published numbers."""

from __future__ import annotations

from pairless.experiments.report.markdown import arrow, number, table
from pairless.experiments.report.rows import mean_sd, translation_rows
from pairless.experiments.results import Evaluation, Results

# The study's Table I (cross-entropy, nats): direction -> (0-shot, many-shot, 4M-L).
PAPER_TABLE_I = {
    "rgb:normal": (8.211, 7.026, 6.637), "rgb:depth": (8.284, 7.021, 6.574),
    "rgb:semseg": (6.807, 6.347, 5.997), "normal:rgb": (10.327, 10.400, 10.333),
    "depth:rgb": (12.276, 10.666, 10.575), "semseg:rgb": (11.917, 11.785, 11.446),
}


def samples_cell(results: Results, direction: str) -> str:
    """The held-out samples a direction's CE rests on, over the runs evaluated on it (a count or a range)."""
    counts = {entry[direction].num_samples for entry in results.evals.values() if direction in entry}
    if not counts:
        return "–"
    return str(min(counts)) if len(counts) == 1 else f"{min(counts)}–{max(counts)}"


def _ce(entry: Evaluation | None) -> float | None:
    return None if entry is None else entry.ce


def markdown(results: Results) -> list[str]:
    rows = translation_rows(results)
    if not rows:
        return []
    parts = ["## Translation cross-entropy (the study's Table I layout)", "",
             "*recovered* = (CE no input − CE zero-shot) / (CE no input − CE many-shot). "
             "The study's numbers (4M-B on CC12M, theirs, not ours) are given for reference.", ""]
    on_world = not results.data  # the study's numbers are for its own world only
    outside = results.references
    cells = []
    for r in rows:
        paper = PAPER_TABLE_I.get(r["direction"]) if on_world else None
        columns = [number(_ce(entry.evals.get(r["direction"]))) for entry in outside.values()]
        cells.append([arrow(r["direction"]), samples_cell(results, r["direction"]), mean_sd(r["zero_shot"]),
                      mean_sd(r["many_shot"]), mean_sd(r["larger"]), *columns, mean_sd(r["unconditional"]),
                      mean_sd(r["recovered"], 2), " / ".join(f"{v:.2f}" for v in paper) if paper else "–"])
    parts += [table(["Task", "samples", "0-shot", "Many-shot", "Larger",
                     *[f"{name} (outside model)" for name in outside], "No input", "Recovered",
                     "Study 0-shot / many / 4M-L"], cells), ""]
    if outside:
        parts += [f"*{name} (outside model)*: {entry.path}, not trained by this recipe, evaluated on "
                  "the same held-out samples with the same tokenizers (the study's 4M-L column)."
                  for name, entry in outside.items()] + [""]
    return parts


def summary(results: Results) -> dict:
    return {"translation": translation_rows(results)}
