"""docs/data.md's "Bring your own data" worked example runs as written (with a seconds-long preset)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from pairless.data import open_dataset
from pairless.data.shards import open_shards
from pairless.utils.storage import is_complete, read_json

DATA_PAGE = Path(__file__).resolve().parents[2] / "docs" / "data.md"


def byod_blocks() -> tuple[str, str]:
    """The python and bash fenced blocks of the docs/data.md section "## Bring your own data"."""
    text = DATA_PAGE.read_text(encoding="utf-8")
    section = text.split("## Bring your own data", 1)[1].split("\n## ", 1)[0]
    python_blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    bash_blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(python_blocks) == 1 and len(bash_blocks) == 1, "expected one python and one bash example"
    return python_blocks[0], bash_blocks[0]


def test_byod_example_runs(tmp_path):
    python_code, bash_code = byod_blocks()
    assert "--preset tiny" in bash_code
    # Same commands, a preset that trains in seconds.
    bash_code = bash_code.replace("--preset tiny", "--preset micro --set steps=20 --set text.length_margin=8")
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([sys.executable, "-c", python_code], cwd=tmp_path, check=True, env=environment)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", bash_code], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Tokenizer reconstruction" in result.stdout

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
