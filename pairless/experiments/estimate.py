"""The plan's numbers (``pairless run RECIPE --dry-run``): per run its model, batch, budget, memory and
checkpoint disk, and per stage a time from the work it executes and the device's throughput.

- Token specs: the cached shards' manifest when the shards exist, else what the tokenizer preset makes of
  the data's images (image tokens = (size / downsample)^2, codebook = the product of the FSQ levels) with
  text assumed at 64 tokens over a 2,000-word vocabulary (stated in the plan).
- Training: :func:`pairless.training.compute.training_flops` per sample x samples (the token budget over the
  tokens a sample brings) over the training rate; memory from :mod:`pairless.training.memory`.
- Tokenizers: on the CPU, a few real training steps of each image and vector tokenizer timed at its batch,
  x its steps; on a GPU profile, torch's FLOP counter over one step x its steps.
- Tokenizing: each tokenizer's encoder timed (CPU) or counted (GPU) per sample, x the samples with the
  modality; the world: scenes rendered and timed.
- Evaluation, regions, probes, generation, unpaired analyses, pseudo-pairs: the forward passes the runner
  makes (:mod:`pairless.experiments.inference_work`) over the inference rate (on the CPU, the evaluation's
  own forward timed at the evaluation batch), plus model loads and figures.

Throughput on the CPU: :mod:`pairless.experiments.calibrate` (each kind of operation timed at its
shapes); on a GPU profile, its stated peak x an assumed MFU for every FLOP.
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
from pairless.experiments import calibrate
from pairless.modalities import Pair
from pairless.training import memory, memory_fit
from pairless.training.compute import DeviceProfile, forward_flops, training_flops

TEXT_TOKENS, TEXT_VOCAB = 64, 2000  # assumed for text when no shards exist yet


def planned_specs(world_size: int, tokenizer_settings, modalities: list[str],
                  shards: Path | None = None, data: Path | None = None) -> tuple[dict[str, TokenSpec], str]:
    """Token specs of the shards (read, when ``shards`` is complete), of a user's folder ``data`` as its
    tokenizers will make them (:mod:`pairless.experiments.folder_specs`), or as the tokenizer preset will
    make them of the world; and where they come from."""
    manifest = shards / "manifest.json" if shards is not None else None
    if manifest is not None and manifest.is_file():
        from pairless.data.shards import read_manifest, specs_from_manifest

        return specs_from_manifest(read_manifest(shards), shards), f"from {shards}"
    if data is not None:
        from pairless.experiments.folder_specs import folder_specs

        found = folder_specs(data, tokenizer_settings, modalities)
        if found is not None and found[0]:
            return found
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
            options = memory_fit.advice(config, self.specs, available, device_type=mem.device_type)
            lines.append(f"DOES NOT FIT: needs {memory.gib(need)} of {kind}, the device has "
                         f"{memory.gib(available)}; " + "; or ".join(options[:2]))
        return lines


class Throughput:
    """Where each stage's seconds come from: a GPU profile's rate (stated peak x assumed MFU) for every
    FLOP, or this CPU's timings of each kind of operation at its shapes (:mod:`pairless.experiments.
    calibrate`), measured with ``threads`` torch threads (None: the current count), as the run will use."""

    def __init__(self, profile: DeviceProfile | None, measure_seconds: float = 2.0,
                 threads: int | None = None):
        self.profile = profile
        self.measure_seconds = measure_seconds
        self.threads = threads
        self.measured: dict[str, float] = {}

    def memory(self) -> int:
        """Bytes a run may use: the profile's device memory, or this machine's available host RAM."""
        if self.profile is not None and self.profile.memory_gb:
            return int(self.profile.memory_gb * 1e9)
        return memory_fit.available_memory("cpu")[0]

    @property
    def device_type(self) -> str:
        return self.profile.device_type if self.profile is not None else "cpu"

    def describe_threads(self) -> str:
        import torch

        return f"{self.threads or torch.get_num_threads()} torch threads"

    def load_note(self) -> str:
        """A note when the CPU is busy: the timings are slowed too. The fastest of repeated timings does not
        undo it, since a step of two torch threads stalls whenever another process takes one of the cores:
        the tiny model's training rate, 0.36 TFLOP/s alone here, was timed at 0.27-0.30 beside a nice-10
        job, 0.13 beside a nice-0 matmul loop and 0.03-0.12 beside other tiny training."""
        import os

        if self.profile is not None or not hasattr(os, "getloadavg"):
            return ""
        load, cores = os.getloadavg()[0], len(os.sched_getaffinity(0))
        if load <= cores + 0.5:
            return ""
        return (f"note: the CPU is busy (load average {load:.1f} on {cores} cores): the other work slowed "
                "the timings as well, so these times are longer than on a machine the run has to itself; "
                "plan on a quiet machine for times that hold there")

    def training(self, config, specs: dict[str, TokenSpec], micro_batch: int) -> float:
        if self.profile is not None:
            return self.profile.flops_per_second
        # The rate (FLOP/s) depends on the model's shape and the batch, hardly on which modalities a run
        # trains on: one measurement per shape, whatever its universe, seed or folder.
        shape = config.model_dump_json(include=_SHAPE_FIELDS)
        specs_json = json.dumps([dataclasses.asdict(spec) for spec in specs.values()])
        rate = calibrate.training_rate(shape, specs_json, micro_batch, self.measure_seconds, self.threads)
        self.measured[f"train {config.model.preset}"] = rate
        return rate

    def inference(self, model_config, specs: dict[str, TokenSpec], batch_size: int) -> float:
        """FLOP/s of evaluation and generation passes of a model shape at ``batch_size``."""
        if self.profile is not None:
            return self.profile.flops_per_second
        specs_json = json.dumps([dataclasses.asdict(spec) for spec in specs.values()])
        rate = calibrate.inference_rate(model_config.model_dump_json(), specs_json, batch_size,
                                        self.measure_seconds / 2, self.threads)
        self.measured[f"inference {model_config.preset}"] = rate
        return rate

    def work_seconds(self, work, config) -> float:
        """Seconds of an inference stage's work (pairless.experiments.inference_work): its FLOPs over the
        inference rate of each model, plus its fixed work (model loads, figures drawn)."""
        seconds = sum(flops / self.inference(model, specs, config.eval_batch_size)
                      for model, specs, flops in work.flops.values())
        for samples, dim, count in work.alignments:  # the probes' metrics: kNN, FOSCTTM, CKA (N x N)
            seconds += count * calibrate.alignment_seconds(samples, dim, self.threads)
        return seconds + work.loads * LOAD_SECONDS + work.figures * FIGURE_SECONDS

    def inference_seconds(self, work, model_config, specs, batch_size: int) -> float:
        return sum(flops / self.inference(model, run_specs, batch_size)
                   for model, run_specs, flops in work.flops.values()) + work.loads * LOAD_SECONDS

    def tokenizers(self, world_size: int, settings, modalities: list[str]) -> float:
        """Seconds of training every image and vector tokenizer (text tokenizers train in well under a
        second): on the CPU, each one's measured step time x its steps; on a GPU, its FLOPs."""
        if self.profile is not None:
            return tokenizer_flops(world_size, settings, modalities) / self.profile.flops_per_second
        total = 0.0
        for name in modalities:
            entry = registry.get(name) if name in registry.names() else None
            if entry is None or entry.kind not in ("image", "vector"):
                continue
            section = settings.spatial if entry.kind == "image" else settings.vector
            step = calibrate.tokenizer_step_seconds(name, world_size, settings.model_dump_json(),
                                                    self.measure_seconds / 4, self.threads)
            total += step * settings.steps_for(name, section)
        return total

    def world(self, num_scenes: int, size: int) -> float:
        """Seconds of rendering the built-in world (on the CPU, whatever the profile)."""
        return num_scenes * calibrate.world_scene_seconds(size, self.threads)

    def tokenize(self, plan, settings, specs: dict[str, TokenSpec], size: int | None = None) -> float:
        """Seconds of tokenizing every sample of the data: each image or vector tokenizer's encoder over
        the samples that hold its modality, timed on an untrained tokenizer at the data's image ``size``
        (default: the world's) (on a GPU profile: its counted FLOPs)."""
        config = plan.config
        size = size or config.world.size
        total = 0.0
        for name in specs:
            entry = registry.get(name) if name in registry.names() else None
            if entry is None or entry.kind not in ("image", "vector"):
                continue
            count = sum(_samples_with(config, split, name) for split in ("train", "val"))
            settings_json = settings.model_dump_json()
            if self.profile is not None:
                per_sample = (calibrate.encode_sample_flops(name, size, settings_json)
                              / self.profile.flops_per_second)
            else:
                per_sample = calibrate.encode_sample_seconds(name, size, settings_json,
                                                             self.threads)
            total += count * per_sample
        return total


# Fixed work of the inference stages, per-device constants of this 2-core CPU (timed here, warm, 3 times
# each, beside other work: loading a tiny run's model and opening its shards 0.06-0.16 s; drawing an
# 8-row, 4-column grid with matplotlib 0.27-0.39 s)
LOAD_SECONDS = 0.15
FIGURE_SECONDS = 0.4


def _samples_with(config, split: str, name: str) -> int:
    from pairless.experiments.inference_work import split_counts

    return split_counts(config, split, [name])


# What the measured rate of a run depends on (its TrainConfig without paths, seeds and budgets).
_SHAPE_FIELDS = {"model", "masking", "precision", "batch_size", "micro_batch_size", "weight_decay", "betas",
                 "base_lr"}


def sample_tokens(config, specs: dict[str, TokenSpec], present: dict[str, np.ndarray] | None = None,
                  train_samples: int = 1) -> float:
    """The tokens a training sample of ``config`` brings on average (the budget counts these): its input +
    target budget, or fewer when its view holds fewer tokens. A sample's view is the modalities it has
    (``present``: the user folder's train listing; None: the world's ``train_samples`` scenes, every one
    with every modality) inside the run's universe, less one side of each withheld pair it holds both of
    (either side, as often), unless it is one of the ``k`` samples ``fragment.allow_pairs`` lets keep both;
    with ``fragment.only_paired`` only those samples are trained on. A zero-shot run on two modalities
    brings one modality's tokens per sample: twice the steps; its paired-only baseline brings both."""
    budget = config.masking.input_budget + config.masking.target_budget
    universe = [name for name in specs if not config.fragment.universe or name in config.fragment.universe]
    if not universe:
        return float(budget)
    count = len(next(iter(present.values()))) if present else max(1, train_samples)
    has = {name: (np.asarray(present[name], bool) if present and name in present
                  else np.full(count, present is None)) for name in universe}
    available = sum(has[name] * float(specs[name].num_tokens) for name in universe)
    allowed = {frozenset(Pair.parse(key)): number for key, number in config.fragment.allow_pairs.items()}
    trained = np.zeros(count, bool) if config.fragment.only_paired else np.ones(count, bool)
    for first, second in config.fragment.withheld:
        if first in has and second in has:
            both = has[first] & has[second]
            # which k samples keep both does not change the average much: the first k that have both
            kept = np.zeros(count, bool)
            kept[np.flatnonzero(both)[:allowed.get(frozenset((first, second)), 0)]] = True
            trained |= kept
            split = both & ~kept
            available = available - split * (specs[first].num_tokens + specs[second].num_tokens) / 2
    brought = np.minimum(budget, available) * np.ones(count)
    brought = brought[trained & (brought > 0)]
    return float(brought.mean()) if len(brought) else float(budget)


def estimate_run(config, specs: dict[str, TokenSpec], throughput: Throughput,
                 budget_factor: float = 1.0, per_sample_tokens: float | None = None) -> RunEstimate:
    """Time and memory of one training run (``budget_factor``: tokens trained per counted budget token;
    ``per_sample_tokens``: what a sample brings, :func:`sample_tokens`; default the full budget)."""
    device_type = throughput.device_type
    available = throughput.memory()
    micro = None
    if config.micro_batch_size == "auto":
        micro = memory_fit.auto_micro_batch(config, specs, available, device_type=device_type)
    workload = memory.workload_of(config, specs, device_type=device_type, micro_batch=micro)
    if per_sample_tokens is None:
        per_sample_tokens = config.masking.input_budget + config.masking.target_budget
    # a step's compute is the full budget's (batches are padded to it) whatever a sample brings
    samples = config.total_tokens * budget_factor / per_sample_tokens
    flops = samples * training_flops(config.model, specs, config.masking.input_budget,
                                     config.masking.target_budget, workload.micro_batch,
                                     workload.activation_checkpointing)
    rate = throughput.training(config, specs, workload.micro_batch)
    return RunEstimate(parameters=memory.parameter_count(config.model, specs), specs=specs,
                       micro_batch=workload.micro_batch, samples=samples, flops=flops,
                       seconds=flops / rate, memory=memory.estimate(workload))


def estimate_adapter(stage, base, specs: dict[str, TokenSpec], throughput: Throughput) -> tuple[float, float]:
    """(FLOPs, seconds) of an adapter stage (:mod:`pairless.training.adapter`) on the frozen run ``base``
    (its TrainConfig; ``specs``: its modalities and the added one): per sample, the base model's forward at
    the base run's budgets over the anchor and the new modality, and the gradients of its activations (the
    frozen weights get none: two forward passes, not three); with the structure term, the new modality's
    encoding with its gradients and the anchor's without (three and one encoder passes)."""
    masking = base.masking
    brought = min(masking.input_budget + masking.target_budget,
                  specs[stage.anchor].num_tokens + specs[stage.modality].num_tokens)
    batch = base.batch_size
    per_sample = 2 * forward_flops(base.model, specs, masking.input_budget, masking.target_budget, batch)
    if stage.structure_weight:
        per_sample += (3 * forward_flops(base.model, specs, specs[stage.modality].num_tokens, 0, batch)
                       + forward_flops(base.model, specs, specs[stage.anchor].num_tokens, 0, batch))
    flops = stage.total_tokens / brought * per_sample
    return flops, flops / throughput.training(base, specs, batch)


def tokenizer_flops(world_size: int, tokenizer_settings, modalities: list[str]) -> float:
    """FLOPs of training the image and vector tokenizers (text tokenizers cost no model FLOPs): one step
    of each counted by torch's FLOP counter, times its batch and steps."""
    from torch.utils.flop_counter import FlopCounterMode

    from pairless.tokenizers.neural_training import build_spatial, build_vector

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
