"""``pairless run RECIPE --reference NAME=RUN``: an outside model scored on the recipe's samples, shown as a
column of its own; refused when its tokenizers are not the recipe's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pairless.commands.run import main as run_main
from pairless.experiments.recipes import get_recipe
from pairless.experiments.runner import Plan, run_experiment
from pairless.training.imported import import_checkpoint

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ml4m"


def test_reference_column_and_refusal(tmp_path, capsys):
    config = get_recipe("demo", "micro")
    folder = run_experiment(config, tmp_path)
    outside = Plan(config, tmp_path).runs["zs-rgb-depth"]  # a run with the recipe's own tokenizers
    run_experiment(config, tmp_path, references={"outside": outside})
    results = json.loads((folder / "results.json").read_text())
    entry = results["references"]["outside"]
    assert entry["outside"] is True and entry["path"] == str(outside)
    for direction, row in entry["evals"].items():  # the same model on the same samples: the same numbers
        assert row["ce"] == pytest.approx(results["evals"]["zs-rgb-depth"][direction]["ce"])
    report = (folder / "report.md").read_text()
    assert "| outside (outside model) |" in report and "*outside (outside model)*" in report
    # an imported ml-4m model was tokenized with ml-4m's tokenizers, not the recipe's: refused by name
    imported = tmp_path / "imported"
    import_checkpoint(FIXTURE / "fm7.safetensors", imported, FIXTURE / "modalities.json")
    capsys.readouterr()
    code = run_main(["demo", "--preset", "micro", "--out", str(tmp_path), "--reference", f"4M={imported}"])
    error = capsys.readouterr().err
    assert code == 2 and "--reference 4M=" in error and "its tokenizers are unknown" in error
    with pytest.raises(SystemExit):
        run_main(["demo", "--preset", "micro", "--reference", "no-equals-sign"])
