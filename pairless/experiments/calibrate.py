"""The plan's CPU calibration: short micro-benchmarks of the operations each stage runs, at the shapes it runs
them (``pairless run RECIPE --dry-run`` on this CPU).

A single FLOP rate does not fit every stage here: a tiny transformer's training step, its forward pass at
the evaluation batch under ``inference_mode``, and a small convolutional tokenizer's step run at very
different shares of the CPU's peak (measured: 0.3 TFLOP/s for the tiny model's training step on 2 cores,
under 0.1 for the demo tokenizers' convolutions). So each kind is timed on its own, on random inputs:

- training: real steps (masking, forward, backward, AdamW) of the run's model
  (:func:`pairless.training.compute.measure_cpu`), a FLOP rate per run shape;
- inference: the evaluation's own call (:func:`pairless.inference.evaluate.token_nll`: forward, log-softmax,
  gather) at the evaluation batch, a FLOP rate per model shape;
- tokenizers: seconds per training step of each modality's tokenizer at its batch (times its steps);
- the world: seconds per rendered scene;
- the probes' alignment metrics: seconds per layer at the probe's sample count.

Each is timed after warm-up calls and scored by its fastest repetition (:mod:`pairless.utils.timing`).
Results are cached per process (a plan measures each shape once, however many recipes it plans).
"""

from __future__ import annotations

import functools
import json

import numpy as np
import torch

from pairless.utils.timing import fastest


@functools.cache
def training_rate(shape_json: str, specs_json: str, micro_batch: int, seconds: float,
                  threads: int | None) -> float:
    """FLOP/s of training steps of one run shape (a TrainConfig's shape fields as JSON) on ``specs``."""
    from pairless.training.compute import measure_cpu
    from pairless.training.config import TrainConfig

    config = TrainConfig.model_validate({**json.loads(shape_json), "shards": ".", "out": "."})
    return measure_cpu(config, _specs(specs_json), micro_batch=micro_batch, seconds=seconds, threads=threads)


# Above this many FLOPs per timed call (~3 s here), a model is timed at a reduced depth and batch: a tiny or
# small model's evaluation batch of 128 is 0.1-0.9 TFLOP at the study's shapes, a base model's at the paper
# preset 14 TFLOP and a large one's 49 (a minute per call, five calls, GBs).
MAX_CALL_FLOPS = 1e12


