"""docs/data.md's "Bring your own data" worked example runs as written (with a seconds-long preset)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from byod_helpers import DATA_PAGE, byod_blocks

from pairless.data import open_dataset
from pairless.data.shards import open_shards
from pairless.utils.storage import is_complete, read_json


def test_byod_example_runs(tmp_path):
    python_code, bash_code = byod_blocks()
    assert "--preset tiny" in bash_code and "--preset quick" in bash_code
    # Same commands, presets that train in seconds.
    bash_code = bash_code.replace("--preset tiny", "--preset micro --set steps=20 --set text.length_margin=8")
    bash_code = bash_code.replace("--preset quick", "--preset micro")
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([sys.executable, "-c", python_code], cwd=tmp_path, check=True, env=environment)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", bash_code], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=360)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Tokenizer reconstruction" in result.stdout
    # the commands after the recipe, on the declared modality, with no flag
    assert "rgb:thermal" in result.stdout and "wrote my_figures/depth-to-thermal" in result.stdout
    skipped = "depth:thermal: skipped, no sample of the 'val' split has all of ['depth', 'thermal']"
    assert skipped in result.stderr
    assert "no ground truth, nothing scored" in result.stderr and "foscttm" in result.stdout
    # the explorer's page built and its translation run by every model of the recipe, without a browser
    assert "**depth → thermal** on val sample 0" in result.stdout
    assert "| all-data | many-shot | **ZERO-SHOT**: never saw depth with thermal" in result.stdout
    assert "| zs-rgb-depth | zero-shot | **ZERO-SHOT**" in result.stdout and "not run:" not in result.stdout
    explored = sorted(path.name for path in (tmp_path / "my_figures" / "explore").iterdir())
    assert "output-0-ZERO-SHOT-all-data.png" in explored and "explore.md" in explored
    assert (tmp_path / "my_figures" / "depth-to-thermal" / "figure.png").is_file()
    assert not list(tmp_path.rglob("*.lock"))
    # the one-command recipe: the data inspected, the never-co-recorded pair answered honestly
    report = (tmp_path / "my_results" / "own-data" / "report.md").read_text()
    for heading in ("## Your data", "## Quality bar", "## Pairs never recorded together",
                    "### depth → thermal", "### thermal → depth", "**What would settle it.**"):
        assert heading in report, heading
    assert "there is no ground truth for the translation" in report and "| no input |" in report
    assert "depth → thermal → depth" in report  # the cycle
    results = read_json(tmp_path / "my_results" / "own-data" / "results.json")
    assert results["config"]["unpaired"] == ["depth:thermal"]
    assert results["config"]["bridges"]["depth:thermal"] == ["rgb", "caption"]
    directions = results["config"]["directions"]
    assert "rgb:depth" in directions and "depth:thermal" not in directions
    for direction in ("depth:thermal", "thermal:depth"):
        entry = results["unpaired"][direction]
        assert set(entry["bridges"]["rgb"]) >= {"direct", "chained", "no_input"}
        assert entry["cycle"]["shuffled"]
        assert (tmp_path / "my_results" / "own-data" / entry["figure"]).is_file()  # relative to report.md

    data, tokenizers, shards = tmp_path / "my_data", tmp_path / "my_tokenizers", tmp_path / "my_shards"
    assert is_complete(tokenizers) and is_complete(shards)
    report = read_json(tokenizers / "report.json")
    assert set(report) == {"rgb", "depth", "caption", "thermal"}  # thermal: declared in modalities.yaml
    assert report["caption"]["exact_round_trip"] == 1.0
    for split in ("train", "val"):
        dataset, tokens = open_dataset(data, split), open_shards(shards, split)
        for modality in ("rgb", "depth", "caption", "thermal"):
            np.testing.assert_array_equal(tokens.present[modality], dataset.column(modality)[1])
    train = open_shards(shards, "train")
    assert not train.present["depth"].all()
    assert not (train.present["depth"] & train.present["thermal"]).any()  # never recorded together


def test_the_error_examples_are_the_real_messages(tmp_path, monkeypatch):
    """docs/data.md quotes two errors of a declaration; both are produced here, in a folder named my_data."""
    from PIL import Image

    from pairless import modalities as registry
    from pairless.data.declared import read_declaration
    from pairless.data.validate import DataError

    page = " ".join(DATA_PAGE.read_text(encoding="utf-8").split())
    monkeypatch.chdir(tmp_path)
    root = Path("my_data")
    (root / "val" / "tissue").mkdir(parents=True)
    (root / "modalities.yaml").write_text("modalities:\n  thermal:\n    kind: image\n    colour: red\n")
    with pytest.raises(DataError) as wrong_key:
        read_declaration(root / "modalities.yaml")
    assert str(wrong_key.value) in page
    (root / "modalities.yaml").write_text("modalities:\n  tissue:\n    kind: image\n    extensions: [.png]\n"
                                          "    classes: [background, tumour, stroma, immune]\n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "val" / "tissue" / "s1.png")
    try:
        with pytest.raises(DataError) as contradicted:
            open_dataset(root, "val")
    finally:
        registry.unregister("tissue")
    assert str(contradicted.value) in page


def test_the_preset_table_of_the_docs_is_the_one_the_commands_print():
    from pairless.experiments.scale import preset_table

    assert preset_table() in DATA_PAGE.read_text(encoding="utf-8")
