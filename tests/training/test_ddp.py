"""Two-process DistributedDataParallel training (gloo on CPU) matches one process on the same global batch."""

from __future__ import annotations

import json
import os
import socket

import torch
import torch.multiprocessing
from train_helpers import make_shards, tiny_config_data

from pairless import model as model_module
from pairless.config import validate
from pairless.data.shards import open_shards
from pairless.training import distributed
from pairless.training.checkpoint import MODEL_FILE
from pairless.training.config import TrainConfig
from pairless.training.data import INIT_STREAM, derive_seed
from pairless.training.train import train


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, data: dict) -> None:
    # What torchrun sets for each process.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(validate(TrainConfig, data))


def _against_one_process(shards, ddp_run, single_run, common: dict) -> tuple[dict, dict]:
    """Train one process with the global batch of 8 in the same two micro-batches of 4 (gradient
    accumulation); the weights after step 3 of the two-process run and of this one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(validate(TrainConfig, tiny_config_data(shards, single_run, micro_batch_size=4, **common)))
    finally:
        torch.set_num_threads(before)
    return tuple(model_module.load_model(run / "checkpoints" / "step-00000003" / MODEL_FILE).state_dict()
                 for run in (ddp_run, single_run))


def test_two_process_steps_match_single_process_with_the_same_micro_batches(tmp_path):
    shards = make_shards(tmp_path / "shards")
    # warmup_tokens=0 and a large lr so that three steps move the weights far beyond the tolerance.
    common = dict(batch_size=8, stop_after_steps=3, checkpoint_every=100, warmup_tokens=0, base_lr=5.0)
    ddp_run, single_run = tmp_path / "ddp", tmp_path / "single"
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), tiny_config_data(shards, ddp_run, **common)),
                                nprocs=2, join=True)
    ddp, single = _against_one_process(shards, ddp_run, single_run, common)
    config = validate(TrainConfig, tiny_config_data(shards, single_run, **common))
    specs = {name: spec for name, spec in open_shards(shards, "train").specs.items()}
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(config.seed, INIT_STREAM))
        initial = model_module.FourM(config.model, specs).state_dict()
    moved = max(float((single[name] - initial[name]).abs().max()) for name in single)
    assert moved > 1e-2  # the steps did something a tolerance could not hide
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-5, atol=1e-6, msg=name)
    ddp_log = [json.loads(line) for line in (ddp_run / "log.jsonl").read_text().splitlines()]
    single_log = [json.loads(line) for line in (single_run / "log.jsonl").read_text().splitlines()]
    assert [entry["tokens"] for entry in ddp_log] == [entry["tokens"] for entry in single_log]
    for a, b in zip(ddp_log, single_log, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-4


def test_collectives_are_no_ops_on_one_process():
    context = distributed.setup("cpu")
    assert (context.rank, context.world_size, context.is_main, context.is_distributed) == (0, 1, True, False)
    values = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(values, context) is values and values.tolist() == [1.0, 2.0]
    assert distributed.broadcast_int(7, context) == 7
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, context) is model
    distributed.teardown(context)


def test_two_processes_on_streamed_shards_each_read_their_own_and_match_packed(tmp_path):
    """data_order=shards, stream_groups=2: each process reads its own shards of webdataset tars, and the
    steps match one process on the packed shards."""
    from pairless.data.streamed_shards import write_streamed

    shards = make_shards(tmp_path / "shards")
    streamed = write_streamed(shards, tmp_path / "wds", shard_samples=12)
    common = dict(batch_size=8, stop_after_steps=3, checkpoint_every=100, warmup_tokens=0, base_lr=5.0,
                  data_order="shards", shard_samples=12, stream_groups=2)
    ddp_run, single_run = tmp_path / "ddp", tmp_path / "single"
    arguments = (2, _free_port(), tiny_config_data(streamed, ddp_run, **common))
    torch.multiprocessing.spawn(_worker, args=arguments, nprocs=2, join=True)
    ddp, single = _against_one_process(shards, ddp_run, single_run, common)
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-5, atol=1e-6, msg=name)
