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
``_restore`` (a checkpoint), then ``_step`` / ``_log`` / ``_save`` per step, and ``_finish``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from tqdm import tqdm

from pairless import model as model_module
from pairless.config import Config, ConfigError
from pairless.model import ModelConfig
from pairless.training import distributed, masking
from pairless.training.checkpoint import (
    MODEL_FILE,
    STATE_FILE,
    TrainingState,
    checkpoint_name,
    read_state,
    save_checkpoint,
    shard_file,
    write_state,
)
from pairless.training.data import (
    DROPOUT_STREAM,
    INIT_STREAM,
    BatchSource,
    SampleOrder,
    TrainingData,
    derive_seed,
    slice_batch,
    tokens_per_modality,
)
from pairless.training.fragment import FragmentConfig
from pairless.training.masking import MaskingConfig
from pairless.training.run import (
    RunLog,
    StepStatistics,
    StopRequest,
    TrainingDiverged,
    TrainingInterrupted,
    check_finite,
    check_same_run,
    find_resume_checkpoint,
    last_good_checkpoint,
    write_config,
)
from pairless.training.setup import initialise_from, training_data
from pairless.utils.storage import FolderLock, atomic_write_json, config_hash, is_complete, mark_complete

PAIRED_IDS_FILE = "paired_ids.json"
SNAPSHOTS = "snapshots"  # RUN/snapshots/<fraction>/: the weights along training (TrainConfig.snapshots)
SNAPSHOT_FILE = "snapshot.json"  # written last into a snapshot folder: fraction, step, tokens


