"""A save killed part-way: its staging folder is removed, with a line saying so, when the run starts again.

The fault test trains a model large enough (a 6+6-layer base model, 1.1 GB per checkpoint) that writing a
checkpoint takes seconds, SIGKILLs the process while the second checkpoint's staging folder is being
written, and resumes from the first: the leftover is removed with a printed line and the resumed run ends
with the same losses as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import make_shards

from pairless.utils.storage import remove_interrupted_writes, staged_dir

LARGE = ["--set", "model.dim=768", "--set", "model.heads=12", "--set", "model.encoder_layers=6",
         "--set", "model.decoder_layers=6", "--batch-size", "8", "--total-tokens", str(8 * 24 * 5),
         "--set", "masking.input_budget=12", "--set", "masking.target_budget=12",
         "--set", "checkpoint_every=2", "--set", "keep_checkpoints=1", "--set", "log_every=1",
         "--set", "num_threads=1",
         "--set", "device=cpu", "--set", "precision=fp32"]


def _train(shards: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pairless", "train", "--shards", str(shards), "--out",
                             str(out), *LARGE, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TQDM_DISABLE": "1"})


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def test_interrupted_writes_are_removed_and_a_live_writer_kept(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    staging = checkpoints / ".step-00000003.staging-abc"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"x" * 1000)
    (checkpoints / ".state.safetensors.123.tmp").write_bytes(b"y" * 10)
    (checkpoints / "step-00000002").mkdir()
    removed = remove_interrupted_writes(checkpoints)
    assert sorted((path.name, size) for path, size in removed) == [(".state.safetensors.123.tmp", 10),
                                                                   (".step-00000003.staging-abc", 1000)]
    assert [path.name for path in checkpoints.iterdir()] == ["step-00000002"]
    with staged_dir(checkpoints / "step-00000004"):  # a live writer's staging folder is flock-ed: kept
        assert remove_interrupted_writes(checkpoints) == []
        assert len(list(checkpoints.glob(".step-00000004.staging-*"))) == 1


@pytest.mark.slow
def test_kill_during_a_large_save_then_resume(tmp_path):
    shards = make_shards(tmp_path / "shards")
    reference, run = tmp_path / "reference", tmp_path / "run"
    done = _train(shards, reference)
    assert done.wait(timeout=600) == 0, done.stderr.read()[-2000:]
    shutil.rmtree(reference / "checkpoints")  # only its losses are compared: 1.1 GB less on the disk

    process = _train(shards, run)
    deadline = time.monotonic() + 300
    staged = []
    while not staged:  # the second checkpoint's staging folder, once its weights are being written
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint save seen"
        staged = [path for path in (run / "checkpoints").glob(".step-00000004.staging-*/*")
                  if path.stat().st_size > 0]
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    leftovers = list((run / "checkpoints").glob(".step-*"))
    assert leftovers, "the kill came after the save finished: the save was too fast to interrupt"
    assert [path.name for path in (run / "checkpoints").iterdir() if not path.name.startswith(".")] == \
        ["step-00000002"]  # the resumed run continues from the checkpoint before

    resumed = _train(shards, run, "--resume")
    output, errors = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, errors[-2000:]
    assert f"pairless train: removed {leftovers[0]}" in output
    assert "left by a save that was interrupted" in output
    assert not list((run / "checkpoints").glob(".*"))
    assert (run / "COMPLETE.json").is_file()
    assert _losses(run) == _losses(reference)
