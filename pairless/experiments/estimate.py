"""The plan's numbers (``pairless run RECIPE --dry-run``): per run its model, batch, budget, memory and
checkpoint disk, and per stage a time from the FLOPs it executes and the device's throughput.

- Token specs: the cached shards' manifest when the shards exist, else what the tokenizer preset makes of
  the world's images (image tokens = (size / downsample)^2, codebook = the product of the FSQ levels) with
  text assumed at 64 tokens over a 2,000-word vocabulary (stated in the plan).
- Training: :func:`pairless.training.compute.training_flops` per sample x samples (the token budget over the
  tokens a sample brings) over the device's throughput; memory from :mod:`pairless.training.memory`.
- Tokenizers: torch's FLOP counter over one training step of each image and vector tokenizer x its steps.
- Evaluation (CE, regions, probes) and generation: forward passes of each run over its samples at the real
  token counts of each direction; ROAR/AR generation counts one decoder pass per step.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pairless import modalities as registry
from pairless.batch import TokenSpec
from pairless.training import compute, memory
from pairless.training.compute import DeviceProfile, forward_flops, training_flops

TEXT_TOKENS, TEXT_VOCAB = 64, 2000  # assumed for text when no shards exist yet


def planned_specs(world_size: int, tokenizer_settings, modalities: list[str],
                  shards: Path | None = None) -> tuple[dict[str, TokenSpec], str]:
    """Token specs of the shards (read, when ``shards`` is complete) or as the tokenizer preset will make
    them; and where they come from."""
    manifest = shards / "manifest.json" if shards is not None else None
    if manifest is not None and manifest.is_file():
        from pairless.data.shards import read_manifest, specs_from_manifest

        return specs_from_manifest(read_manifest(shards), shards), f"from {shards}"
    specs, spatial, vector = {}, tokenizer_settings.spatial, tokenizer_settings.vector
    for name in modalities:
        entry = registry.get(name) if name in registry.names() else None
        if entry is None:
            continue  # a modality declared beside the data and not loaded here: planned without it
        if entry.kind == "image":
            side = world_size // spatial.downsample
            vocab = math.prod(spatial.modality_levels.get(name, spatial.levels))
            specs[name] = TokenSpec(name, "image", side * side, vocab, grid=(side, side))
        elif entry.kind == "vector":
            specs[name] = TokenSpec(name, "vector", vector.num_tokens, math.prod(vector.levels))
        else:
            specs[name] = TokenSpec(name, "sequence", TEXT_TOKENS, TEXT_VOCAB, pad_id=0, bos_id=2, eos_id=3)
    return specs, (f"assumed: images {world_size}px / {spatial.downsample}, text {TEXT_TOKENS} tokens over "
                   f"{TEXT_VOCAB} words (exact once the shards exist)")


@dataclass
class RunEstimate:
    """The plan's numbers for one training run."""

    parameters: int
    specs: dict[str, TokenSpec]
    micro_batch: int
    samples: float  # samples the token budget trains on
    flops: float
    seconds: float
    memory: memory.MemoryEstimate

    def details(self, config, keep: int, image_size: int, available: int | None) -> list[str]:
        mem = self.memory
        tokens = config.masking.input_budget + config.masking.target_budget
        device = f"device {memory.gib(mem.device)}" if mem.device_type == "cuda" else "device -"
        lines = [f"model {config.model.preset}, {self.parameters / 1e6:,.1f}M parameters, "
                f"{config.model.attention} attention; images {image_size}x{image_size}; batch "
                f"{config.batch_size} (micro-batch "
                f"{self.micro_batch}), {config.total_tokens:,} tokens ({tokens} per sample, "
                f"~{self.samples:,.0f} samples), {self.flops / 1e15:,.2f} PFLOP",
                f"memory: host {memory.gib(mem.host)}, {device}; checkpoints "
                f"{memory.gib(mem.checkpoint_file)} x {keep} kept = {memory.gib(mem.checkpoint_file * keep)} "
                f"(+ final weights {memory.gib(mem.checkpoint_file // 3)})"]
        need, kind = memory.needed(mem)
        if available is not None and need > available:
            lines.append(f"DOES NOT FIT: needs {memory.gib(need)} of {kind}, the device has "
                         f"{memory.gib(available)}; " + "; or ".join(
                             memory.advice(config, self.specs, available, device_type=mem.device_type)[:2]))
        return lines


class Throughput:
    """FLOP/s of a device profile; the CPU's measured once per run shape."""

    def __init__(self, profile: DeviceProfile | None, measure_seconds: float = 2.0):
        self.profile = profile
        self.measure_seconds = measure_seconds
        self.measured: dict[str, float] = {}

    def memory(self) -> int:
        """Bytes a run may use: the profile's device memory, or this machine's available host RAM."""
        if self.profile is not None and self.profile.memory_gb:
            return int(self.profile.memory_gb * 1e9)
        return memory.available_memory("cpu")[0]

    @property
    def device_type(self) -> str:
        return self.profile.device_type if self.profile is not None else "cpu"

    def training(self, config, specs: dict[str, TokenSpec], micro_batch: int) -> float:
        if self.profile is not None:
            return self.profile.flops_per_second
        # The rate (FLOP/s) depends on the model's shape and the batch, hardly on which modalities a run
        # trains on: one measurement per shape, whatever its universe, seed or folder.
        shape = config.model_dump_json(include=_SHAPE_FIELDS)
        if shape not in self.measured:
            specs_json = json.dumps([dataclasses.asdict(spec) for spec in specs.values()])
            self.measured[shape] = _measured(shape, micro_batch, self.measure_seconds, specs_json)
        return self.measured[shape]

    def any_rate(self) -> float:
        """For stages without a measurement of their own (tokenizers, inference on the CPU): the best
        measured training rate (larger matmuls and convolutions run nearer the peak than a tiny model)."""
        if self.profile is not None:
            return self.profile.flops_per_second
        return max(self.measured.values()) if self.measured else 2e11


