"""Numerics: a non-finite gradient stops training naming the step, the last good checkpoint survives,
and resuming from it (once the cause is gone) ends exactly where an uninterrupted run ends.

The NaN-loss case (step, batch and modality named) is in test_train.py;
this file covers the gradient side, the command-line exit, and recovery.
"""

from __future__ import annotations

import json

import pytest
from train_helpers import make_shards, tiny_config_data

from pairless import model as model_module
from pairless.config import validate
from pairless.training.checkpoint import latest_checkpoint
from pairless.training.config import TrainConfig
from pairless.training.train import TrainingDiverged, train
from pairless.utils.storage import is_complete
from pairless.utils.tensor_files import canonical_safetensors

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("numerics") / "shards")


def _config(shards, out, **changes) -> TrainConfig:
    return validate(TrainConfig, tiny_config_data(shards, out, checkpoint_every=2, **changes))


def _poison_gradient_at(monkeypatch, call: int) -> None:
    """On the ``call``-th forward pass, make one weight's gradient infinite (the loss stays finite)."""
    original = model_module.FourM.forward
    calls = {"count": 0}

    def poisoned(self, batch, **loss_settings):
        calls["count"] += 1
        if calls["count"] == call:
            weight = next(self.parameters())
            handle = {}

            def to_infinity(gradient):
                handle["hook"].remove()
                return gradient * float("inf")

            handle["hook"] = weight.register_hook(to_infinity)
        return original(self, batch, **loss_settings)

    monkeypatch.setattr(model_module.FourM, "forward", poisoned)


def test_infinite_gradient_stops_naming_the_step_and_keeps_the_last_good_checkpoint(shards, tmp_path,
                                                                                    monkeypatch):
    run = tmp_path / "run"
    _poison_gradient_at(monkeypatch, call=6)
    with pytest.raises(TrainingDiverged,
                       match=r"step 5: gradient norm is (inf|nan) \(losses were finite\)") as caught:
        train(_config(shards, run))
    assert "batch sample indices [" in str(caught.value)
    assert "the last good checkpoint is" in str(caught.value) and "step-00000004" in str(caught.value)
    assert latest_checkpoint(run / "checkpoints").name == "step-00000004" and not is_complete(run)
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged] == [1, 2, 3, 4, 5]
    assert all(entry["grad_norm"] > 0 and entry["grad_norm"] < float("inf") for entry in logged)

    # With the cause gone, --resume continues from step 4 and ends bit-identical to a clean run.
    monkeypatch.undo()
    train(_config(shards, run), resume=True)
    clean = tmp_path / "clean"
    train(_config(shards, clean))
    assert is_complete(run) and is_complete(clean)
    assert canonical_safetensors((run / "model.safetensors").read_bytes()) == \
        canonical_safetensors((clean / "model.safetensors").read_bytes())
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[0] == 1  # one run's log, no repeated steps


def test_command_line_exit_names_the_step(shards, tmp_path, monkeypatch, capsys):
    from pairless.commands.train import main

    _poison_gradient_at(monkeypatch, call=3)
    data = tiny_config_data(shards, tmp_path / "run")
    argv = ["--shards", str(shards), "--out", str(tmp_path / "run"), "--withhold", "rgb:depth",
            "--total-tokens", str(data["total_tokens"]), "--batch-size", "16",
            "--set", "model.dim=32", "--set", "model.heads=2", "--set", "model.encoder_layers=1",
            "--set", "model.decoder_layers=1", "--set", "masking.input_budget=12",
            "--set", "masking.target_budget=12", "--set", "precision=fp32", "--set", "device=cpu"]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert "step 2: gradient norm is" in error and "no checkpoint was written yet" in error