class TrainConfig(Config):
    """Everything one training run depends on; saved as RUN/config.json."""

    shards: Path  # token shards folder (`pairless tokenize`)
    out: Path  # the run folder
    split: str = "train"
    model: ModelConfig = Field(default_factory=ModelConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    fragment: FragmentConfig = Field(default_factory=FragmentConfig)
    # global batch, over all processes; 32 at a peak lr of 1e-3 learned more per CPU-second than 64 or 16
    # (benchmarks/learning.py, docs/learning.md)
    batch_size: int = Field(32, ge=1)
    micro_batch_size: int | None = Field(None, ge=1)  # per forward pass; None = batch_size / processes
    total_tokens: int = Field(10_000_000, gt=0)  # budget: valid input + target tokens seen
    # when set, the budget (and the lr schedule) counts only these modalities' tokens: runs over different
    # universes then see each of them equally often (the exposure-matched binding ablation)
    budget_modalities: list[str] | None = None
    base_lr: float = Field(8e-3, gt=0)  # peak lr = base_lr * batch_size / 256 (1e-3 at the default batch)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)  # of total_tokens
    warmup_tokens: int | None = Field(None, ge=0)  # overrides warmup_fraction when set
    min_lr_fraction: float = Field(0.1, ge=0, le=1)  # cosine floor, as a fraction of the peak
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = Field(1.0, gt=0)  # max global gradient norm; None disables clipping
    seed: int = 0
    precision: Literal["bf16", "fp32"] = "bf16"
    checkpoint_every: int = Field(500, ge=1)  # steps
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)  # steps
    stop_after_steps: int | None = Field(None, ge=1)  # leave early (resumable) after this many steps
    num_workers: int = Field(0, ge=0)  # background threads preparing the next batches
    num_threads: int | None = Field(None, ge=1)  # CPU intra-op threads per process; None = torch's default
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # several processes: "ddp" replicates the model, "fsdp" shards weights, gradients and AdamW moments
    # (torch FSDP2, for models too large to replicate; checkpoints keep one optimizer shard per process)
    distributed: Literal["ddp", "fsdp"] = "ddp"
    # start from another run's final weights (a run folder or a model.safetensors) with a fresh optimizer
    # and schedule: continued training, e.g. on pseudo-pairs and its equal-budget control
    init_from: Path | None = None
    # fractions of the budget at which the weights are also kept (RUN/snapshots/<fraction>/): probes and
    # evaluations along training; they do not change what is trained
    snapshots: list[float] = []
    # the order of samples: "global" = a fresh permutation of all of them per epoch; "shards" = shard by shard
    # (pairless.training.order), the only order streamed (webdataset) shards can be read in, and the same
    # batches from packed shards of the same shard size
    data_order: Literal["global", "shards"] = "global"
    shard_samples: int | None = Field(None, ge=1)  # "shards" on packed shards: rows per shard (None: 1,000)
    stream_groups: int = Field(1, ge=1)  # "shards": streams a batch is drawn from (set it to the process
    # count so that each process reads its own shards only)

    @field_validator("snapshots")
    @classmethod
    def _fractions_inside_the_budget(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < fraction < 1.0 for fraction in value):
            raise ValueError(f"each snapshot is a fraction of total_tokens in (0, 1), got {value}")
        return sorted(set(value))

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in value):
            raise ValueError(f"each beta must lie in [0, 1), got {value}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not distributed.DEVICE_PATTERN.match(value):
            raise ValueError(f"{value!r} is not one of auto, cpu, cuda, cuda:N")
        return value

    @model_validator(mode="after")
    def _withheld_inside_universe(self) -> TrainConfig:
        universe = self.fragment.universe
        for pair in self.fragment.withheld:
            for name in pair:
                if universe is not None and name not in universe:
                    raise ValueError(f"fragment.withheld: pair {pair[0]}:{pair[1]} is outside "
                                     f"fragment.universe ({name!r} not in {', '.join(universe)})")
            if pair[0] == pair[1]:
                raise ValueError(f"fragment.withheld: pair {pair[0]}:{pair[1]} names one modality twice")
        return self

    @property
    def peak_lr(self) -> float:
        return self.base_lr * self.batch_size / 256

    @property
    def warmup(self) -> int:
        """Warmup length in tokens."""
        if self.warmup_tokens is not None:
            return self.warmup_tokens
        return int(self.warmup_fraction * self.total_tokens)


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


def micro_batches(config: TrainConfig, context: distributed.ProcessContext) -> list[tuple[int, int]]:
    """(start, stop) of this process's micro-batches inside the global batch."""
    if config.batch_size % context.world_size:
        raise ConfigError(f"batch_size: {config.batch_size} is not divisible by the {context.world_size} "
                          "processes")
    share = config.batch_size // context.world_size
    size = config.micro_batch_size or share
    if share % size:
        raise ConfigError(f"micro_batch_size: {size} does not divide the per-process batch {share} "
                          f"(batch_size {config.batch_size} over {context.world_size} processes)")
    first = context.rank * share
    return [(start, start + size) for start in range(first, first + share, size)]


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train (or, with ``resume``, continue) the run in ``config.out``; returns the run folder."""
    context = distributed.setup(config.device)
    threads_before = torch.get_num_threads()
    if config.num_threads is not None:
        # On a shared CPU, one thread per process is often several times faster than two that spin-wait.
        torch.set_num_threads(config.num_threads)
    try:
        run = Path(config.out)
        if is_complete(run):
            check_same_run(run, config)
            if context.is_main:
                print(f"pairless train: {run} is already complete (COMPLETE.json); nothing to do")
            return run
        lock = FolderLock(run) if context.is_main else contextlib.nullcontext()
        # The loop seeds torch's global generator (initial weights, dropout); leave the caller's state alone.
        cuda_devices = [context.device] if context.device.type == "cuda" else []
        with lock, torch.random.fork_rng(devices=cuda_devices), StopRequest() as stop_request:
            return _train(config, context, run, resume, stop_request)
    finally:
        torch.set_num_threads(threads_before)
        distributed.teardown(context)


@dataclass
class Session:
    """What one training session works with (built by :func:`_start`)."""

    config: TrainConfig
    context: distributed.ProcessContext
    run: Path
    data: TrainingData
    order: SampleOrder
    batches: BatchSource
    model: model_module.FourM
    optimizer: torch.optim.AdamW
    slices: list[tuple[int, int]]  # this process's micro-batches of the global batch
    started: float  # time.perf_counter() when the session began

    @property
    def sharded(self) -> bool:
        """Whether the model is sharded over the processes (FSDP; :func:`distributed.shard_model`)."""
        return self.config.distributed == "fsdp" and self.context.is_distributed


@dataclass
class Progress:
    """Where the run stands: what a checkpoint stores and a resumed session starts from."""

    step: int = 0
    tokens_seen: int = 0
    elapsed_before: float = 0.0  # wall seconds of the earlier sessions
    loss: float = float("nan")  # the last step's mean loss
    modality_tokens: np.ndarray | None = None  # int64 [M]: valid input + target tokens seen per modality


def budget_spent(config: TrainConfig, modalities: list[str], progress: Progress) -> int:
    """Tokens counted against ``total_tokens``: all tokens seen, or those of ``budget_modalities``."""
    if config.budget_modalities is None:
        return progress.tokens_seen
    missing = [name for name in config.budget_modalities if name not in modalities]
    if missing:
        raise ConfigError(f"budget_modalities: {', '.join(missing)} not among the trained modalities "
                          f"({', '.join(modalities)})")
    return int(sum(progress.modality_tokens[modalities.index(name)] for name in config.budget_modalities))


def _train(config: TrainConfig, context: distributed.ProcessContext, run: Path, resume: bool,
           stop_request: StopRequest) -> Path:
    session = _start(config, context, run)
    progress = _restore(session, find_resume_checkpoint(run, config, resume, context))
    network = distributed.wrap_model(session.model, context)
    log = RunLog(run, config, progress.step, context.is_main)
    if context.is_main:
        write_config(run, config)
        if session.data.paired_ids:  # which samples kept both modalities of a withheld pair
            atomic_write_json(run / PAIRED_IDS_FILE, session.data.paired_ids)
    def spent() -> int:
        return budget_spent(config, session.data.modalities, progress)

    bar = tqdm(total=config.total_tokens, initial=spent(), unit="tok", unit_scale=True,
               disable=None if context.is_main else True, desc=f"train {run.name}")
    steps_this_session, last_saved, stopped_by = 0, progress.step, 0
    window_tokens, window_start = 0, time.perf_counter()
    try:
        while spent() < config.total_tokens:
            if config.stop_after_steps is not None and steps_this_session >= config.stop_after_steps:
                break
            before = spent()
            stats, grad_norm, lr, step_tokens = _step(session, network, progress, stop_request)
            steps_this_session += 1
            window_tokens += step_tokens
            bar.update(spent() - before)
            if progress.step % config.log_every == 0 or spent() >= config.total_tokens:
                speed = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                log.write(step=progress.step, tokens=progress.tokens_seen, loss=progress.loss,
                          losses=stats.modality_means(session.data.modalities), lr=lr, grad_norm=grad_norm,
                          tokens_per_second=speed, seconds=_wall_seconds(session, progress))
                bar.set_postfix(loss=f"{progress.loss:.3f}", tok_s=f"{speed:,.0f}")
                window_tokens, window_start = 0, time.perf_counter()
            for fraction in config.snapshots:
                if before < fraction * config.total_tokens <= spent():
                    save_snapshot(session, progress, fraction)
            if progress.step % config.checkpoint_every == 0:
                _save(session, progress, "periodic")
                last_saved = progress.step
            if stats.stop > 0:
                # the signal may have reached another process only
                stopped_by = stop_request.signal_number or signal.SIGTERM
                break
    finally:
        bar.close()
        session.batches.close()
        log.close()  # before COMPLETE.json, whose content hash covers the TensorBoard files
    return _finish(session, progress, last_saved, stopped_by, steps_this_session)


def _start(config: TrainConfig, context: distributed.ProcessContext, run: Path) -> Session:
    """The data, its order and masking, the initial model (the same on every process) and its optimizer."""
    started = time.perf_counter()
    data, order = training_data(config)
    slices = micro_batches(config, context)
    masking.check_budget(config.masking, data.specs, data.modalities)
    batches = BatchSource(data, order, masking.Masker(data.specs, config.masking, data.modalities),
                          config.seed, config.num_workers, own=(slices[0][0], slices[-1][1]))
    torch.manual_seed(derive_seed(config.seed, INIT_STREAM))  # the same initial weights on every process
    model = model_module.FourM(config.model, data.specs).to(context.device)
    if config.init_from is not None:
        initialise_from(model, Path(config.init_from))
    if config.distributed == "fsdp":  # before the optimizer: sharding replaces the parameters
        distributed.shard_model(model, context)
    return Session(config, context, run, data, order, batches, model, build_optimizer(model, config), slices,
                   started)


def _restore(session: Session, checkpoint: Path | None) -> Progress:
    """Continue exactly where ``checkpoint`` stopped: weights, AdamW moments, step, tokens, RNG.

    No checkpoint (None): a fresh start.
    """
    modalities, context = session.data.modalities, session.context
    if checkpoint is None:
        return Progress(modality_tokens=np.zeros(len(modalities), dtype=np.int64))
    state = read_state(checkpoint / STATE_FILE)
    weights = model_module.load_model(checkpoint / MODEL_FILE).state_dict()
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
        session.model.load_state_dict(weights)
        session.optimizer.load_state_dict(state.optimizer)
    torch.set_rng_state(state.rng["torch_cpu"])
    progress = Progress(
        step=state.step, tokens_seen=state.tokens_seen,
        elapsed_before=float(state.info.get("wall_seconds", 0.0)),
        loss=float(state.info.get("loss", float("nan"))),
        modality_tokens=np.array([state.info["tokens_per_modality"].get(n, 0) for n in modalities], np.int64))
    threads = state.info.get("threads")
    if threads is not None and session.config.num_threads is None and context.device.type == "cpu":
        # The thread count splits reductions: keep the run's own count so that resuming is bit-identical,
        # whatever the machine's load is now (``train`` restores the caller's count afterwards).
        torch.set_num_threads(int(threads))
    if context.is_main and threads not in (None, torch.get_num_threads()):
        print(f"pairless train: warning: resuming with {torch.get_num_threads()} threads, the run used "
              f"{threads}; the losses will differ from an uninterrupted run in the last bits",
              file=sys.stderr)
    if state.info.get("batches_per_epoch") != session.order.batches_per_epoch:
        raise ValueError(f"{checkpoint}: written with {state.info.get('batches_per_epoch')} batches per "
                         f"epoch, now {session.order.batches_per_epoch} (different shards or batch_size)")
    return progress


def _step(session: Session, network: torch.nn.Module, progress: Progress,
          stop_request: StopRequest) -> tuple[StepStatistics, float, float, int]:
    """One optimizer step on the global batch of ``progress.step``; advances ``progress``.

    Returns the step's statistics (summed over processes), the gradient norm, the learning rate and the
    valid tokens of the global batch.
    """
    config, context, modalities = session.config, session.context, session.data.modalities
    indices, batch = session.batches.get(progress.step)  # the global batch; this process trains on its slices
    lr = learning_rate(config, budget_spent(config, modalities, progress))
    for group in session.optimizer.param_groups:
        group["lr"] = lr
    torch.manual_seed(derive_seed(config.seed, DROPOUT_STREAM, progress.step, context.rank))
    autocast = torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    stats = StepStatistics.zeros(len(modalities), context.device)
    for number, (start, stop) in enumerate(session.slices):
        micro = slice_batch(batch, start, stop).to(context.device)
        # Gradients are all-reduced once per step, on the last micro-batch.
        last = number == len(session.slices) - 1
        if session.sharded:  # FSDP2: reduce-scatter the gradients on the last one only
            network.set_requires_gradient_sync(last)
            sync = contextlib.nullcontext()
        else:
            sync = contextlib.nullcontext() if last or not context.is_distributed else network.no_sync()
        with sync:
            with autocast:
                loss, losses = network(micro)
            stats.add(loss, losses, modalities)
            # DDP averages gradients over processes; accumulation averages over micro-batches.
            (loss / len(session.slices)).backward()
    stats.stop += float(stop_request.signal_number)
    stats = stats.all_reduce(context)
    check_finite(stats, progress.step, indices, session.data.ids, modalities, session.run)
    grad_norm = torch.nn.utils.clip_grad_norm_(session.model.parameters(), config.grad_clip or float("inf"))
    if hasattr(grad_norm, "full_tensor"):  # a sharded model's norm is a DTensor
        grad_norm = grad_norm.full_tensor()
    if not torch.isfinite(grad_norm):
        raise TrainingDiverged(f"step {progress.step}: gradient norm is {float(grad_norm)} (losses were "
                               "finite); "
                               f"batch sample indices {indices.tolist()}; "
                               f"{last_good_checkpoint(session.run)}")
    session.optimizer.step()
    session.optimizer.zero_grad(set_to_none=True)
    step_tokens = batch.num_valid_tokens()
    progress.step += 1
    progress.tokens_seen += step_tokens
    progress.modality_tokens += tokens_per_modality(batch)
    micro_steps = len(session.slices) * context.world_size  # micro-batches per optimizer step, all processes
    progress.loss = float(stats.loss) / micro_steps
    return stats, float(grad_norm), lr, step_tokens


def _wall_seconds(session: Session, progress: Progress) -> float:
    return progress.elapsed_before + time.perf_counter() - session.started


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


def _save(session: Session, progress: Progress, reason: str) -> Path | None:
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
    info = {"wall_seconds": _wall_seconds(session, progress), "reason": reason, "loss": progress.loss,
            "batches_per_epoch": session.order.batches_per_epoch,
            "data_position": list(session.order.position(progress.step)),
            "tokens_per_modality": dict(zip(modalities, progress.modality_tokens.tolist(), strict=True)),
            "world_size": session.context.world_size, "threads": torch.get_num_threads(),
            "config_hash": config_hash(session.config), "distributed": session.config.distributed}
    # a sharded run keeps its optimizer in the per-process shard files
    optimizer = {"state": {}, "param_groups": session.optimizer.state_dict()["param_groups"]} if sharded \
        else session.optimizer.state_dict()
    rng = {"torch_cpu": torch.get_rng_state()}
    state = TrainingState(progress.step, progress.tokens_seen, optimizer, rng, info)
    saved = save_checkpoint(session.run / "checkpoints", state,
                            lambda path: model_module.save_model(path, model, weights),
                            keep=session.config.keep_checkpoints, extra=shards)
    if sharded:
        pending.rmdir()
        distributed.barrier(context)
    return saved


def _finish(session: Session, progress: Progress, last_saved: int, stopped_by: int,
            steps_this_session: int) -> Path:
    """The last checkpoint; then, when the budget is spent, the final weights and ``COMPLETE.json``."""
    config, context, run = session.config, session.context, session.run
    finished = budget_spent(config, session.data.modalities, progress) >= config.total_tokens
    if progress.step != last_saved:
        _save(session, progress, "final" if finished else "stopped")
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
    wall = _wall_seconds(session, progress)
    modalities = session.data.modalities
    mark_complete(run, {"steps": progress.step, "tokens": progress.tokens_seen, "final_loss": progress.loss,
                        "wall_seconds": wall, "world_size": context.world_size,
                        "config_hash": config_hash(config),
                        "tokens_per_modality": dict(zip(modalities, progress.modality_tokens.tolist(),
                                                        strict=True))})
    print(f"pairless train: done, {progress.step} steps, {progress.tokens_seen:,} tokens, "
          f"final loss {progress.loss:.4f}, {wall:.0f} s -> {run}")
    return run
