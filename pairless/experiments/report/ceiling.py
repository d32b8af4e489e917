"""The report's tokenizer ceiling: each tokenizer's own encode -> decode score on the val split, the best a
generation decoded through it can reach."""

from __future__ import annotations

from pairless.experiments.report.markdown import number, table
from pairless.experiments.results import Results
from pairless.utils.storage import flatten


def markdown(results: Results) -> list[str]:
    ceiling = results.tokenizer_ceiling
    if not ceiling:
        return []
    return ["## Tokenizer ceiling (encode → decode on the val split)", "",
            table(["metric", "value"], [[key, number(value)]
                                        for key, value in sorted(flatten(ceiling).items())
                                        if isinstance(value, int | float)]), ""]