@functools.cache
def inference_rate(model_json: str, specs_json: str, batch_size: int, seconds: float,
                   threads: int | None) -> float:
    """FLOP/s of the evaluation's forward pass (all tokens of one modality in, all of another out) of a
    model shape at ``batch_size``, in bf16 under ``inference_mode`` as evaluation runs it.

    A call over :data:`MAX_CALL_FLOPS` (a base or large model of the paper preset: tens of seconds per call
    and GBs here) is timed on the same model with one encoder and one decoder layer at most 8 samples, as
    :func:`pairless.training.compute.measure_cpu` does for training: the rate per FLOP of the wide matmuls
    barely depends on depth, and the CPU plan of a GPU-scale preset answers in seconds."""
    from pairless.inference.evaluate import token_nll
    from pairless.model import FourM, ModelConfig
    from pairless.training.compute import forward_flops

    specs = _specs(specs_json)
    model_config = ModelConfig.model_validate(json.loads(model_json))
    names = sorted(specs, key=lambda name: (specs[name].kind != "image", -specs[name].num_tokens, name))
    source, target = names[0], names[1] if len(names) > 1 else names[0]
    per_call = forward_flops(model_config, specs, specs[source].num_tokens, specs[target].num_tokens,
                             micro_batch=batch_size) * batch_size
    if per_call > MAX_CALL_FLOPS:  # a base or large model: timed at one layer each side (see the docstring)
        model_config = model_config.model_copy(update={"encoder_layers": 1, "decoder_layers": 1})
        batch_size = min(batch_size, 8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FourM(model_config, specs).eval()
    generator = torch.Generator().manual_seed(0)
    tokens = {name: torch.randint(0, specs[name].vocab_size, (batch_size, specs[name].num_tokens),
                                  generator=generator) for name in {source, target}}

    def forward() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            token_nll(model, tokens, [source], target, specs, tuple(model.modalities))

    per_call = fastest(forward, seconds, threads)
    flops = forward_flops(model_config, specs, specs[source].num_tokens, specs[target].num_tokens,
                          micro_batch=batch_size) * batch_size
    return flops / per_call


@functools.cache
def tokenizer_step_seconds(name: str, world_size: int, settings_json: str, seconds: float,
                           threads: int | None) -> float:
    """Seconds of one training step of ``name``'s tokenizer at its batch (random values at the data's
    size), as :func:`pairless.tokenizers.neural_training.train_neural` runs it (its ``train_step``): bf16
    forward, loss, backward, clip, AdamW. An image batch over :data:`MAX_STEP_PIXELS` (the paper preset's
    128 images of 64x64: two seconds per step here) is timed on fewer images and scaled by the batch: from
    32 images on, a step's cost is linear in it (measured, see the constant)."""
    from pairless import modalities as registry
    from pairless.tokenizers.neural_training import TokenizerTrainConfig, train_step

    settings = TokenizerTrainConfig.model_validate(json.loads(settings_json))
    batch = settings.spatial.batch_size if registry.get(name).kind == "image" else None
    timed = None if batch is None else min(batch, max(2, MAX_STEP_PIXELS // world_size ** 2))
    tokenizer, section, values = build_tokenizer(name, world_size, settings, batch_size=timed)
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=section.lr)
    inputs, targets = tokenizer.prepare(values)
    tokenizer.train()

    def step() -> None:
        train_step(tokenizer, optimizer, inputs, targets, settings.bf16)

    return fastest(step, seconds, threads) * section.batch_size / len(values)


# Above this many pixels per timed tokenizer call, fewer images are timed (the study's presets, 32 images of
# 32x32 per step and 256 per encoding call, are timed as they run). Measured here with the paper preset's
# rgb tokenizer at 64x64: a step costs 21.9 ms per image at 8 images, 14.2 at 32 and 14.9 at 128, so a step
# is timed on at least 32 images and scaled by the batch; encoding runs in chunks of 128 images
# (pairless.tokenizers.base.ENCODE_CHUNK), 2.4-2.5 ms per image at 128 and 256 but 5.2 at 64.
MAX_STEP_PIXELS = 32 * 64 * 64
MAX_ENCODE_PIXELS = 128 * 64 * 64


def build_tokenizer(name: str, world_size: int, settings, batch_size: int | None = None):
    """An untrained tokenizer of an image or vector modality of the registry, its optimizer section and a
    batch of random values (``batch_size``: the section's batch by default); None for text."""
    from pairless import modalities as registry
    from pairless.tokenizers.neural_training import build_spatial, build_vector

    entry = registry.get(name)
    rng = np.random.default_rng(0)
    if entry.kind == "image":
        section = settings.spatial
        shape = (batch_size or section.batch_size, world_size, world_size,
                 *((entry.channels,) if entry.channels else ()))
        values = (rng.integers(0, entry.num_classes, shape) if entry.num_classes
                  else rng.random(shape) * 255 if np.dtype(entry.dtype) == np.uint8
                  else rng.random(shape)).astype(entry.dtype)
        return build_spatial(name, values, settings), section, values
    if entry.kind == "vector":
        section = settings.vector
        values = rng.random((batch_size or section.batch_size, entry.dim)).astype(np.float32)
        return build_vector(name, values, settings), section, values
    return None


@functools.cache
def world_scene_seconds(size: int, threads: int | None, scenes: int = 64) -> float:
    """Seconds per scene of rendering the built-in world at ``size`` (all seven modalities)."""
    from pairless.world.samples import render_world

    return fastest(lambda: render_world(scenes, size=size, seed=0, progress=False), 0.0, threads) / scenes


def _specs(specs_json: str) -> dict:
    from pairless.data.shards import spec_from_dict

    return {entry["name"]: spec_from_dict(entry) for entry in json.loads(specs_json)}


@functools.cache
def encode_sample_seconds(name: str, world_size: int, settings_json: str, threads: int | None,
                          batch_size: int = 256) -> float:
    """Seconds per sample of encoding ``name`` with its tokenizer (untrained: the same operations) in
    batches of ``batch_size`` (fewer images over :data:`MAX_ENCODE_PIXELS`), as tokenization runs it; 0
    for text."""
    from pairless import modalities as registry
    from pairless.tokenizers.neural_training import TokenizerTrainConfig

    settings = TokenizerTrainConfig.model_validate(json.loads(settings_json))
    if registry.get(name).kind == "image":
        batch_size = min(batch_size, max(2, MAX_ENCODE_PIXELS // world_size ** 2))
    built = build_tokenizer(name, world_size, settings, batch_size=batch_size)
    if built is None:
        return 0.0
    tokenizer, _, values = built
    tokenizer.eval()
    return fastest(lambda: tokenizer.encode(values), 0.0, threads) / batch_size


@functools.cache
def encode_sample_flops(name: str, world_size: int, settings_json: str) -> float:
    """FLOPs of encoding one sample of ``name`` with its tokenizer (torch's FLOP counter over a batch of 8;
    for a GPU profile); 0 for text."""
    from torch.utils.flop_counter import FlopCounterMode

    from pairless.tokenizers.neural_training import TokenizerTrainConfig

    settings = TokenizerTrainConfig.model_validate(json.loads(settings_json))
    built = build_tokenizer(name, world_size, settings, batch_size=8)
    if built is None:
        return 0.0
    tokenizer, _, values = built
    tokenizer.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tokenizer.encode(values)
    return counter.get_total_flops() / 8


@functools.cache
def alignment_seconds(samples: int, dim: int, threads: int | None) -> float:
    """Seconds of the probes' alignment metrics between two random ``(samples, dim)`` sets (one layer)."""
    from pairless.inference.probes import alignment_metrics

    if samples < 12:
        return 0.0
    rng = np.random.default_rng(0)
    first, second = (rng.standard_normal((samples, dim)).astype(np.float32) for _ in range(2))
    return fastest(lambda: alignment_metrics(first, second, k=10), 0.0, threads)
