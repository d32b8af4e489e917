"""``pairless add-modality``: add a modality to a frozen trained model through a light adapter (M2M-style).

A base run was trained without modality X, on token shards that hold it. Only what is specific to X is
trained: its token-embedding rows, its modality-embedding row and its output head (with ``rank``, the rows
and the head are low-rank products, for large vocabularies), on the samples that pair X with one *anchor*
modality the base knows. Batches are masked like 4M training (random input/target subsets over the two), so
that anchor -> X and X -> anchor both teach the adapter. The forward runs through
``torch.func.functional_call`` on the extended model with composite tensors (frozen rows concatenated with
the adapter's), so no frozen weight is in the optimizer and every one stays bit-identical.

Loss: the model's own (``FourM.forward``) plus ``structure_weight`` times M2M's structure-preserving term:
the cosine-similarity matrix (B x B) of the batch's X-only encodings should match that of its anchor-only
encodings (mean squared difference; the anchor side is a fixed target).

OUT, published all at once (``pairless.utils.storage.staged_dir``)::

    OUT/model.safetensors  the merged extended model, a plain FourM (pairless.model.load_model reads it)
    OUT/config.json        the resolved AdapterConfig; its "shards" key is what evaluation reads
    OUT/log.jsonl          one line per logged step: tokens, loss, per-modality losses, structure loss, lr
    OUT/COMPLETE.json      steps, tokens, final loss, parameter counts, frozen_hash == base_hash

A run takes minutes, so there is no resume: a killed run leaves no OUT and starts over when called again.
A complete OUT with the same config is left as it is.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch.func import functional_call
from tqdm import tqdm

from pairless import modalities as registry
from pairless.batch import MaskedBatch, TokenSpec
from pairless.config import Config, ConfigError, validate
from pairless.data.declared import record_declared
from pairless.model import FourM, load_model, save_model
from pairless.model.extend import Adapter, FunctionCaller, extend_model, restricted_state_dict, tensor_hash
from pairless.training.data import INIT_STREAM, MASKING_STREAM, SampleOrder, seeded_generator
from pairless.training.distributed import DEVICE_PATTERN, resolve_device
from pairless.training.masking import Masker, MaskingConfig, check_budget
from pairless.training.packing import assemble
from pairless.training.run import TrainingDiverged
from pairless.utils import storage
from pairless.utils.threads import torch_threads

MODEL_FILE = "model.safetensors"
# Fields that may differ between the config of a finished OUT and a new call that reuses it.
REUSABLE_FIELDS = frozenset({"out", "threads", "log_every", "device"})


class AdapterConfig(Config):
    """One adapter run; saved, resolved (see :func:`resolve_config`), as OUT/config.json."""

    base: Path  # the base run folder, or its model.safetensors
    shards: Path  # token shards holding the new modality and the anchor
    out: Path
    modality: str  # the modality to add
    anchor: str  # a modality of the base model that the training samples pair with it
    split: str = "train"
    total_tokens: int = Field(1_000_000, gt=0)  # valid input + target tokens seen, like training
    batch_size: int = Field(32, ge=2)  # >= 2: the structure term compares samples within a batch
    lr: float = Field(3e-3, gt=0)  # peak: linear warmup, then cosine down to min_lr_fraction * lr
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    min_lr_fraction: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    rank: int | None = Field(None, ge=1)  # None: full rows; r: rows = A (V x r) @ B (r x D), so the head
    structure_weight: float = Field(0.0, ge=0)
    masking: MaskingConfig | None = None  # None: the base run's (its config.json), else the defaults
    seed: int = 0
    precision: Literal["bf16", "fp32"] = "bf16"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None: the current count
    log_every: int = Field(10, ge=1)  # steps

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"{value!r} is not one of auto, cpu, cuda, cuda:N")
        return value

    @model_validator(mode="after")
    def _two_modalities(self) -> AdapterConfig:
        if self.modality == self.anchor:
            raise ValueError(f"anchor: must differ from modality (both are {self.modality!r})")
        return self


def base_paths(base: Path) -> tuple[Path, Path | None]:
    """(the weights file, the run folder whose config.json describes it, or None) of ``base``."""
    base = Path(base)
    weights = base / MODEL_FILE if base.is_dir() else base
    if not weights.is_file():
        raise FileNotFoundError(f"base: {weights} does not exist (a finished run folder or its "
                                f"{MODEL_FILE})")
    return weights, weights.parent if (weights.parent / "config.json").is_file() else None


def resolve_config(config: AdapterConfig) -> AdapterConfig:
    """``config`` with absolute paths and its masking filled in (the base run's, else the defaults)."""
    _, run = base_paths(config.base)
    masking = config.masking
    if masking is None:
        saved = storage.read_json(run / "config.json").get("masking") if run is not None else None
        masking = validate(MaskingConfig, saved, "masking") if isinstance(saved, dict) else MaskingConfig()
    paths = {key: Path(getattr(config, key)).resolve() for key in ("base", "shards", "out")}
    return config.model_copy(update={**paths, "masking": masking})


# ----------------------------------------------------------------------------- the structure term


def pooled(memory: torch.Tensor, valid: torch.Tensor, offset: int = 1) -> torch.Tensor:
    """``(B, D)``: encoder output ``(B, offset + Ni, D)`` averaged over the valid input tokens (the null
    token, the first ``offset`` slots, left out)."""
    weights = valid[:, offset:, None].float()
    return (memory[:, offset:].float() * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def structure_loss(new: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the ``(B, B)`` cosine-similarity matrices of two ``(B, D)`` sets.

    Each set is centred on its batch mean first: pooled encodings share a large common part (the
    modality embedding among it), which would put every cosine near 1 and hide which samples are alike.
    """
    def similarity(x: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(x - x.mean(0), dim=1)
        return unit @ unit.T

    return F.mse_loss(similarity(new), similarity(anchor))


def alone(masker: Masker, tokens: torch.Tensor, name: str) -> MaskedBatch:
    """A batch with every token of ``name`` as input (a sequence's padding left out) and no target."""
    index, spec = masker.modalities.index(name), masker.specs[name]
    slots = masker.slot_modality == index  # (T,)
    values = torch.zeros(tokens.shape[0], slots.numel(), dtype=torch.long)
    values[:, slots] = tokens
    content = values != spec.pad_id if spec.kind == "sequence" else torch.ones_like(values, dtype=torch.bool)
    is_input = slots & content  # (B, T)
    return assemble(masker.modalities, masker.slot_modality, masker.slot_position, is_input,
                    torch.zeros_like(is_input), values, torch.zeros_like(values), spec.num_tokens, 1)


# ----------------------------------------------------------------------------- training


def learning_rate(config: AdapterConfig, tokens_seen: int) -> float:
    """Linear warmup to ``lr``, then cosine down to ``min_lr_fraction * lr`` at ``total_tokens``."""
    peak, floor = config.lr, config.lr * config.min_lr_fraction
    warmup = int(config.warmup_fraction * config.total_tokens)
    if tokens_seen < warmup:
        return peak * (tokens_seen + 1) / (warmup + 1)
    progress = min(1.0, (tokens_seen - warmup) / max(1, config.total_tokens - warmup))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def _check_inputs(config: AdapterConfig, base: FourM, shards) -> tuple[dict[str, TokenSpec], np.ndarray]:
    """The extended model's specs and the shard rows that pair the anchor with the new modality."""
    held = ", ".join(shards.specs)
    for key in ("modality", "anchor"):
        name = getattr(config, key)
        if name not in shards.specs:
            raise ConfigError(f"{key}: {name!r} is not in the token shards {config.shards} (they hold "
                              f"{held})")
    if config.modality in base.modalities:
        raise ConfigError(f"modality: {config.modality!r} is in the base model already (it knows "
                          f"{', '.join(base.modalities)})")
    if config.anchor not in base.modalities:
        raise ConfigError(f"anchor: {config.anchor!r} is not a modality of the base model (it knows "
                          f"{', '.join(base.modalities)})")
    if shards.specs[config.anchor] != base.specs[config.anchor]:
        raise ConfigError(f"anchor: the shards' TokenSpec of {config.anchor!r} differs from the base model's "
                          "(tokenized with other tokenizers?)")
    order = [name for name in shards.specs if name in base.modalities or name == config.modality]
    order += [name for name in base.modalities if name not in order]
    specs = {name: base.specs[name] if name in base.specs else shards.specs[name] for name in order}
    # Real tokens only: pseudo tokens (pairless pseudo-pairs) were generated by some model, not observed.
    both = np.ones(len(shards.ids), dtype=bool)
    for name in (config.anchor, config.modality):
        both &= np.asarray(shards.present[name], dtype=bool) & ~np.asarray(shards.pseudo[name], dtype=bool)
    rows = np.flatnonzero(both)
    if len(rows) < config.batch_size:
        raise ConfigError(f"modality: only {len(rows)} samples of split {config.split!r} have both "
                          f"{config.modality!r} and the anchor {config.anchor!r}; batch_size is "
                          f"{config.batch_size}")
    check_budget(config.masking, specs, [config.anchor, config.modality])
    return specs, rows


@dataclass
class AdapterResult:
    """What :func:`train_adapter` leaves: the merged model, the trained adapter, the COMPLETE.json record."""

    model: FourM
    adapter: Adapter
    summary: dict


def _objective(config: AdapterConfig, model: FourM, adapter: Adapter, masker: Masker,
               tokens: dict[str, torch.Tensor], batch: MaskedBatch):
    """(the objective, the model's loss, its per-modality losses, the structure term or None) of a batch."""
    device, caller = model.mask_token.device, FunctionCaller(model)
    # outside autocast: the low-rank products in fp32, as merge_into computes them
    overrides = {f"model.{key}": value for key, value in adapter.overrides(model).items()}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        loss, losses = functional_call(caller, overrides, ("forward", batch.to(device)))
        if config.structure_weight == 0:
            return loss, loss, losses, None
        new_alone = alone(masker, tokens[config.modality], config.modality).to(device)
        new = pooled(*functional_call(caller, overrides, ("encode", new_alone)), model.input_offset)
        with torch.no_grad():  # the anchor's structure is the target, not something to move
            anchor = pooled(*model.encode(alone(masker, tokens[config.anchor], config.anchor).to(device)),
                            model.input_offset)
        structure = structure_loss(new, anchor)
    return loss + config.structure_weight * structure, loss, losses, structure


def _pair_batches(config: AdapterConfig, shards, rows: np.ndarray, masker: Masker):
    """``step -> (the pair's tokens {name: (B, L)}, the masked batch)``, from a seeded order and masking."""
    order, pair = SampleOrder(len(rows), config.batch_size, config.seed), (config.anchor, config.modality)
    views = torch.tensor([name in pair for name in masker.modalities]).expand(config.batch_size, -1)

    def batch(step: int) -> tuple[dict[str, torch.Tensor], MaskedBatch]:
        indices = rows[order.indices(step)]
        tokens = {name: torch.from_numpy(np.asarray(shards.tokens[name][indices], dtype=np.int64))
                  for name in pair}
        return tokens, masker(tokens, views, seeded_generator(config.seed, MASKING_STREAM, step))

    return batch


def train_adapter(config: AdapterConfig, folder: Path) -> AdapterResult:
    """Train the adapter of a resolved ``config``; writes config.json, log.jsonl and model.safetensors into
    ``folder`` (no lock, no COMPLETE.json: :func:`add_modality` adds those)."""
    from pairless.data.shards import open_shards

    started, folder = time.perf_counter(), Path(folder)
    if config.masking is None:
        raise ValueError("config: resolve it first (resolve_config) so that its masking is set")
    base = load_model(base_paths(config.base)[0])
    shards = open_shards(config.shards, config.split)
    specs, rows = _check_inputs(config, base, shards)
    device, generator = resolve_device(config.device), seeded_generator(config.seed, INIT_STREAM)
    # eval mode: the base is frozen, so its dropout would only add noise to the adapter's gradient
    model = extend_model(base, specs, generator).requires_grad_(False).eval().to(device)
    adapter = Adapter(model, config.modality, config.rank, generator).to(device)
    trainable, total = adapter.num_parameters(), model.num_parameters()
    print(f"pairless add-modality: training {trainable:,} parameters for {config.modality!r} "
          f"({trainable / total:.2%} of the model's {total:,}); every base weight frozen")
    matrices = [parameter for parameter in adapter.parameters() if parameter.dim() >= 2]
    vectors = [parameter for parameter in adapter.parameters() if parameter.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": config.weight_decay},
                                   {"params": vectors, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    masker = Masker(specs, config.masking, model.modalities)
    batches = _pair_batches(config, shards, rows, masker)
    storage.atomic_write_json(folder / "config.json", json.loads(config.model_dump_json()))
    step, tokens_seen, loss_value = 0, 0, float("nan")
    bar = tqdm(total=config.total_tokens, unit="tok", unit_scale=True, disable=None,
               desc=f"add {config.modality}")
    with open(folder / "log.jsonl", "w", encoding="utf-8") as log, bar:
        while tokens_seen < config.total_tokens:
            lr = learning_rate(config, tokens_seen)
            for group in optimizer.param_groups:
                group["lr"] = lr
            tokens, batch = batches(step)
            objective, loss, losses, structure = _objective(config, model, adapter, masker, tokens, batch)
            if not math.isfinite(float(objective.detach())):
                raise TrainingDiverged(f"step {step}: the adapter's loss is {float(objective.detach())} at "
                                       f"lr {lr:.3g}; lower lr")
            objective.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(adapter.parameters(), config.grad_clip or float("inf"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step, loss_value = step + 1, float(loss.detach())
            tokens_seen += batch.num_valid_tokens()
            bar.update(batch.num_valid_tokens())
            if step % config.log_every == 0 or tokens_seen >= config.total_tokens:
                entry = {"step": step, "tokens": tokens_seen, "loss": loss_value,
                         "losses": {name: float(value.detach()) for name, value in losses.items()},
                         "structure_loss": None if structure is None else float(structure.detach()),
                         "lr": lr, "grad_norm": float(grad_norm), "seconds": time.perf_counter() - started}
                log.write(json.dumps(entry) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{loss_value:.3f}", structure=entry["structure_loss"])
    adapter.merge_into(model)
    save_model(folder / MODEL_FILE, model)
    frozen_hash = tensor_hash(restricted_state_dict(model, base.modalities))
    base_hash = tensor_hash(base.state_dict())
    if frozen_hash != base_hash:
        raise RuntimeError("add-modality: a base weight changed during adapter training (a bug)")
    summary = {"steps": step, "tokens": tokens_seen, "final_loss": loss_value,
               "wall_seconds": time.perf_counter() - started, "trainable_parameters": trainable,
               "base_parameters": base.num_parameters(), "model_parameters": total,
               "trainable_fraction": trainable / total, "frozen_hash": frozen_hash, "base_hash": base_hash}
    return AdapterResult(model, adapter, summary)


def _check_same_config(out: Path, config: AdapterConfig) -> None:
    """Refuse a complete ``out`` made with another config, naming the first field that differs."""
    saved = storage.read_json(out / "config.json") if (out / "config.json").is_file() else {}
    difference = storage.first_difference(saved, json.loads(config.model_dump_json()), REUSABLE_FIELDS)
    if difference is not None:
        key, found, wanted = difference
        raise FileExistsError(f"out: {out} holds an adapter run made with {key}={found!r}, this call asks "
                              f"{key}={wanted!r}; choose another --out")


def add_modality(config: AdapterConfig) -> Path:
    """Train the adapter of ``config`` into ``config.out`` (nothing to do if it is complete with this
    config); returns the folder."""
    config = resolve_config(config)
    out = Path(config.out)
    with storage.FolderLock(out):
        if storage.is_complete(out):
            _check_same_config(out, config)
            print(f"pairless add-modality: {out} is already complete (COMPLETE.json); nothing to do")
            return out
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"out: {out} holds files but no finished adapter run; choose another --out")
        record: dict = {}
        # staged_dir writes COMPLETE.json from ``record`` once the block succeeds, then publishes the folder
        with torch_threads(config.threads), storage.staged_dir(out, record) as staging:
            record.update(train_adapter(config, staging).summary)
            record_declared(registry.names(), staging)  # what opens the run knows its declared modalities
    print(f"pairless add-modality: done, {record['steps']} steps, {record['tokens']:,} tokens, final loss "
          f"{record['final_loss']:.4f}, {record['wall_seconds']:.0f} s -> {out}")
    return out
