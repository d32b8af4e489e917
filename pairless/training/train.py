"""``pairless train``: the training loop (AdamW, warmup + cosine, bf16, checkpoints, resume, DDP).

One run trains one 4M-style model on token shards, with the withheld pairs
of ``fragment`` never co-occurring in any sample. The run folder ``RUN``::

    RUN/config.json          the resolved TrainConfig
    RUN/paired_ids.json      with fragment.allow_pairs: {"a:b": ids of the samples that keep both}
    RUN/log.jsonl            one line per logged step (loss, per-modality losses, lr, grad norm, tokens/s)
    RUN/tb/                  TensorBoard scalars
    RUN/checkpoints/step-N/  model.safetensors + state.safetensors + COMPLETE.json (the newest few)
    RUN/snapshots/F/         with ``snapshots``: config.json, model.safetensors, snapshot.json at fraction F
    RUN/model.safetensors    the final weights (pairless.model.load_model reads them)
    RUN/COMPLETE.json        written last: steps, tokens, final loss, wall time

The budget is counted in tokens seen (valid inputs + targets), like 4M; the
learning rate follows it: linear warmup, then cosine down to a floor. The
peak rate scales with the batch like 4M: ``lr = base_lr * batch_size / 256``.
Multi-process: ``torchrun --nproc-per-node 2 -m pairless train ...``. The loop is
:func:`train`, read top to bottom: ``_start`` (data, model, optimizer),
``saving.restore`` (a checkpoint), then ``_step`` / ``_log`` / ``saving.save`` per step, and
``saving.finish`` (:mod:`pairless.training.saving`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pairless import model as model_module
from pairless.config import ConfigError
from pairless.data.declared import record_declared
from pairless.training import distributed, masking, memory_fit, saving
from pairless.training.checkpoint import CheckpointWriter
from pairless.training.config import TrainConfig
from pairless.training.data import (
    DROPOUT_STREAM,
    INIT_STREAM,
    BatchSource,
    derive_seed,
)
from pairless.training.loading import initialise_from, training_data
from pairless.training.run import (
    RunLog,
    StepHealth,
    StepStatistics,
    StopRequest,
    TrainingDiverged,  # noqa: F401 (re-exported: callers catch it from here)
    check_same_run,
    find_resume_checkpoint,
    write_config,
)
from pairless.training.session import Progress, Session, budget_spent, wall_seconds
from pairless.utils.storage import FolderLock, atomic_write_json, is_complete, remove_interrupted_writes

PAIRED_IDS_FILE = "paired_ids.json"


def learning_rate(config: TrainConfig, tokens_seen: int) -> float:
    """Linear warmup to the peak, then cosine decay to ``min_lr_fraction * peak`` at ``total_tokens``."""
    peak, floor = config.peak_lr, config.peak_lr * config.min_lr_fraction
    if tokens_seen < config.warmup:
        return peak * (tokens_seen + 1) / (config.warmup + 1)
    progress = min(1.0, (tokens_seen - config.warmup) / max(1, config.total_tokens - config.warmup))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms, or 1-D embeddings)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel: one pass over each tensor; ~3x faster than the multi-tensor path on CPU (measured in
    # benchmarks/train_throughput.py, which trains with this function), same update up to rounding.
    fused = all(p.device.type in ("cpu", "cuda") for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=config.peak_lr, betas=config.betas, fused=fused)


def micro_batches(config: TrainConfig, context: distributed.ProcessContext,
                  size: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) of this process's micro-batches inside the global batch (of ``size`` samples, else
    ``config.micro_batch_size``, else the whole per-process batch)."""
    if config.batch_size % context.world_size:
        raise ConfigError(f"batch_size: {config.batch_size} is not divisible by the {context.world_size} "
                          "processes")
    share = config.batch_size // context.world_size
    size = size or (config.micro_batch_size if isinstance(config.micro_batch_size, int) else None) or share
    if share % size:
        raise ConfigError(f"micro_batch_size: {size} does not divide the per-process batch {share} "
                          f"(batch_size {config.batch_size} over {context.world_size} processes)")
    first = context.rank * share
    return [(start, start + size) for start in range(first, first + share, size)]


