"""The report's verdicts: each of the study's findings checked against our numbers, stated as holding or
not (on the built-in world only: a user's data has no published numbers to check)."""

from __future__ import annotations

from pairless.experiments.report.rows import findings
from pairless.experiments.results import Results


def markdown(results: Results) -> list[str]:
    lines = findings(results) if not results.data else []
    if not lines:
        return []
    return ["## Do the study's findings hold here?", "", *[f"- {line}" for line in lines], ""]


def summary(results: Results) -> dict:
    return {"findings": findings(results)}
