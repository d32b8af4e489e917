"""``pairless train``: the training loop (AdamW, warmup + cosine, bf16, checkpoints, resume, DDP).

One run trains one 4M-style model on token shards, with the withheld pairs
of ``fragment`` never co-occurring in any sample. The run folder ``RUN``::

    RUN/config.json          the resolved TrainConfig
    RUN/log.jsonl            one line per logged step (loss, per-modality losses, lr, grad norm, tokens/s)
    RUN/tb/                  TensorBoard scalars
    RUN/checkpoints/step-N/  model.safetensors + state.safetensors + COMPLETE.json (the newest few)
    RUN/model.safetensors    the final weights (pairless.model.load_model reads them)
    RUN/COMPLETE.json        written last: steps, tokens, final loss, wall time

The budget is counted in tokens seen (valid inputs + targets), like 4M; the
learning rate follows it: linear warmup, then cosine down to a floor. The
peak rate scales with the batch like 4M: ``lr = base_lr * batch_size / 256``.
Multi-process: ``torchrun --nproc-per-node 2 -m pairless.train ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from tqdm import tqdm

from pairless import distributed, masking
from pairless import model as model_module
from pairless.checkpoint import MODEL_FILE, STATE_FILE, TrainingState, read_state, save_checkpoint
from pairless.config import Config, ConfigError, apply_overrides, validate
from pairless.fragment import FragmentConfig
from pairless.masking import MaskingConfig
from pairless.model import ModelConfig
from pairless.storage import FolderLock, config_hash, is_complete, mark_complete, read_json
from pairless.train_data import (
    DROPOUT_STREAM,
    INIT_STREAM,
    BatchSource,
    SampleOrder,
    derive_seed,
    load_training_data,
    slice_batch,
    tokens_per_modality,
)
from pairless.train_run import (
    RESUMABLE_FIELDS,
    RunLog,
    StopRequest,
    TrainingDiverged,
    TrainingInterrupted,
    check_finite,
    check_same_run,
    find_resume_checkpoint,
    last_good_checkpoint,
    step_statistics,
    write_config,
)


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
                    raise ValueError(f"fragment.withheld: pair {pair[0]}:{pair[1]} is outside fragment.universe "
                                     f"({name!r} not in {', '.join(universe)})")
            if pair[0] == pair[1]:
                raise ValueError(f"fragment.withheld: pair {pair[0]}:{pair[1]} names one modality twice")
        return self

    @property
    def peak_lr(self) -> float:
        return self.base_lr * self.batch_size / 256

    @property
    def warmup(self) -> int:
        """Warmup length in tokens."""
        return self.warmup_tokens if self.warmup_tokens is not None else int(self.warmup_fraction * self.total_tokens)


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
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel: one pass over each tensor; ~3x faster than the multi-tensor path on CPU (measured in
    # benchmarks/train_throughput.py, which trains with this function), same update up to rounding.
    fused = all(p.device.type in ("cpu", "cuda") for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=config.peak_lr, betas=config.betas, fused=fused)


def micro_batches(config: TrainConfig, context: distributed.ProcessContext) -> list[tuple[int, int]]:
    """(start, stop) of this process's micro-batches inside the global batch."""
    if config.batch_size % context.world_size:
        raise ConfigError(f"batch_size: {config.batch_size} is not divisible by the {context.world_size} processes")
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
            check_same_run(run, config, RESUMABLE_FIELDS)
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