def train(config: TrainConfig, resume: bool = False, accept_thread_change: bool = False) -> Path:
    """Train (or, with ``resume``, continue) the run in ``config.out``; returns the run folder.

    The torch thread count is ``config.num_threads``, else the one a resumed run recorded, else the fixed
    default of the usable cores; it is written into ``RUN/config.json`` and every checkpoint. Resuming with
    another explicit count is refused unless ``accept_thread_change`` (:func:`saving.resolve_threads`).
    """
    context = distributed.setup(config.device)
    threads_before = torch.get_num_threads()
    try:
        run = Path(config.out)
        if is_complete(run):
            check_same_run(run, config)
            if context.is_main:
                print(f"pairless train: {run} is already complete (COMPLETE.json); nothing to do")
            return run
        threads = saving.resolve_threads(config, run, resume, accept_thread_change, context.is_main)
        config = config.model_copy(update={"num_threads": threads})
        torch.set_num_threads(threads)
        lock = FolderLock(run) if context.is_main else contextlib.nullcontext()
        # The loop seeds torch's global generator (initial weights, dropout); leave the caller's state alone.
        cuda_devices = [context.device] if context.device.type == "cuda" else []
        with lock, torch.random.fork_rng(devices=cuda_devices), StopRequest() as stop_request:
            run = _train(config, context, run, resume, stop_request)
        # No process leaves the group while another still writes or talks to it: a gloo rank that exits
        # early aborted at exit ("terminate called without an active exception") about once in 10 runs.
        distributed.barrier(context)
        return run
    finally:
        torch.set_num_threads(threads_before)
        distributed.teardown(context)


def _train(config: TrainConfig, context: distributed.ProcessContext, run: Path, resume: bool,
           stop_request: StopRequest) -> Path:
    if context.is_main:  # under the run's lock: no other process writes here now
        _remove_interrupted_saves(run)
    session = _start(config, context, run)
    progress = saving.restore(session, find_resume_checkpoint(run, config, resume, context))
    network = distributed.wrap_model(session.model, context)
    log = RunLog(run, config, progress.step, context.is_main)
    if context.is_main:
        write_config(run, config)
        record_declared(session.data.modalities, run)  # what opens the run knows its declared modalities
        if session.data.paired_ids:  # which samples kept both modalities of a withheld pair
            atomic_write_json(run / PAIRED_IDS_FILE, session.data.paired_ids)
    def spent() -> int:
        return budget_spent(config, session.data.modalities, progress)

    bar = tqdm(total=config.total_tokens, initial=spent(), unit="tok", unit_scale=True,
               disable=None if context.is_main else True, desc=f"train {run.name}")
    steps_this_session, last_saved, stopped_by = 0, progress.step, 0
    window_tokens, window_start = 0, time.perf_counter()
    health = StepHealth(len(session.data.modalities), context.device)
    during = f"step {progress.step + 1}"  # what runs now, for an out-of-memory report
    try:
        while spent() < config.total_tokens:
            during = f"step {progress.step + 1}"
            if config.stop_after_steps is not None and steps_this_session >= config.stop_after_steps:
                break
            before = spent()
            stats, grad_norm, lr, step_tokens = _step(session, network, progress, health)
            steps_this_session += 1
            window_tokens += step_tokens
            bar.update(spent() - before)
            crossed = [fraction for fraction in config.snapshots
                       if before < fraction * config.total_tokens <= spent()]
            logged = progress.step % config.log_every == 0 or spent() >= config.total_tokens
            saved = progress.step % config.checkpoint_every == 0
            last = (spent() >= config.total_tokens or steps_this_session == config.stop_after_steps
                    or (stop_request.signal_number and not context.is_distributed))
            if not (logged or saved or crossed or last):
                continue  # nothing leaves the device until a step that logs, saves or stops
            stats = health.check(stats, stop_request, progress, session)
            if logged:
                speed = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                log.write(step=progress.step, tokens=progress.tokens_seen, loss=progress.loss,
                          losses=stats.modality_means(session.data.modalities), lr=lr,
                          grad_norm=float(grad_norm), tokens_per_second=speed,
                          seconds=wall_seconds(session, progress))
                bar.set_postfix(loss=f"{progress.loss:.3f}", tok_s=f"{speed:,.0f}")
                window_tokens, window_start = 0, time.perf_counter()
            during = f"the checkpoint save after step {progress.step}"
            for fraction in crossed:
                saving.save_snapshot(session, progress, fraction)
            if saved:
                saving.save(session, progress, "periodic")
                last_saved = progress.step
            if stats.stop > 0:
                # the signal may have reached another process only
                stopped_by = stop_request.signal_number or signal.SIGTERM
                break
        during = f"the final save after step {progress.step}"
        bar.close()
        session.batches.close()
        log.close()  # before COMPLETE.json, whose content hash covers the TensorBoard files
        return saving.finish(session, progress, last_saved, stopped_by, steps_this_session)
    except (MemoryError, RuntimeError) as error:
        saving.wait_for_writes(session, raise_error=False)
        if not memory_fit.is_out_of_memory(error):
            raise
        micro = session.slices[0][1] - session.slices[0][0]
        raise memory_fit.out_of_memory(error, config, session.data.specs, context, micro, during) from None
    except BaseException:
        saving.wait_for_writes(session, raise_error=False)
        raise
    finally:  # (again, after an error; closing twice does nothing)
        bar.close()
        session.batches.close()
        log.close()


