"""The run folder of ``pairless train``: its log, its config, and the rules for resuming it.

- :class:`RunLog` appends one JSON line per logged step to ``RUN/log.jsonl``
  and mirrors the scalars to TensorBoard (``RUN/tb``). On resume, entries
  after the checkpoint's step (written by the interrupted process after its
  last checkpoint) are dropped from both, so the log reads as one run.
- :func:`find_resume_checkpoint` decides where a run starts: fresh, or from
  its newest complete checkpoint; it refuses to mix two different runs in
  one folder.
- :func:`check_finite` stops a diverged run naming the step, batch and modality.
- :class:`StopRequest` turns SIGTERM/SIGINT into "stop after this step, with a checkpoint".
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pairless.model.architecture import OPTION_NAMES
from pairless.training import distributed
from pairless.training.checkpoint import latest_checkpoint
from pairless.utils.storage import atomic_write_json, atomic_write_text, first_difference, read_json

# Fields that may change between a run and its resumption without changing what is trained.
RESUMABLE_FIELDS = frozenset({"out", "stop_after_steps", "log_every", "checkpoint_every", "keep_checkpoints",
                              "device", "num_workers", "num_threads", "micro_batch_size", "compile",
                              "activation_checkpointing", "checkpoint_writes", "device_memory_gb"})


# Paths a run records; older runs recorded them as given (relative to the directory they ran in).
PATH_FIELDS = ("shards", "init_from")

# Options added after runs were saved, with the value that trains exactly as before they existed: a saved
# config.json without one was trained at that value (dotted path -> value).
ADDED_OPTIONS: dict[str, object] = {"fragment.allow_pairs": {}, "fragment.only_paired": False,
                                    "budget_modalities": None, "distributed": "ddp",
                                    "init_from": None, "snapshots": [], "data_order": "global",
                                    "shard_samples": None, "stream_groups": 1,
                                    "loss_weights": {}, "model.modality_init_std": 0.02,
                                    # ml-4m compatibility (pairless.model.architecture): None = the style's
                                    **{f"model.{name}": None for name in OPTION_NAMES},
                                    "model.style": "pairless",
                                    # runs cached before 2026-12-07 masked with the batch stream: their keys
                                    # stay, and every run masked with the sample stream gets a new one
                                    "masking_stream": "batch", "compile": False,
                                    "activation_checkpointing": False, "checkpoint_writes": "auto",
                                    # span masking and whole sequence targets (pairless.training.masking)
                                    "masking.sequence_masking": "prefix", "masking.first_sentinel_id": 4,
                                    "masking.num_sentinels": 16, "masking.whole_sequence_fraction": 0.0}


def _added_option_parents(config: dict):
    """``(section dict, field name, neutral value)`` of each ADDED_OPTIONS entry whose section exists."""
    for dotted, value in ADDED_OPTIONS.items():
        *sections, name = dotted.split(".")
        node = config
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict):
            yield node, name, value


def _with_added_options(saved: dict) -> dict:
    """A saved config.json with every option added since at its neutral value (the resume check)."""
    for node, name, value in _added_option_parents(saved):
        node.setdefault(name, value)
    return saved


def without_added_options(config: dict) -> dict:
    """``config`` without the added options that sit at their neutral value (the runner's cache key)."""
    for node, name, value in _added_option_parents(config):
        if name in node and node[name] == value:
            del node[name]
    return config


def check_same_run(run: Path, config, allowed: frozenset[str] = RESUMABLE_FIELDS) -> None:
    """Raise ValueError naming the first field where ``config`` differs from ``RUN/config.json``."""
    saved_path = run / "config.json"
    if not saved_path.is_file():
        raise ValueError(f"{run}: has no config.json, so it cannot be checked against this config; "
                         f"choose another --out")
    saved = _with_added_options(read_json(saved_path))
    current = json.loads(config.model_dump_json())
    for key in PATH_FIELDS:  # a run recorded with a relative path, resumed with the same one made absolute
        if isinstance(saved.get(key), str) and isinstance(current.get(key), str) and \
                Path(saved[key]).absolute() == Path(current[key]).absolute():
            saved[key] = current[key]
    difference = first_difference(saved, current, allowed)
    if difference is not None:
        key, saved, current = difference
        raise ValueError(f"{run}: was trained with {key}={saved!r}, this config has {key}={current!r}; "
                         f"choose another --out for a different run")


def write_config(run: Path, config) -> None:
    """Save the resolved config next to what it produces."""
    atomic_write_json(run / "config.json", json.loads(config.model_dump_json()))


def find_resume_checkpoint(run: Path, config, resume: bool,
                           context: distributed.ProcessContext) -> Path | None:
    """The checkpoint to continue from (None: start fresh); every process gets rank 0's answer."""
    latest = latest_checkpoint(run / "checkpoints")
    if not resume and (latest is not None or (run / "log.jsonl").exists()):
        where = f"newest checkpoint {latest.name}" if latest else "a log.jsonl"
        raise FileExistsError(f"{run}: holds an earlier run ({where}); pass --resume to continue it, "
                              f"or choose another --out")
    if resume and latest is not None:
        check_same_run(run, config)
    step = distributed.broadcast_int(int(latest.name.split("-")[1]) if latest else -1, context)
    if step < 0:
        return None
    folder = run / "checkpoints" / f"step-{step:08d}"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: rank {context.rank} cannot see the checkpoint rank 0 resumes "
                                "from (the run folder must be on a shared file system)")
    return folder


