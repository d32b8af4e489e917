"""One session of ``pairless train``: what it works with (:class:`Session`) and where the run stands
(:class:`Progress`).

The loop (:mod:`pairless.training.train`) builds and advances them; saving and restoring
(:mod:`pairless.training.saving`) writes them into checkpoints and reads them back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pairless import model as model_module
from pairless.config import ConfigError
from pairless.training import distributed
from pairless.training.checkpoint import CheckpointWriter
from pairless.training.config import TrainConfig
from pairless.training.data import BatchSource, SampleOrder, TrainingData


@dataclass
class Session:
    """What one training session works with (built by :func:`pairless.training.train._start`)."""

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
    writer: CheckpointWriter | None = None  # writes its checkpoints (pairless.training.checkpoint)

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


def wall_seconds(session: Session, progress: Progress) -> float:
    """Wall seconds the run has trained: the earlier sessions' and this one's so far."""
    return progress.elapsed_before + time.perf_counter() - session.started