# What the measured rate of a run depends on (its TrainConfig without paths, seeds and budgets).
_SHAPE_FIELDS = {"model", "masking", "precision", "batch_size", "micro_batch_size", "weight_decay", "betas",
                 "base_lr"}


_RATES: dict[tuple, float] = {}  # measured FLOP/s by shape, once per process (every plan shares them)


def _measured(shape_json: str, micro_batch: int, seconds: float, specs_json: str) -> float:
    """The rate of one run shape, measured on ``specs`` the first time the process asks for it."""
    from pairless.data.shards import spec_from_dict
    from pairless.training.config import TrainConfig

    key = (shape_json, micro_batch, seconds)
    if key not in _RATES:
        specs = {entry["name"]: spec_from_dict(entry) for entry in json.loads(specs_json)}
        config = TrainConfig.model_validate({**json.loads(shape_json), "shards": ".", "out": "."})
        _RATES[key] = compute.measure_cpu(config, specs, micro_batch=micro_batch, seconds=seconds)
    return _RATES[key]


def estimate_run(config, specs: dict[str, TokenSpec], throughput: Throughput,
                 budget_factor: float = 1.0) -> RunEstimate:
    """Time and memory of one training run (``budget_factor``: tokens trained per counted budget token)."""
    device_type = throughput.device_type
    available = throughput.memory()
    micro = None
    if config.micro_batch_size == "auto":
        micro = memory.auto_micro_batch(config, specs, available, device_type=device_type)
    workload = memory.workload_of(config, specs, device_type=device_type, micro_batch=micro)
    per_sample_tokens = config.masking.input_budget + config.masking.target_budget
    samples = config.total_tokens * budget_factor / per_sample_tokens
    flops = samples * training_flops(config.model, specs, config.masking.input_budget,
                                     config.masking.target_budget, workload.micro_batch,
                                     workload.activation_checkpointing)
    rate = throughput.training(config, specs, workload.micro_batch)
    return RunEstimate(parameters=memory.parameter_count(config.model, specs), specs=specs,
                       micro_batch=workload.micro_batch, samples=samples, flops=flops,
                       seconds=flops / rate, memory=memory.estimate(workload))


def _direction_tokens(direction: str, specs: dict[str, TokenSpec]) -> tuple[int, int]:
    source, target = direction.split(":")
    inputs = sum(specs[name].num_tokens for name in source.split("+") if name in specs)
    return inputs, specs[target].num_tokens if target in specs else 0


def inference_flops(model_config, specs: dict[str, TokenSpec], directions: list[str], samples: int,
                    passes: int = 1) -> float:
    """Forward FLOPs of ``samples`` per direction, ``passes`` decoder passes each (generation steps)."""
    total = 0.0
    for direction in directions:
        inputs, targets = _direction_tokens(direction, specs)
        if targets:
            per_sample = forward_flops(model_config, specs, inputs, targets, micro_batch=samples)
            total += samples * passes * per_sample
    return total


def tokenizer_flops(world_size: int, tokenizer_settings, modalities: list[str]) -> float:
    """FLOPs of training the image and vector tokenizers (text tokenizers cost no model FLOPs): one step
    of each counted by torch's FLOP counter, times its batch and steps."""
    from torch.utils.flop_counter import FlopCounterMode

    from pairless.tokenizers.train import build_spatial, build_vector

    total, rng = 0.0, np.random.default_rng(0)
    for name in modalities:
        entry = registry.get(name) if name in registry.names() else None
        if entry is None:
            continue
        if entry.kind == "image":
            shape = (2, world_size, world_size, *((entry.channels,) if entry.channels else ()))
            values = (rng.integers(0, entry.num_classes, shape) if entry.num_classes
                      else rng.random(shape)).astype(entry.dtype)
            tokenizer, section = build_spatial(name, values, tokenizer_settings), tokenizer_settings.spatial
        elif entry.kind == "vector":
            values = rng.random((2, entry.dim)).astype(np.float32)
            tokenizer, section = build_vector(name, values, tokenizer_settings), tokenizer_settings.vector
        else:
            continue
        inputs, targets = tokenizer.prepare(values[:1])
        with FlopCounterMode(display=False) as counter:
            outputs, _ = tokenizer(inputs)
            tokenizer.loss(outputs, targets).backward()
        total += counter.get_total_flops() * section.batch_size * tokenizer_settings.steps_for(name, section)
    return total
