"""The report's section on chained generation: each zero-shot model reaching its withheld modality through
a binder (4M's chained generation), against the direct translation, in the destination's decoded metric."""

from __future__ import annotations

from pairless.experiments.report.markdown import arrow, number, table
from pairless.experiments.report.rows import chained_lines, chained_rows
from pairless.experiments.results import Results


def markdown(results: Results) -> list[str]:
    rows = chained_rows(results)
    if not rows:
        return []
    return ["## Chained through a binding modality", "",
            "Each zero-shot model also reaches its withheld modality through a binder it saw with both "
            "ends (4M's chained generation: the binder is generated first, then the destination from "
            "the source and the generated binder), scored on the same samples and ground truth as the "
            "direct translation. No-input CE is in the Table I section above.", "",
            table(["Task", "via", "zero-shot run", "metric", "direct 0-shot", "chained 0-shot",
                   "many-shot (direct)"],
                  [[arrow(r["direction"]), r["via"], r["run"], f"{r['metric']} ({r['better']} is better)",
                    number(r["direct"]), number(r["chained"]), number(r["many_shot"])] for r in rows]), "",
            *[f"- {line}" for line in chained_lines(rows)], ""]
