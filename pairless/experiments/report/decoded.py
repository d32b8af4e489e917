"""The report's section on decoded generations: each figure's generations decoded by the tokenizers and
scored in the destination's own metrics, per run, beside the same runs generating from no input."""

from __future__ import annotations

from pairless.experiments.report.markdown import arrow, number, table
from pairless.experiments.results import Results


def markdown(results: Results) -> list[str]:
    if not results.generation.metrics:
        return []
    parts = ["## Decoded generations", "",
             "Generations decoded by the tokenizers and scored in each modality's own terms "
             "(schedules from the study's Table III).", ""]
    for direction, entry in results.generation.metrics.items():
        per_run = {run: metrics for run, metrics in entry.items()
                   if isinstance(metrics, dict) and not run.startswith("_")}
        # the same runs generating with no input, on the same samples: what a translation has to beat
        no_input = entry.get("_no_input") or {}
        per_run.update({f"{run}, no input": metrics for run, metrics in no_input.items()})
        names = sorted({key for metrics in per_run.values() for key in metrics})
        cells = [[run] + [number(metrics.get(key)) for key in names] for run, metrics in per_run.items()]
        samples = entry.get("_num_samples")
        held_out = f" ({samples} held-out samples)" if samples is not None else ""
        parts += [f"**{arrow(direction)}**{held_out}", "", table(["run"] + names, cells), ""]
    return parts
