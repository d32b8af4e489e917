"""The report's section on what is predictable: the CE ratio over object vs background tokens (images) and
content vs template words (captions), per run and direction."""

from __future__ import annotations

from pairless.experiments.report.markdown import arrow, table
from pairless.experiments.report.rows import region_rows
from pairless.experiments.results import Results


def markdown(results: Results) -> list[str]:
    rows = region_rows(results)
    if not rows:
        return []
    samples = max(r["num_samples"] for r in rows)
    return ["## What is predictable: object tokens vs background, content words vs template", "",
            "The CE ratio (conditional / no input) over two groups of destination tokens. Images: tokens "
            "whose patch holds an object (any pixel not sky or floor, from the sample's decoded semseg "
            "tokens) and the rest; the checkered floor and the sky carry little about the other modalities. "
            "Captions: the colour, shape, size and number words, which an image can tell, and the "
            f"template words around them. {samples} held-out samples.",
            "",
            table(["Task", "run", "role", "focus group", "focus: CE ratio", "rest: CE ratio", "focus share"],
                  [[arrow(r["direction"]), r["run"], r["role"], r["focus"], f"{r['focus_ratio']:.2f}",
                    f"{r['rest_ratio']:.2f}", f"{r['focus_fraction']:.2f}"] for r in rows]), ""]


def summary(results: Results) -> dict:
    return {"regions": region_rows(results)}