def _remove_interrupted_saves(run: Path) -> None:
    """Remove what a save killed part-way left in the run folder (a large model's staging folder holds
    gigabytes), saying so."""
    folders = [run, run / "checkpoints", *sorted((run / "snapshots").glob("*"))]
    for folder in folders:
        for path, size in remove_interrupted_writes(folder):
            print(f"pairless train: removed {path} ({size / 1e9:.2f} GB), left by a save that was "
                  "interrupted")


def _start(config: TrainConfig, context: distributed.ProcessContext, run: Path) -> Session:
    """The data, its order and masking, the initial model (the same on every process) and its optimizer."""
    started = time.perf_counter()
    data, order = training_data(config)
    # before the model exists: a run that cannot fit says so in words, not with the kernel's kill
    slices = micro_batches(config, context, memory_fit.check_fit(config, data.specs, context))
    masking.check_budget(config.masking, data.specs, data.modalities)
    own = (slices[0][0], slices[-1][1])
    on_gpu = context.device.type == "cuda"
    workers = config.num_workers if config.num_workers is not None else (2 if on_gpu else 0)
    batches = BatchSource(data, order, masking.Masker(data.specs, config.masking, data.modalities),
                          config.seed, workers, own=own, stream=config.masking_stream, pin_memory=on_gpu,
                          micro=[(start - own[0], stop - own[0]) for start, stop in slices],
                          # the budget of budget_modalities needs every step's global split; otherwise the
                          # per-modality counts are summed over processes only when the loop syncs
                          global_modality_tokens=config.budget_modalities is not None)
    unknown = sorted(set(config.loss_weights) - set(data.modalities))
    if unknown:
        raise ValueError(f"loss_weights: {', '.join(map(repr, unknown))} not among the trained modalities "
                         f"({', '.join(data.modalities)})")
    model = _build_model(config, masking.model_specs(data.specs, config.masking), context)
    return Session(config, context, run, data, order, batches, model, build_optimizer(model, config), slices,
                   started, CheckpointWriter(config.checkpoint_writes, context.device))


def _build_model(config: TrainConfig, specs, context: distributed.ProcessContext) -> model_module.FourM:
    """The initial model, the same on every process, on its device (sharded there for FSDP)."""
    torch.manual_seed(derive_seed(config.seed, INIT_STREAM))  # the same initial weights on every process
    initial = model_module.FourM(config.model, specs)  # on the host: the initial values
    if config.init_from is not None:
        initialise_from(initial, Path(config.init_from))
    if config.distributed == "fsdp" and context.is_distributed:
        # Built on the meta device and sharded before it is materialised: the device never holds the whole
        # model, only one parameter at a time while its shard is cut (load_full_state_dict).
        with torch.device("meta"):
            model = model_module.FourM(config.model, specs)
        _configure(model, config)
        distributed.shard_model(model, context, torch.bfloat16 if config.precision == "bf16" else None)
        model.to_empty(device=context.device)
        distributed.load_full_state_dict(model, initial.state_dict())
        buffers = dict(initial.named_buffers())
        with torch.no_grad():
            for name, buffer in model.named_buffers():  # not in the state dict: computed at construction
                buffer.copy_(buffers[name])
        return model
    model = initial.to(context.device)
    _configure(model, config)
    return model


