"""The training loop: the loss falls, resume is exact, NaN stops cleanly, configs fail by field, runs are one-
shot."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch
from train_helpers import make_shards, tiny_config_data

from pairless import model as model_module
from pairless.commands.train import main
from pairless.config import ConfigError, validate
from pairless.training.checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    latest_checkpoint,
    list_checkpoints,
    read_state,
)
from pairless.training.config import TrainConfig
from pairless.training.run import TrainingDiverged, TrainingInterrupted
from pairless.training.train import learning_rate, train
from pairless.utils.storage import FolderLock, is_complete, read_json

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("train") / "shards")


def config(shards, out, **changes) -> TrainConfig:
    return validate(TrainConfig, tiny_config_data(shards, out, **changes))


def losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_loss_falls_and_run_folder_is_complete(shards, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["--shards", str(shards), "--out", str(run), "--withhold", "rgb:depth", "--total-tokens",
                 "11520",
                 "--batch-size", "16", "--set", "model.dim=32", "--set", "model.heads=2",
                 "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1",
                 "--set", "masking.input_budget=12", "--set", "masking.target_budget=12",
                 "--set", "base_lr=0.05",
                 "--set", "precision=fp32", "--set", "log_every=1", "--set", "checkpoint_every=10"])
    assert code == 0
    values = losses(run)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    # 16 samples x 24 tokens per step, fewer when a sample trains with no input at all
    assert 30 <= len(values) <= 33 and [entry["step"] for entry in log] == list(range(1, len(values) + 1))
    assert log[-1]["tokens"] >= 11520 > log[-2]["tokens"]
    first, last = sum(values[:3]) / 3, sum(values[-3:]) / 3
    assert last < first - 0.5, (first, last)
    entry = log[-1]
    assert set(entry["losses"]) <= {"rgb", "depth", "normal", "caption"}
    assert entry["tokens_per_second"] > 0 and entry["grad_norm"] > 0 and entry["lr"] > 0
    summary = read_json(run / "COMPLETE.json")
    assert summary["steps"] == len(values) and summary["final_loss"] == values[-1]
    assert summary["tokens"] == entry["tokens"] == sum(summary["tokens_per_modality"].values())
    saved = read_json(run / "config.json")
    assert saved["fragment"]["withheld"] == [["rgb", "depth"]] and saved["shards"] == str(shards)
    kept = [step for step, _ in list_checkpoints(run / "checkpoints")]
    assert len(kept) == 2 and kept[-1] == len(values) and kept[0] % 10 == 0  # keep_checkpoints=2
    assert list((run / "tb").iterdir())
    loaded = model_module.load_model(run / MODEL_FILE)
    assert loaded.config.dim == 32
    # A completed run is a no-op when asked again.
    marker = (run / "COMPLETE.json").read_bytes()
    capsys.readouterr()
    assert main(["--config", str(run / "config.json")]) == 0
    assert "already complete" in capsys.readouterr().out
    assert (run / "COMPLETE.json").read_bytes() == marker


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_reproduces_uninterrupted_run_exactly(shards, tmp_path, precision):
    reference = train(config(shards, tmp_path / "reference", precision=precision))
    interrupted_run = tmp_path / "interrupted"
    # Stop after 6 steps (checkpoints at 4 and at the stop), then lose the last one as if killed after step 6:
    # the resume starts at step 4 and must drop the log lines of steps 5-6 before writing them again.
    train(config(shards, interrupted_run, checkpoint_every=4, stop_after_steps=6, precision=precision))
    assert not is_complete(interrupted_run) and len(losses(interrupted_run)) == 6
    shutil.rmtree(interrupted_run / "checkpoints" / "step-00000006")
    with pytest.raises(FileExistsError, match="--resume"):
        train(config(shards, interrupted_run, checkpoint_every=4, precision=precision))
    # Batches prepared ahead in background threads (num_workers) are the same batches.
    train(config(shards, interrupted_run, checkpoint_every=4, precision=precision, num_workers=2),
          resume=True)
    assert is_complete(interrupted_run)
    assert len(losses(reference)) >= 12
    assert losses(interrupted_run) == losses(reference)  # bit for bit
    expected = model_module.load_model(reference / MODEL_FILE).state_dict()
    resumed = model_module.load_model(interrupted_run / MODEL_FILE).state_dict()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)


def test_resume_refuses_a_different_config_and_another_thread_count(shards, tmp_path, capsys):
    run = tmp_path / "run"
    train(config(shards, run, stop_after_steps=2))
    assert read_json(run / "config.json")["num_threads"] == 1  # the count it used, recorded
    with pytest.raises(ValueError, match=r"trained with 1 torch threads.*--accept-thread-change"):
        train(config(shards, run, stop_after_steps=1, num_threads=2), resume=True)
    # the user's explicit choice: continue on 2 threads, with a warning that it is not bit-identical
    train(config(shards, run, stop_after_steps=1, num_threads=2), resume=True, accept_thread_change=True)
    assert "other results than an uninterrupted run" in capsys.readouterr().err
    assert torch.get_num_threads() == 1  # restored for the caller
    assert read_json(run / "config.json")["num_threads"] == 2
    with pytest.raises(ValueError, match="base_lr"):
        train(config(shards, run, base_lr=0.01), resume=True)


def test_the_train_command_refuses_another_thread_count_on_resume(shards, tmp_path, capsys):
    run = tmp_path / "run"
    train(config(shards, run, stop_after_steps=1))
    (tmp_path / "config.json").write_text(json.dumps(tiny_config_data(shards, run)))
    arguments = ["--config", str(tmp_path / "config.json"), "--resume", "--set", "stop_after_steps=1"]
    assert main([*arguments, "--threads", "2"]) == 1
    assert "trained with 1 torch threads" in capsys.readouterr().err
    assert main([*arguments, "--threads", "1", "--device", "cpu"]) == 0  # the same count: fine
    assert main([*arguments, "--threads", "2", "--accept-thread-change"]) == 0
    assert "warning" in capsys.readouterr().err


def test_resume_without_a_thread_count_keeps_the_runs_own(shards, tmp_path, capsys):
    # The runner passes no count on resume: the resumed run must use the count its checkpoint recorded (2
    # here, while the caller runs with 1) and match the uninterrupted run.
    reference = train(config(shards, tmp_path / "reference", num_threads=2))
    run = tmp_path / "run"
    train(config(shards, run, num_threads=2, stop_after_steps=3))
    capsys.readouterr()
    train(config(shards, run), resume=True)
    assert "threads" not in capsys.readouterr().err
    assert torch.get_num_threads() == 1
    assert read_json(run / "COMPLETE.json")["steps"] == len(losses(reference))
    assert losses(run) == losses(reference)
    latest = read_state(latest_checkpoint(run / "checkpoints") / STATE_FILE)
    assert latest.info["threads"] == 2
    assert read_json(run / "config.json")["num_threads"] == 2
    assert (run / MODEL_FILE).read_bytes() == (reference / MODEL_FILE).read_bytes()  # byte for byte


def test_nan_loss_stops_naming_step_and_modality_and_keeps_last_checkpoint(shards, tmp_path, monkeypatch):
    original = model_module.FourM.forward
    calls = {"count": 0}

    def poisoned(self, batch, **loss_settings):
        loss, per_modality = original(self, batch, **loss_settings)
        calls["count"] += 1
        if calls["count"] == 6 and "normal" in per_modality:  # the 6th step (index 5), one micro-batch each
            per_modality = {**per_modality, "normal": per_modality["normal"] * float("nan")}
            loss = torch.stack(list(per_modality.values())).mean()
        return loss, per_modality

    monkeypatch.setattr(model_module.FourM, "forward", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"step 5: loss of modality normal is not finite") as caught:
        train(config(shards, run, checkpoint_every=2))
    assert "batch sample indices [" in str(caught.value) and "step-00000004" in str(caught.value)
    assert not is_complete(run)
    last = latest_checkpoint(run / "checkpoints")
    assert last.name == "step-00000004"
    state = read_state(last / STATE_FILE)
    assert state.step == 4 and all(torch.isfinite(p).all()
                                   for p in model_module.load_model(last / MODEL_FILE).parameters())
    assert max(json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()) == 5


def test_sigterm_finishes_the_step_checkpoints_and_resumes(shards, tmp_path, monkeypatch):
    original = model_module.FourM.forward
    calls = {"count": 0}

    def preempted(self, batch, **loss_settings):
        calls["count"] += 1
        if calls["count"] == 4:  # mid-step 4: the step still completes and is checkpointed
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, **loss_settings)

    handler_before = signal.getsignal(signal.SIGTERM)
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(model_module.FourM, "forward", preempted)
        with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM after step 4") as caught:
            train(config(shards, run, checkpoint_every=100))
    assert caught.value.signal_number == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is handler_before
    before = losses(run)
    assert latest_checkpoint(run / "checkpoints").name == "step-00000004" and len(before) == 4
    train(config(shards, run, checkpoint_every=100), resume=True)
    assert is_complete(run) and losses(run)[:4] == before and len(losses(run)) >= 12


@pytest.mark.parametrize(("changes", "field"), [
    ({"total_tokens": 0}, "total_tokens"),
    ({"batch_size": 0}, "batch_size"),
    ({"fragment": {"universe": ["rgb", "normal"], "withheld": [["rgb", "depth"]]}}, "fragment.withheld"),
    ({"fragment": {"withheld": [["rgb", "rgb"]]}}, "fragment.withheld"),
    ({"precision": "fp16"}, "precision"),
    ({"device": "tpu"}, "device"),
    ({"betas": [0.9, 1.5]}, "betas"),
    ({"warmup_fraction": 1.0}, "warmup_fraction"),
    ({"learning_rate": 0.1}, "learning_rate"),
    ({"loss_weights": {"rgb": 0.0}}, "loss_weights"),
])
def test_invalid_configs_name_the_field(tmp_path, changes, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate(TrainConfig, tiny_config_data(tmp_path / "shards", tmp_path / "run", **changes))


def test_errors_found_at_start_name_the_field(shards, tmp_path, capsys):
    with pytest.raises(ConfigError, match="micro_batch_size"):
        train(config(shards, tmp_path / "a", micro_batch_size=5))
    with pytest.raises(ValueError, match="fragment.universe: unknown modality 'embed'"):
        train(config(shards, tmp_path / "b", fragment={"universe": ["rgb", "embed"]}))
    with pytest.raises(ValueError, match="loss_weights: 'normal' not among the trained modalities"):
        train(config(shards, tmp_path / "b2", fragment={"universe": ["rgb", "depth"], "withheld": []},
                     loss_weights={"normal": 2.0}))
    assert main(["--shards", str(shards), "--out", str(tmp_path / "c"), "--withhold", "rgb"]) == 2
    assert "--withhold: pair 'rgb': expected A:B" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "c")]) == 2
    assert "shards: Field required" in capsys.readouterr().err
    assert main(["--shards", str(tmp_path / "missing"), "--out", str(tmp_path / "d")]) == 1
    assert "missing" in capsys.readouterr().err


def test_a_locked_run_folder_is_refused(shards, tmp_path):
    run = tmp_path / "run"
    with FolderLock(run), pytest.raises(RuntimeError, match="another pairless process"):
        train(config(shards, run))


def test_learning_rate_warms_up_then_decays_to_the_floor(tmp_path):
    schedule = validate(TrainConfig,
                        tiny_config_data(tmp_path, tmp_path, total_tokens=1000, warmup_tokens=100,
                                                      base_lr=2.56, batch_size=100, min_lr_fraction=0.1))
    peak = 2.56 * 100 / 256
    rates = [learning_rate(schedule, tokens) for tokens in range(0, 1001, 10)]
    assert all(a < b for a, b in zip(rates[:10], rates[1:11], strict=True))  # warmup rises
    assert rates[10] == pytest.approx(peak)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))  # cosine falls
    assert rates[-1] == pytest.approx(0.1 * peak)


def test_snapshots_keep_the_weights_of_that_step_and_change_nothing_else(shards, tmp_path):
    from pairless.training.saving import SNAPSHOT_FILE, snapshot_folder

    run = train(config(shards, tmp_path / "with", snapshots=[0.25, 0.5]))
    plain = train(config(shards, tmp_path / "without"))
    assert losses(run) == losses(plain)  # snapshots do not change what is trained
    total = config(shards, tmp_path / "x").total_tokens
    for fraction in (0.25, 0.5):
        folder = snapshot_folder(run, fraction)
        info = read_json(folder / SNAPSHOT_FILE)
        assert fraction * total <= info["tokens"] < fraction * total + 16 * 24  # within one batch
        # the same run stopped after that many steps holds the same weights
        stopped = train(config(shards, tmp_path / f"stopped-{fraction}", stop_after_steps=info["step"]))
        saved = model_module.load_model(folder / "model.safetensors").state_dict()
        checkpoint = latest_checkpoint(stopped / "checkpoints")
        for name, tensor in model_module.load_model(checkpoint / "model.safetensors").state_dict().items():
            assert torch.equal(saved[name], tensor), name
        assert read_json(folder / "config.json")["shards"] == str(shards)
    with pytest.raises(ValueError, match="snapshot"):
        config(shards, tmp_path / "bad", snapshots=[1.5])
