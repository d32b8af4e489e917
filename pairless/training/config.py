"""The typed config of one training run (:class:`TrainConfig`, saved as RUN/config.json), apart from the
loop (:mod:`pairless.training.train`) so that the modules the loop uses can read it without importing it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field, field_validator, model_validator

from pairless.config import Config
from pairless.model.attention import resolve_attention
from pairless.model.config import ModelConfig
from pairless.training import distributed
from pairless.training.fragment import FragmentConfig
from pairless.training.masking import MaskingConfig


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
    # samples per forward pass; None = batch_size / processes; "auto" = the largest that fits the memory
    # (pairless.training.memory_fit)
    micro_batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] | None = None
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
    # background threads preparing (masking, pinning) the next batches; None: 2 on a GPU, 0 on a CPU (where
    # a thread would take a core from the step)
    num_workers: int | None = Field(None, ge=0)
    num_threads: int | None = Field(None, ge=1)  # CPU intra-op threads per process; None = torch's default
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # the memory the run may use (GiB of host RAM for a CPU run, of the GPU's for a GPU run), for the fit
    # check and micro_batch_size="auto"; None = detected (pairless.training.memory_fit.available_memory)
    device_memory_gb: float | None = Field(None, gt=0)
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
    # weight of each modality's target loss in the step's loss (a weighted mean over the modalities a batch
    # predicts); modalities not named weigh 1. Empty = 4M's plain mean
    loss_weights: dict[str, float] = {}
    # the masking's random numbers: "sample" = per sample, from (seed, step, sample index), so each process
    # masks only its own slice of a batch; "batch" = one generator per step for the whole batch (runs trained
    # before 2026-12-07; every process masks the whole batch)
    masking_stream: Literal["sample", "batch"] = "sample"
    compile: bool = False  # torch.compile each encoder and decoder block
    activation_checkpointing: bool = False  # recompute each block's activations in the backward
    # "async": a checkpoint is copied to host memory and written by a background thread while training goes
    # on; "sync": written before the next step; "auto": async on a GPU, sync on a CPU (whose cores it shares)
    checkpoint_writes: Literal["auto", "sync", "async"] = "auto"

    @field_validator("snapshots")
    @classmethod
    def _fractions_inside_the_budget(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < fraction < 1.0 for fraction in value):
            raise ValueError(f"each snapshot is a fraction of total_tokens in (0, 1), got {value}")
        return sorted(set(value))

    @field_validator("loss_weights")
    @classmethod
    def _positive_weights(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if not weight > 0:
                raise ValueError(f"loss_weights.{name}: a weight must be > 0, got {weight}")
        return value

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
    def _resolve_attention(self) -> TrainConfig:
        """``model.attention="auto"`` becomes the kernel of the training device, so that the saved config
        (and a cached run's key) names what ran: "explicit" on a CPU, as before the option."""
        if self.model.attention == "auto":
            device = self.device if self.device != "auto" else (
                "cuda" if torch.cuda.is_available() else "cpu")
            kind = resolve_attention("auto", device.split(":")[0])
            self.model = self.model.model_copy(update={"attention": kind})
        return self

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