class RunLog:
    """JSONL + TensorBoard scalars of one run; does nothing on processes other than rank 0."""

    def __init__(self, run: Path, config, start_step: int, is_main: bool):
        self.handle = None
        self.writer = None
        if not is_main:
            return
        path = run / "log.jsonl"
        run.mkdir(parents=True, exist_ok=True)
        if path.exists():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line)["step"] <= start_step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        if not start_step and (run / "tb").exists():
            shutil.rmtree(run / "tb")  # a fresh start: events of a run killed before its first checkpoint
        self.handle = open(path, "a", encoding="utf-8")
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events an interrupted process logged after its last checkpoint.
        self.writer = SummaryWriter(str(run / "tb"), purge_step=start_step + 1 if start_step else None)

    def write(self, *, step: int, tokens: int, loss: float, losses: dict[str, float], lr: float,
              grad_norm: float, tokens_per_second: float, seconds: float | None = None) -> None:
        if self.handle is None:
            return
        entry = {"step": step, "tokens": tokens, "loss": loss, "losses": losses, "lr": lr,
                 "grad_norm": grad_norm, "tokens_per_second": tokens_per_second, "seconds": seconds}
        self.handle.write(json.dumps(entry) + "\n")
        self.handle.flush()
        self.writer.add_scalar("train/loss", loss, step)
        for name, value in losses.items():
            self.writer.add_scalar(f"train/loss_{name}", value, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/grad_norm", grad_norm, step)
        self.writer.add_scalar("train/tokens_per_second", tokens_per_second, step)
        self.writer.add_scalar("train/tokens", tokens, step)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.writer.close()
            self.handle = self.writer = None


class TrainingInterrupted(RuntimeError):
    """SIGTERM or SIGINT arrived: the step in flight was finished and checkpointed; resume continues it."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


class StopRequest:
    """Turns SIGTERM/SIGINT (preemption, Ctrl-C) into a request to stop after the current step.

    A second signal gets the previous handler (Ctrl-C twice still kills at once). Only the main
    thread can install handlers; elsewhere this does nothing.
    """

    def __init__(self):
        self.signal_number = 0
        self.previous: dict[int, object] = {}

    def _handle(self, signal_number, frame) -> None:
        self.signal_number = signal_number
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


class TrainingDiverged(RuntimeError):
    """A loss or gradient norm became NaN/inf; names the step, the batch and the modality."""


@dataclass
class StepStatistics:
    """The losses of one optimizer step, summed over its micro-batches (and, after :meth:`all_reduce`, over
    processes), in float64."""

    loss: torch.Tensor  # () the micro-batches' losses
    loss_not_finite: torch.Tensor  # () micro-batches whose loss is NaN/inf
    modality_sums: torch.Tensor  # (M,) per-modality losses
    modality_counts: torch.Tensor  # (M,) micro-batches that had each modality as a target
    modality_not_finite: torch.Tensor  # (M,) micro-batches whose modality loss is NaN/inf
    # () a stop request's signal number, summed with the rest so every process stops together
    stop: torch.Tensor

    @classmethod
    def zeros(cls, count: int, device: torch.device) -> StepStatistics:
        def zero(*shape):
            return torch.zeros(shape, dtype=torch.float64, device=device)

        return cls(zero(), zero(), zero(count), zero(count), zero(count), zero())

    def add(self, loss: torch.Tensor, losses: dict[str, torch.Tensor], modalities: list[str]) -> None:
        """Add one micro-batch's total loss and per-modality losses."""
        self.loss += loss.detach().double()
        self.loss_not_finite += (~torch.isfinite(loss.detach())).double()
        for name, value in losses.items():
            index = modalities.index(name)
            self.modality_sums[index] += value.detach().double()
            self.modality_counts[index] += 1.0
            self.modality_not_finite[index] += (~torch.isfinite(value.detach())).double()

    def all_reduce(self, context: distributed.ProcessContext) -> StepStatistics:
        """The sums over all processes, on the CPU (one collective; themselves on one process)."""
        parts = [self.loss[None], self.loss_not_finite[None], self.modality_sums, self.modality_counts,
                 self.modality_not_finite, self.stop[None]]
        packed = distributed.all_reduce_sum(torch.cat(parts), context).cpu()
        count = len(self.modality_sums)
        sums, counts, not_finite = packed[2:2 + 3 * count].split(count)
        return StepStatistics(packed[0], packed[1], sums, counts, not_finite, packed[-1])

    def modality_means(self, modalities: list[str]) -> dict[str, float]:
        """Mean loss of each modality that was a target in the step."""
        return {name: float(self.modality_sums[i] / self.modality_counts[i])
                for i, name in enumerate(modalities) if self.modality_counts[i] > 0}


def last_good_checkpoint(run: Path) -> str:
    """Where training can go back to, for error messages."""
    last = latest_checkpoint(run / "checkpoints")
    return f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"


class StepHealth:
    """Whether every step's losses and gradient norm were finite, kept on the device between the steps that
    sync (log, checkpoint, snapshot, the last): the training step never waits for the device for it.

    :meth:`record` flags a step (the fused AdamW then skips it, so the weights stay good); :meth:`check`
    brings the flags to the host and raises :class:`TrainingDiverged` naming the first bad step, its batch
    and the modality, and returns the step's statistics summed over processes.
    """

    def __init__(self, modality_count: int, device: torch.device):
        def zero(*shape):
            return torch.zeros(shape, dtype=torch.float64, device=device)

        self.first_bad = zero() - 1.0  # the first step whose loss or gradient norm was not finite; -1: none
        self.bad_modalities = zero(modality_count)  # per modality: its micro-batches with a non-finite loss
        self.bad_loss = zero()  # 1: that step's total loss was not finite (else only its gradient norm)
        self.bad_norm = zero()  # that step's gradient norm
        self.batches: dict[int, np.ndarray] = {}  # step -> sample indices, since the last check
        # valid tokens per modality of this process's rows since the last check (when a process counts only
        # its own rows: pairless.training.data.PreparedBatch.modality_tokens_global)
        self.own_modality_tokens = np.zeros(modality_count, dtype=np.int64)

    def record(self, stats: StepStatistics, grad_norm: torch.Tensor, step: int,
               indices: np.ndarray) -> torch.Tensor:
        """Flag ``step`` if it is not finite; returns 1.0 / 0.0 on the device (AdamW's ``found_inf``)."""
        loss_bad = ((stats.loss_not_finite > 0) | ~torch.isfinite(stats.loss)
                    | (stats.modality_not_finite > 0).any())
        bad = loss_bad | ~torch.isfinite(grad_norm)
        first = (self.first_bad < 0) & bad
        self.first_bad = torch.where(first, float(step), self.first_bad)
        self.bad_modalities = torch.where(first, stats.modality_not_finite, self.bad_modalities)
        self.bad_loss = torch.where(first, loss_bad.double(), self.bad_loss)
        self.bad_norm = torch.where(first, grad_norm.detach().double(), self.bad_norm)
        self.batches[step] = indices
        return bad.float()

    def check(self, stats: StepStatistics, stop_request: StopRequest, progress, session) -> StepStatistics:
        """Sync: raise if a step since the last check was not finite; set ``progress.loss``; the step's
        statistics summed over processes (with the stop requests of all of them)."""
        context, modalities = session.context, session.data.modalities
        stats.stop += float(stop_request.signal_number)
        reduced = stats.all_reduce(context)
        # every process has the same gradient norm, so the same first step; the modality flags are summed
        count = len(modalities)
        own_tokens = torch.from_numpy(self.own_modality_tokens.astype(np.float64)).to(self.first_bad.device)
        flags = distributed.all_reduce_sum(torch.cat([self.first_bad[None] + 1.0, self.bad_loss[None],
                                                      self.bad_norm[None], self.bad_modalities, own_tokens]),
                                           context).cpu()
        # float64 sums of integers below 2**53: exact
        progress.modality_tokens += flags[3 + count:].numpy().round().astype(np.int64)
        self.own_modality_tokens[:] = 0
        flags = flags[:3 + count] / context.world_size  # each process has the same first step and norm
        micro_steps = len(session.slices) * context.world_size  # micro-batches per optimizer step
        progress.loss = float(reduced.loss) / micro_steps
        batches, self.batches = self.batches, {}
        if flags[0] <= 0:
            return reduced
        step = int(flags[0]) - 1
        indices = batches[step]
        shown = ", ".join(session.data.ids[i] for i in indices[:8]) + (" ..." if len(indices) > 8 else "")
        where = last_good_checkpoint(session.run)
        if flags[1] > 0:
            bad = [name for i, name in enumerate(modalities) if flags[3 + i] > 0] or [
                "(the total; no single modality)"]
            raise TrainingDiverged(f"step {step}: loss of modality {', '.join(bad)} is not finite; "
                                   f"batch sample indices {indices.tolist()} (ids {shown}); "
                                   f"training stopped, {where}")
        raise TrainingDiverged(f"step {step}: gradient norm is {float(flags[2])} (losses were finite); "
                               f"batch sample indices {indices.tolist()} (ids {shown}); "
                               f"training stopped, {where}")
