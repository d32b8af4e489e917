"""The micro demo's results folder (two runs: zero-shot on rgb:depth and many-shot), made once per worker."""

import pytest

from pairless.experiments.recipes import get_recipe
from pairless.experiments.runner import run_experiment


@pytest.fixture(scope="session")
def demo_results(tmp_path_factory):
    """``results/demo`` of the micro demo: a report, figures, two trained runs, shards and tokenizers."""
    return run_experiment(get_recipe("demo", "micro"), tmp_path_factory.mktemp("explore-results"))