def _train(config: TrainConfig, context: distributed.ProcessContext, run: Path, resume: bool,
           stop_request: StopRequest) -> Path:
    started = time.perf_counter()
    data = load_training_data(config.shards, config.split, config.fragment)
    modalities = data.modalities
    order = SampleOrder(len(data), config.batch_size, config.seed)
    slices = micro_batches(config, context)
    masking.check_budget(config.masking, data.specs, modalities)
    batches = BatchSource(data, order, masking.Masker(data.specs, config.masking, modalities),
                          config.seed, config.num_workers)
    torch.manual_seed(derive_seed(config.seed, INIT_STREAM))  # the same initial weights on every process
    model = model_module.FourM(config.model, data.specs).to(context.device)
    optimizer = build_optimizer(model, config)
    step, tokens_seen, elapsed_before, loss_value = 0, 0, 0.0, float("nan")
    modality_tokens = np.zeros(len(modalities), dtype=np.int64)
    checkpoint = find_resume_checkpoint(run, config, resume, context)
    if checkpoint is not None:  # continue exactly: weights, AdamW moments, step, tokens, RNG
        state = read_state(checkpoint / STATE_FILE)
        model.load_state_dict(model_module.load_model(checkpoint / MODEL_FILE).state_dict())
        optimizer.load_state_dict(state.optimizer)
        torch.set_rng_state(state.rng["torch_cpu"])
        step, tokens_seen = state.step, state.tokens_seen
        elapsed_before = float(state.info.get("wall_seconds", 0.0))
        loss_value = float(state.info.get("loss", float("nan")))
        modality_tokens = np.array([state.info["tokens_per_modality"].get(n, 0) for n in modalities], np.int64)
        threads = state.info.get("threads")
        if threads is not None and config.num_threads is None and context.device.type == "cpu":
            # The thread count splits reductions: keep the run's own count so that resuming is bit-identical,
            # whatever the machine's load is now (``train`` restores the caller's count afterwards).
            torch.set_num_threads(int(threads))
        if context.is_main and threads not in (None, torch.get_num_threads()):
            print(f"pairless train: warning: resuming with {torch.get_num_threads()} threads, the run used {threads}; "
                  f"the losses will differ from an uninterrupted run in the last bits", file=sys.stderr)
        if state.info.get("batches_per_epoch") != order.batches_per_epoch:
            raise ValueError(f"{checkpoint}: written with {state.info.get('batches_per_epoch')} batches per epoch, "
                             f"now {order.batches_per_epoch} (different shards or batch_size)")
    network = distributed.wrap_model(model, context)
    log = RunLog(run, config, step, context.is_main)
    if context.is_main:
        write_config(run, config)
    autocast = torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    micro_steps = len(slices) * context.world_size  # micro-batches per optimizer step, all processes

    def save(reason: str) -> Path | None:
        if not context.is_main:
            return None
        info = {"wall_seconds": elapsed_before + time.perf_counter() - started, "reason": reason, "loss": loss_value,
                "batches_per_epoch": order.batches_per_epoch, "data_position": list(order.position(step)),
                "tokens_per_modality": dict(zip(modalities, modality_tokens.tolist(), strict=True)),
                "world_size": context.world_size, "threads": torch.get_num_threads(),
                "config_hash": config_hash(config)}
        state = TrainingState(step, tokens_seen, optimizer.state_dict(), {"torch_cpu": torch.get_rng_state()}, info)
        return save_checkpoint(run / "checkpoints", state, lambda path: model_module.save_model(path, model),
                               keep=config.keep_checkpoints)

    bar = tqdm(total=config.total_tokens, initial=tokens_seen, unit="tok", unit_scale=True,
               disable=None if context.is_main else True, desc=f"train {run.name}")
    steps_this_session, last_saved, stopped_by = 0, step, 0
    window_tokens, window_start = 0, time.perf_counter()
    try:
        while tokens_seen < config.total_tokens:
            if config.stop_after_steps is not None and steps_this_session >= config.stop_after_steps:
                break
            indices, batch = batches.get(step)  # the global batch; this process trains on `slices` of it
            lr = learning_rate(config, tokens_seen)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(derive_seed(config.seed, DROPOUT_STREAM, step, context.rank))
            stats = torch.zeros(3 + 3 * len(modalities), dtype=torch.float64, device=context.device)
            for number, (start, stop) in enumerate(slices):
                micro = slice_batch(batch, start, stop).to(context.device)
                # Gradients are all-reduced once per step, on the last micro-batch.
                sync = contextlib.nullcontext() if number == len(slices) - 1 or not context.is_distributed \
                    else network.no_sync()
                with sync:
                    with autocast:
                        loss, losses = network(micro)
                    stats += step_statistics(loss, losses, modalities)
                    # DDP averages gradients over processes; accumulation averages over micro-batches.
                    (loss / len(slices)).backward()
            stats[-1] = float(stop_request.signal_number)
            stats = distributed.all_reduce_sum(stats, context).cpu()
            check_finite(stats, step, indices, data.ids, modalities, run)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
            if not torch.isfinite(grad_norm):
                raise TrainingDiverged(f"step {step}: gradient norm is {float(grad_norm)} (losses were finite); "
                                       f"batch sample indices {indices.tolist()}; {last_good_checkpoint(run)}")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_tokens = batch.num_valid_tokens()
            step, steps_this_session = step + 1, steps_this_session + 1
            tokens_seen += step_tokens
            modality_tokens += tokens_per_modality(batch)
            window_tokens += step_tokens
            loss_value = float(stats[0]) / micro_steps
            bar.update(step_tokens)
            if step % config.log_every == 0 or tokens_seen >= config.total_tokens:
                count = len(modalities)
                sums, seen = stats[2:2 + count], stats[2 + count:2 + 2 * count]
                per_modality = {name: float(sums[i] / seen[i]) for i, name in enumerate(modalities) if seen[i] > 0}
                speed = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                log.write(step=step, tokens=tokens_seen, loss=loss_value, losses=per_modality, lr=lr,
                          grad_norm=float(grad_norm), tokens_per_second=speed,
                          seconds=elapsed_before + time.perf_counter() - started)
                bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{speed:,.0f}")
                window_tokens, window_start = 0, time.perf_counter()
            if step % config.checkpoint_every == 0:
                save("periodic")
                last_saved = step
            if stats[-1] > 0:
                stopped_by = stop_request.signal_number or signal.SIGTERM  # the signal may have reached another process
                break
    finally:
        bar.close()
        batches.close()
        log.close()  # before COMPLETE.json, whose content hash covers the TensorBoard files
    finished = tokens_seen >= config.total_tokens
    if step != last_saved:
        save("final" if finished else "stopped")
    if stopped_by and not finished:
        raise TrainingInterrupted(f"stopped by {signal.Signals(stopped_by).name} after step {step} "
                                  f"({tokens_seen:,} of {config.total_tokens:,} tokens), checkpoint written; "
                                  f"continue with --resume", stopped_by)
    if not context.is_main:
        return run
    if not finished:
        print(f"pairless train: stopped after {steps_this_session} steps at step {step} "
              f"({tokens_seen:,} of {config.total_tokens:,} tokens); continue with --resume")
        return run
    model_module.save_model(run / MODEL_FILE, model)  # atomic (pairless.storage)
    wall = elapsed_before + time.perf_counter() - started
    mark_complete(run, {"steps": step, "tokens": tokens_seen, "final_loss": loss_value, "wall_seconds": wall,
                        "tokens_per_modality": dict(zip(modalities, modality_tokens.tolist(), strict=True)),
                        "world_size": context.world_size, "config_hash": config_hash(config)})
    print(f"pairless train: done, {step} steps, {tokens_seen:,} tokens, final loss {loss_value:.4f}, "
          f"{wall:.0f} s -> {run}")
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="a TrainConfig as JSON (flags and --set apply on top)")
    parser.add_argument("--shards", type=Path, help="token shards folder")
    parser.add_argument("--out", type=Path, help="run folder")
    parser.add_argument("--preset", help=f"model preset: {', '.join(model_module.PRESETS)}")
    parser.add_argument("--withhold", action="append", default=[], metavar="A:B",
                        help="a modality pair that never co-occurs in training (repeatable)")
    parser.add_argument("--universe", help="comma-separated modalities used in training (default: all)")
    parser.add_argument("--total-tokens", type=int, help="token budget (valid inputs + targets)")
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set masking.input_budget=32")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Config file, then flags, then ``--set`` overrides; validated with errors naming the field."""
    data = read_json(args.config) if args.config else {}
    for key, value in (("shards", args.shards), ("out", args.out), ("total_tokens", args.total_tokens),
                       ("batch_size", args.batch_size)):
        if value is not None:
            data[key] = str(value) if isinstance(value, Path) else value
    if args.preset:
        data["model"] = ModelConfig.from_preset(args.preset).model_dump(mode="json")
    fragment = data.setdefault("fragment", {})
    if args.withhold:
        pairs = []
        for text in args.withhold:
            parts = text.split(":")
            if len(parts) != 2 or not all(parts):
                raise ConfigError(f"--withhold: expected A:B (e.g. rgb:depth), got {text!r}")
            pairs.append(parts)
        fragment["withheld"] = pairs
    if args.universe:
        fragment["universe"] = [name.strip() for name in args.universe.split(",") if name.strip()]
    return apply_overrides(validate(TrainConfig, data), args.set)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ConfigError, ValueError) as error:
        print(f"pairless train: {error}", file=sys.stderr)
        return 2
    try:
        train(config, resume=args.resume)
    except TrainingInterrupted as error:
        print(f"pairless train: {error}", file=sys.stderr)
        return 128 + error.signal_number
    except (TrainingDiverged, ConfigError, ValueError, FileExistsError, FileNotFoundError, RuntimeError) as error:
        print(f"pairless train: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