def _configure(model: model_module.FourM, config: TrainConfig) -> None:
    """Compiled blocks (TrainConfig.compile); the step's other settings go into each forward (``_step``)."""
    if config.compile:
        for block in [*model.encoder, *model.decoder]:
            block.compile()  # in place: the parameter names (and so the checkpoints) stay the same


def _step(session: Session, network: torch.nn.Module, progress: Progress,
          health: StepHealth) -> tuple[StepStatistics, torch.Tensor, float, int]:
    """One optimizer step on the global batch of ``progress.step``; advances ``progress``.

    Returns this process's statistics of the step and the gradient norm, both still on the device (nothing
    here waits for the device), the learning rate and the valid tokens of the global batch.
    """
    config, context, modalities = session.config, session.context, session.data.modalities
    prepared = session.batches.get(progress.step)  # this process's slices of the global batch
    lr = learning_rate(config, budget_spent(config, modalities, progress))
    for group in session.optimizer.param_groups:
        group["lr"] = lr
    torch.manual_seed(derive_seed(config.seed, DROPOUT_STREAM, progress.step, context.rank))
    autocast = torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    stats = StepStatistics.zeros(len(modalities), context.device)
    replicated = isinstance(network, torch.nn.parallel.DistributedDataParallel)  # see wrap_model
    for number, host_micro in enumerate(prepared.micro_batches):
        if context.device.type != "cpu":  # on the CPU the forward checks the ids itself
            session.model.check_token_ids(host_micro)
        micro = host_micro.to(context.device)
        # Gradients are all-reduced once per step, on the last micro-batch.
        last = number == len(session.slices) - 1
        if session.sharded:  # FSDP2: reduce-scatter the gradients on the last one only
            network.set_requires_gradient_sync(last)
            sync = contextlib.nullcontext()
        else:
            sync = contextlib.nullcontext() if last or not context.is_distributed else network.no_sync()
        with sync:
            with autocast:
                # the step's training settings go in with the batch (the model holds none)
                loss, losses = network(micro, loss_weights=config.loss_weights,
                                       touch_every_parameter=session.sharded,
                                       touch_unused_heads=replicated,
                                       checkpoint_blocks=config.activation_checkpointing)
            stats.add(loss, losses, modalities)
            # DDP averages gradients over processes; accumulation averages over micro-batches.
            (loss / len(session.slices)).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(session.model.parameters(), config.grad_clip or float("inf"))
    if hasattr(grad_norm, "full_tensor"):  # a sharded model's norm is a DTensor
        grad_norm = grad_norm.full_tensor()
    # A step whose loss or gradient is not finite leaves the weights and AdamW's moments as they were (the
    # fused AdamW skips it on the device); the next step that syncs raises, naming it (StepHealth).
    found_inf = health.record(stats, grad_norm, progress.step, prepared.indices)
    if session.optimizer.defaults.get("fused"):
        session.optimizer.found_inf = found_inf
        session.optimizer.step()
    elif not bool(found_inf):  # the other AdamW kernels take no found_inf: a sync
        session.optimizer.step()
    session.optimizer.zero_grad(set_to_none=True)
    step_tokens = prepared.num_valid_tokens
    progress.step += 1
    progress.tokens_seen += step_tokens
    if prepared.modality_tokens_global:
        progress.modality_tokens += prepared.modality_tokens
    else:  # this process's rows: summed over processes at the next sync (StepHealth.check)
        health.own_modality_tokens += prepared.modality_tokens
    return stats, grad_norm, lr, step_tokens
