"""docs/ml4m.md's worked path (ml-4m-tokenized data -> token shards; a released checkpoint -> import ->
zero-shot evaluation -> an added modality -> export) runs as written, on the ml-4m fixture standing in for the
released file and an ml-4m-layout folder written here standing in for the data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from ml4m_layout_helpers import sample_values, write_layout, write_vocabulary
from safetensors.torch import load_file, save_file

from pairless.model.ml4m import read_checkpoint
from pairless.utils.storage import read_json

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "ml4m"


def _worked_path() -> str:
    text = (ROOT / "docs" / "ml4m.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.*?)```", text, re.S)[0]


def _released_stand_in(path: Path) -> Path:
    """The 4M-7 fixture with a raw-pixel input rgb@224, as the released 4M-7 files have."""
    tensors, config = read_checkpoint(FIXTURE / "fm7.safetensors")
    dim = config["dim"]
    tensors.update({"encoder_embeddings.rgb@224.proj.weight": torch.zeros(dim, 3 * 16 * 16),
                    "encoder_embeddings.rgb@224.mod_emb": torch.zeros(1, 1, dim),
                    "encoder_embeddings.rgb@224.pos_emb": torch.zeros(1, 16, dim)})
    config["domains_in"] = ["rgb@224", *config["domains_in"]]
    save_file(tensors, str(path), metadata={key: str(value) for key, value in config.items()})
    return path


def _ml4m_data(folder: Path) -> None:
    """cc12m-tokens/{train,val} in ml-4m's layout at the fixture's grids, with semseg (the modality the path
    adds), and an ml-4m-like WordPiece file beside it (the fixture's caption vocabulary: 256)."""
    grids = {"tok_rgb@224": (4, 4, 64), "tok_depth@224": (4, 4, 48), "tok_normal@224": (2, 4, 40),
             "tok_semseg@224": (4, 4, 20)}
    for split, count, seed in (("train", 48, 0), ("val", 12, 1)):
        values = sample_values(count, grids, seed)
        write_layout(folder / "cc12m-tokens" / split, values, "tars", shard_samples=16)
    write_vocabulary(folder / "text_tokenizer_4m_wordpiece_30k.json")


def test_worked_path_runs_as_written(tmp_path):
    block = _worked_path()
    assert "--skip rgb@224" in block and "add-modality" in block and "export-4m" in block
    assert "pairless import-4m-data" in block
    _released_stand_in(tmp_path / "4M-7_B_CC12M.safetensors")
    _ml4m_data(tmp_path)
    mapping = f"--modalities {FIXTURE / 'modalities.json'}"
    lines = []
    for line in block.splitlines():
        if line.startswith(("pairless import-4m", "pairless export-4m")):  # import-4m-data too
            line += f" {mapping}"
        if line.startswith("pairless add-modality"):  # budgets of the fixture's 16-token modalities
            line += (" --set masking.input_budget=8 --set masking.target_budget=8 --set total_tokens=4000"
                     " --set batch_size=8 --set precision=fp32")
        lines.append(line)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(lines)], cwd=tmp_path,
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    evaluated = read_json(tmp_path / "runs" / "4m7-b" / "eval.json")
    assert {"rgb:depth", "rgb:caption", "depth:normal"} <= set(evaluated)
    assert all(np.isfinite(row["ce"]) and row["num_samples"] == 12 for row in evaluated.values())
    extended = read_json(tmp_path / "runs" / "4m7-b+semseg" / "eval.json")
    assert {"semseg:depth", "rgb:semseg"} <= set(extended)
    record = read_json(tmp_path / "runs" / "4m7-b+semseg" / "COMPLETE.json")
    assert record["frozen_hash"] == record["base_hash"]  # the released weights stayed as they were
    exported = load_file(str(tmp_path / "4m7-b+semseg.safetensors"))
    assert "decoder_embeddings.tok_semseg@224.to_logits.weight" in exported
    assert "encoder_embeddings.rgb@224.proj.weight" not in exported  # skipped on import, not invented
