"""FSDP2 (distributed=fsdp): two gloo processes on CPU agree with DDP, and a stopped run resumes exactly."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing
from test_ddp import _free_port
from train_helpers import make_shards, tiny_config_data

from pairless import model as model_module
from pairless.config import validate
from pairless.data.shards import open_shards
from pairless.training.checkpoint import MODEL_FILE, list_checkpoints, read_state, shard_file
from pairless.training.config import TrainConfig
from pairless.training.data import INIT_STREAM, derive_seed
from pairless.training.train import train


def _worker(rank: int, world_size: int, port: int, data: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    data = dict(data)
    resume = data.pop("_resume", False)
    train(validate(TrainConfig, data), resume=resume)


def _spawn(runs: list[dict]) -> None:
    for data in runs:  # two fresh processes per run, as torchrun would start them
        torch.multiprocessing.spawn(_worker, args=(2, _free_port(), data), nprocs=2, join=True)


def _weights(path):
    return model_module.load_model(path).state_dict()


# warmup_tokens=0 and a large lr so that the steps move the weights far beyond the tolerance
COMMON = dict(batch_size=8, checkpoint_every=2, warmup_tokens=0, base_lr=5.0, keep_checkpoints=5)


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    shards = make_shards(root / "shards")
    total = dict(total_tokens=8 * 24 * 6)  # a few steps
    runs = [
        tiny_config_data(shards, root / "ddp", **COMMON, **total),
        tiny_config_data(shards, root / "fsdp", distributed="fsdp", **COMMON, **total),
        # stopped after 3 steps (a checkpoint is written on the way out), then resumed to the end
        tiny_config_data(shards, root / "fsdp-stopped", distributed="fsdp", stop_after_steps=3, **COMMON,
                         **total),
        {**tiny_config_data(shards, root / "fsdp-stopped", distributed="fsdp", **COMMON, **total),
         "_resume": True},
        # bf16: the weights all-gathered and computed with in bf16 (MixedPrecisionPolicy), shards in fp32
        tiny_config_data(shards, root / "fsdp-bf16", distributed="fsdp", precision="bf16", **COMMON, **total),
    ]
    _spawn(runs)
    return root


def test_fsdp_steps_agree_with_ddp(fsdp_runs):
    # After two steps at lr 5 (later steps amplify the different summation orders of the reductions,
    # ~1e-4 by step 4, as between any two ways of reducing the gradients)
    step = "checkpoints/step-00000002/" + MODEL_FILE
    ddp, fsdp = _weights(fsdp_runs / "ddp" / step), _weights(fsdp_runs / "fsdp" / step)
    config = validate(TrainConfig, tiny_config_data(fsdp_runs / "shards", fsdp_runs / "x", **COMMON))
    specs = open_shards(fsdp_runs / "shards", "train").specs
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(config.seed, INIT_STREAM))
        initial = model_module.FourM(config.model, specs).state_dict()
    assert max(float((fsdp[name] - initial[name]).abs().max()) for name in fsdp) > 1e-2  # the steps moved it
    for name in ddp:
        torch.testing.assert_close(fsdp[name], ddp[name], rtol=1e-5, atol=1e-5, msg=name)
    losses = [[json.loads(line)["loss"] for line in (fsdp_runs / run / "log.jsonl").read_text().splitlines()]
              for run in ("ddp", "fsdp")]
    assert losses[0][:2] == pytest.approx(losses[1][:2], rel=1e-5)


def test_fsdp_checkpoints_hold_one_optimizer_shard_per_process(fsdp_runs):
    step, folder = list_checkpoints(fsdp_runs / "fsdp" / "checkpoints")[-1]
    shards = [read_state(folder / shard_file(rank)) for rank in range(2)]
    assert all(shard.step == step for shard in shards)
    moments = [shard.optimizer["state"][0]["exp_avg"] for shard in shards]
    full = _weights(folder / MODEL_FILE)
    first_parameter = next(iter(full.values()))
    # the two shards of the first parameter's moment split it along dim 0
    assert sum(moment.shape[0] for moment in moments) >= first_parameter.shape[0] > moments[0].shape[0]
    assert not list((fsdp_runs / "fsdp" / "checkpoints").glob(".pending-*"))  # nothing left behind


def test_a_stopped_fsdp_run_resumes_exactly(fsdp_runs):
    straight, resumed = (_weights(fsdp_runs / run / MODEL_FILE) for run in ("fsdp", "fsdp-stopped"))
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0, msg=name)


def test_a_bf16_fsdp_run_trains_in_bf16_and_keeps_fp32_shards(fsdp_runs):
    """The first step's loss (before any update) is the fp32 run's to bf16 precision; the weights it saves
    are fp32 and finite."""
    losses = [[json.loads(line)["loss"] for line in (fsdp_runs / run / "log.jsonl").read_text().splitlines()]
              for run in ("fsdp", "fsdp-bf16")]
    assert losses[1][0] == pytest.approx(losses[0][0], rel=2e-2) and losses[1][0] != losses[0][0]
    weights = _weights(fsdp_runs / "fsdp-bf16" / MODEL_FILE)
    assert all(value.dtype == torch.float32 and torch.isfinite(value).all() for value in weights.values())
