"""Saving and restoring a training run: checkpoints, snapshots along training and the final weights.

- :func:`restore` continues exactly where a checkpoint stopped: weights, AdamW moments, step, tokens, RNG.
- :func:`save` writes a checkpoint of the run as it stands, before the next step or (``checkpoint_writes``,
  :class:`CheckpointWriter`) in a background thread; a sharded (FSDP) run adds one optimizer shard per
  process and writes before the next step.
- :func:`save_snapshot` keeps the weights at a fraction of the budget (``RUN/snapshots/F/``).
- :func:`finish` writes the last checkpoint and, once the budget is spent, the final weights and
  ``COMPLETE.json``.

The checkpoint folder itself (its files, publishing it atomically, reading it without pickle) is
:mod:`pairless.training.checkpoint`; the loop that calls these is :mod:`pairless.training.train`.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import numpy as np
import torch

from pairless import model as model_module
from pairless.training import distributed
from pairless.training.checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    TrainingState,
    checkpoint_name,
    latest_checkpoint,
    read_state,
    read_state_info,
    save_checkpoint,
    shard_file,
    write_state,
)
from pairless.training.run import TrainingInterrupted, write_config
from pairless.training.session import Progress, Session, budget_spent, wall_seconds
from pairless.utils.storage import atomic_write_json, config_hash, mark_complete
from pairless.utils.threads import default_threads

SNAPSHOTS = "snapshots"  # RUN/snapshots/<fraction>/: the weights along training (TrainConfig.snapshots)
SNAPSHOT_FILE = "snapshot.json"  # written last into a snapshot folder: fraction, step, tokens


def restore(session: Session, checkpoint: Path | None) -> Progress:
    """Continue exactly where ``checkpoint`` stopped: weights, AdamW moments, step, tokens, RNG.

    No checkpoint (None): a fresh start.
    """
    modalities, context = session.data.modalities, session.context
    if checkpoint is None:
        return Progress(modality_tokens=np.zeros(len(modalities), dtype=np.int64))
    state = read_state(checkpoint / STATE_FILE)
    weights, _ = model_module.read_weights(checkpoint / MODEL_FILE)  # loaded into the model below
    if session.sharded:
        saved = state.info.get("world_size")
        if state.info.get("distributed") != "fsdp" or saved != context.world_size:
            raise ValueError(f"{checkpoint}: written by {saved} {state.info.get('distributed', 'ddp')} "
                             f"process(es); a sharded run resumes with the same number of processes "
                             f"({context.world_size} now)")
        distributed.load_full_state_dict(session.model, weights)
        shard = read_state(checkpoint / shard_file(context.rank))
        session.optimizer.load_state_dict(_sharded_optimizer_state(session.optimizer, shard.optimizer))
    else:
        try:
            session.model.load_state_dict(weights)
        except RuntimeError as error:
            raise ValueError(f"{checkpoint / MODEL_FILE}: the weights do not fit this run's model "
                             f"({error})") from None
        del weights
        session.optimizer.load_state_dict(state.optimizer)
    torch.set_rng_state(state.rng["torch_cpu"])
    progress = Progress(
        step=state.step, tokens_seen=state.tokens_seen,
        elapsed_before=float(state.info.get("wall_seconds", 0.0)),
        loss=float(state.info.get("loss", float("nan"))),
        modality_tokens=np.array([state.info["tokens_per_modality"].get(n, 0) for n in modalities], np.int64))
    # (the thread count it continues with was settled before: :func:`resolve_threads`)
    if state.info.get("batches_per_epoch") != session.order.batches_per_epoch:
        raise ValueError(f"{checkpoint}: written with {state.info.get('batches_per_epoch')} batches per "
                         f"epoch, now {session.order.batches_per_epoch} (different shards or batch_size)")
    return progress


def recorded_threads(run: Path) -> int | None:
    """The torch thread count of the newest checkpoint in ``run`` (None: no checkpoint, or none recorded)."""
    latest = latest_checkpoint(Path(run) / "checkpoints")
    if latest is None:
        return None
    threads = read_state_info(latest / STATE_FILE).get("threads")
    return None if threads is None else int(threads)


def resolve_threads(config, run: Path, resume: bool, accept_thread_change: bool = False,
                    is_main: bool = True) -> int:
    """The torch thread count a run trains with: resuming, the count its newest checkpoint recorded; else
    ``config.num_threads``, else the fixed default of the usable cores (never the machine's load).

    The count splits reductions, so a run continued on another count than it started with gives other last
    bits than an uninterrupted one: an explicit ``num_threads`` that differs from the recorded count is
    refused (ValueError naming both), unless ``accept_thread_change`` (then a warning).
    """
    recorded = recorded_threads(run) if resume else None
    if config.num_threads is None:
        return recorded if recorded is not None else default_threads()
    if recorded is not None and config.num_threads != recorded:
        message = (f"{run}: was trained with {recorded} torch threads (its newest checkpoint); continuing "
                   f"with num_threads={config.num_threads} gives other results than an uninterrupted run")
        if not accept_thread_change:
            raise ValueError(f"{message}. Leave --threads / num_threads out to keep the run's {recorded}, or "
                             "pass --accept-thread-change to continue anyway")
        if is_main:
            print(f"pairless train: warning: {message} (accepted by --accept-thread-change)", file=sys.stderr)
    return config.num_threads


def snapshot_folder(run: Path, fraction: float) -> Path:
    """Where ``snapshots`` keeps the weights at ``fraction`` of the budget: a folder that reads like a run
    (config.json, model.safetensors), complete once ``snapshot.json`` is written (last)."""
    return Path(run) / SNAPSHOTS / f"{fraction:g}"


def save_snapshot(session: Session, progress: Progress, fraction: float) -> None:
    """The weights as they stand, into :func:`snapshot_folder` (rank 0 writes; a sharded model is gathered
    by every process)."""
    weights = distributed.full_state_dict(session.model) if session.sharded else None  # a collective
    if not session.context.is_main:
        return
    folder = snapshot_folder(session.run, fraction)
    folder.mkdir(parents=True, exist_ok=True)
    write_config(folder, session.config)
    model_module.save_model(folder / MODEL_FILE, session.model, weights)
    atomic_write_json(folder / SNAPSHOT_FILE, {"fraction": fraction, "step": progress.step,
                                               "tokens": progress.tokens_seen,
                                               "budget_spent": budget_spent(session.config,
                                                                            session.data.modalities,
                                                                            progress)})


def _local_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state dict with each DTensor (a sharded model's moments) as this process's shard."""
    state = optimizer.state_dict()
    return {**state, "state": {index: {key: value.to_local() if hasattr(value, "to_local") else value
                                       for key, value in entries.items()}
                               for index, entries in state["state"].items()}}


def _sharded_optimizer_state(optimizer: torch.optim.Optimizer, local: dict) -> dict:
    """The inverse of :func:`_local_optimizer_state`: each shard wrapped as a DTensor like its parameter."""
    from torch.distributed.tensor import DTensor

    parameters = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    state = {}
    for index, entries in local["state"].items():
        parameter = parameters[int(index)]
        state[index] = {key: DTensor.from_local(value, parameter.device_mesh, parameter.placements,
                                                shape=parameter.shape, stride=parameter.stride())
                        if isinstance(parameter, DTensor) and isinstance(value, torch.Tensor)
                        and value.dim() > 0 else value
                        for key, value in entries.items()}
    return {**local, "state": state}


def wait_for_writes(session: Session, raise_error: bool = True) -> None:
    """Until every checkpoint this session started writing is published."""
    if session.writer is not None:
        session.writer.wait(raise_error)


def _host_copy(value):
    """``value`` (a state dict, nested) with every tensor copied to host memory."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _host_copy(entry) for key, entry in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_host_copy(entry) for entry in value)
    return value


def save(session: Session, progress: Progress, reason: str) -> Path | None:
    """A checkpoint of the run as it stands (rank 0 writes it; the others return None).

    A sharded (FSDP) run: every process takes part in gathering the weights (one model.safetensors, as
    for any run) and writes its optimizer shard (``state.rankNNNNN.safetensors``) into a pending folder,
    which rank 0 moves into the checkpoint before publishing it.
    """
    context = session.context
    sharded = session.sharded
    weights = distributed.full_state_dict(session.model) if sharded else None  # a collective
    shards: dict[str, Path] = {}
    if sharded:
        pending = session.run / "checkpoints" / f".pending-{checkpoint_name(progress.step)}"
        pending.mkdir(parents=True, exist_ok=True)
        mine = pending / shard_file(context.rank)
        write_state(mine, TrainingState(progress.step, progress.tokens_seen,
                                        _local_optimizer_state(session.optimizer)))
        distributed.barrier(context)
        shards = {shard_file(rank): pending / shard_file(rank) for rank in range(context.world_size)}
    if not context.is_main:
        if sharded:
            distributed.barrier(context)  # until rank 0 has published the checkpoint
        return None
    modalities, model = session.data.modalities, session.model
    info = {"wall_seconds": wall_seconds(session, progress), "reason": reason, "loss": progress.loss,
            "batches_per_epoch": session.order.batches_per_epoch,
            "data_position": list(session.order.position(progress.step)),
            "tokens_per_modality": dict(zip(modalities, progress.modality_tokens.tolist(), strict=True)),
            "world_size": session.context.world_size, "threads": torch.get_num_threads(),
            "device": str(session.context.device),
            "config_hash": config_hash(session.config), "distributed": session.config.distributed}
    # a sharded run keeps its optimizer in the per-process shard files
    optimizer = {"state": {}, "param_groups": session.optimizer.state_dict()["param_groups"]} if sharded \
        else session.optimizer.state_dict()
    rng = {"torch_cpu": torch.get_rng_state()}
    writer = session.writer
    if sharded or writer is None or not writer.asynchronous:
        if writer is not None:
            writer.wait()
        state = TrainingState(progress.step, progress.tokens_seen, optimizer, rng, info)
        saved = save_checkpoint(session.run / "checkpoints", state,
                                lambda path: model_module.save_model(path, model, weights),
                                keep=session.config.keep_checkpoints, extra=shards)
        if sharded:
            pending.rmdir()
            distributed.barrier(context)
        return saved
    # asynchronous: what the next steps change in place is copied now, the rest happens in the background
    weights = _host_copy(model.state_dict())
    state = TrainingState(progress.step, progress.tokens_seen, _host_copy(optimizer), rng, info)
    writer.submit(lambda: save_checkpoint(session.run / "checkpoints", state,
                                          lambda path: model_module.save_model(path, model, weights),
                                          keep=session.config.keep_checkpoints))
    return session.run / "checkpoints" / checkpoint_name(progress.step)


def finish(session: Session, progress: Progress, last_saved: int, stopped_by: int,
           steps_this_session: int) -> Path:
    """The last checkpoint; then, when the budget is spent, the final weights and ``COMPLETE.json``."""
    config, context, run = session.config, session.context, session.run
    finished = budget_spent(config, session.data.modalities, progress) >= config.total_tokens
    if progress.step != last_saved:
        save(session, progress, "final" if finished else "stopped")
    wait_for_writes(session)  # every checkpoint is published before the run says it stopped or finished
    # gathering the weights is a collective: every process takes part, rank 0 writes them
    weights = distributed.full_state_dict(session.model) if session.sharded and finished else None
    if stopped_by and not finished:
        raise TrainingInterrupted(f"stopped by {signal.Signals(stopped_by).name} after step {progress.step} "
                                  f"({progress.tokens_seen:,} of {config.total_tokens:,} tokens), checkpoint "
                                  f"written; continue with --resume", stopped_by)
    if not context.is_main:
        return run
    if not finished:
        print(f"pairless train: stopped after {steps_this_session} steps at step {progress.step} "
              f"({progress.tokens_seen:,} of {config.total_tokens:,} tokens); continue with --resume")
        return run
    model_module.save_model(run / MODEL_FILE, session.model, weights)  # atomic (pairless.utils.storage)
    wall = wall_seconds(session, progress)
    modalities = session.data.modalities
    mark_complete(run, {"steps": progress.step, "tokens": progress.tokens_seen, "final_loss": progress.loss,
                        "wall_seconds": wall, "world_size": context.world_size,
                        "threads": torch.get_num_threads(), "device": str(context.device),
                        "config_hash": config_hash(config),
                        "tokens_per_modality": dict(zip(modalities, progress.modality_tokens.tolist(),
                                                        strict=True))})
    print(f"pairless train: done, {progress.step} steps, {progress.tokens_seen:,} tokens, "
          f"final loss {progress.loss:.4f}, {wall:.0f} s -> {run}")
    return run
