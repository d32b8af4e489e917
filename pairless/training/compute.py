"""What a training run computes: the FLOPs its model executes, and the throughput a device runs them at.

:func:`forward_flops` counts the matrix multiplications the model really executes for one sample, at the real
token counts: the encoder's and decoder's projections and MLPs, the attention scores and weighted sums over
every query-key pair the kernel computes (the decoder's modality-local mask does not skip any), the
cross-attention's keys and values, and the output heads over the rows they run on (padded to buckets of
256, as :meth:`pairless.model.FourM.forward` pads them). A training step executes three times the forward
(the backward pass computes two matmuls per forward one), four with activation checkpointing (each block's
forward runs again). Embedding gathers, norms and the optimizer are not counted: they are small next to the
matmuls at GPU scale, and on the CPU the measured throughput (:func:`measure_cpu`) includes their time.

Throughput: a GPU profile states its peak dense bf16 TFLOPs and assumes a model-FLOPs utilisation (MFU);
the CPU's is measured in a few seconds by timing real training steps (masking, forward, backward, AdamW) of
the run's model on random tokens. Tested against torch's FLOP counter (tests/training/test_compute.py) and
against the measured times of the tiny study (benchmarks/plan_estimate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pairless.batch import TokenSpec
from pairless.model import FourM, ModelConfig

HEAD_BUCKET = 256  # rows of an output head are padded to a multiple of this (FourM.forward)


@dataclass(frozen=True)
class DeviceProfile:
    """A device the plan is for: its stated peak and the share of it a run is assumed to reach."""

    name: str
    device_type: str  # "cuda" or "cpu"
    peak_tflops: float  # dense bf16, stated by the vendor (measured for "cpu")
    mfu: float  # assumed model-FLOPs utilisation (1.0 for "cpu": the measured rate already is the run's)
    memory_gb: float | None  # device memory (None: the host's)

    @property
    def flops_per_second(self) -> float:
        return self.peak_tflops * 1e12 * self.mfu

    def describe(self) -> str:
        if self.device_type == "cpu":
            return f"{self.name}: measured {self.peak_tflops:.2f} TFLOP/s on real training steps"
        return (f"{self.name}: {self.peak_tflops:.0f} TFLOP/s dense bf16 (stated) x assumed MFU "
                f"{self.mfu:.2f} = {self.flops_per_second / 1e12:.0f} TFLOP/s, {self.memory_gb:.0f} GB")


# Vendors' dense (no sparsity) bf16 peaks; MFU 0.40 is what a well-fed transformer of this size reaches
# with bf16 and fused kernels (an assumption: not yet measured on a GPU).
GPU_PROFILES = {
    "h100": DeviceProfile("NVIDIA H100 SXM", "cuda", 989.0, 0.40, 80.0),
    "h200": DeviceProfile("NVIDIA H200 SXM", "cuda", 989.0, 0.40, 141.0),
    "a100": DeviceProfile("NVIDIA A100 SXM 80GB", "cuda", 312.0, 0.40, 80.0),
}
PROFILE_NAMES = (*GPU_PROFILES, "cpu")


def _head_rows(target_tokens: int, micro_batch: int, modalities: int) -> float:
    """Rows one sample contributes to the output heads, with each head's rows padded to a bucket."""
    per_modality = micro_batch * target_tokens / max(1, modalities)
    return modalities * HEAD_BUCKET * math.ceil(per_modality / HEAD_BUCKET) / micro_batch


def forward_flops(model: ModelConfig, specs: dict[str, TokenSpec], input_tokens: int, target_tokens: int,
                  micro_batch: int = 1, blocks_only: bool = False) -> float:
    """Matmul FLOPs of one sample's forward pass (see the module docstring); ``blocks_only``: the encoder
    and decoder blocks alone (what activation checkpointing recomputes)."""
    dim, hidden = model.dim, int(model.dim * model.mlp_ratio)
    encoder, decoder = input_tokens + 1, target_tokens  # the null token is always in the encoder
    encoder_layer = 2 * encoder * (4 * dim * dim + 2 * dim * hidden) + 4 * encoder * encoder * dim
    decoder_layer = (2 * decoder * (6 * dim * dim + 2 * dim * hidden) + 2 * encoder * 2 * dim * dim
                     + 4 * decoder * decoder * dim + 4 * decoder * encoder * dim)
    blocks = model.encoder_layers * encoder_layer + model.decoder_layers * decoder_layer
    if blocks_only:
        return float(blocks)
    vocab_mean = sum(spec.vocab_size for spec in specs.values()) / max(1, len(specs))
    heads = 2 * _head_rows(target_tokens, micro_batch, len(specs)) * dim * vocab_mean
    return float(blocks + heads)


def training_flops(model: ModelConfig, specs: dict[str, TokenSpec], input_tokens: int, target_tokens: int,
                   micro_batch: int, activation_checkpointing: bool = False) -> float:
    """FLOPs one sample costs in a training step: forward and backward (and the recomputed blocks)."""
    flops = 3 * forward_flops(model, specs, input_tokens, target_tokens, micro_batch)
    if activation_checkpointing:
        flops += forward_flops(model, specs, input_tokens, target_tokens, micro_batch, blocks_only=True)
    return flops


def measure_cpu(config, specs: dict[str, TokenSpec], *, micro_batch: int, seconds: float = 2.0,
                max_step_flops: float = 3e11, threads: int | None = None) -> float:
    """FLOP/s of real bf16/fp32 training steps of ``config``'s model on this CPU, on random tokens, with
    ``threads`` torch threads (None: the current count): the fastest step after warm-up steps
    (:func:`pairless.utils.timing.fastest`; the first steps run up to 10x slower than the rest).

    A model whose step would take long here is measured with one encoder and one decoder layer and at most
    8 samples (same width, heads, token counts and vocabularies): the rate per FLOP barely depends on depth.
    """
    from pairless.training.masking import Masker
    from pairless.training.train import build_optimizer
    from pairless.utils.timing import fastest

    model_config = config.model
    inputs, targets = config.masking.input_budget, config.masking.target_budget
    step = training_flops(model_config, specs, inputs, targets, micro_batch) * micro_batch
    if step > max_step_flops:
        model_config = model_config.model_copy(update={"encoder_layers": 1, "decoder_layers": 1})
        micro_batch = min(micro_batch, 8)
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FourM(model_config, specs)
    optimizer = build_optimizer(model, config)
    masker = Masker(specs, config.masking)
    tokens = {name: torch.randint(0, spec.vocab_size, (micro_batch, spec.num_tokens), generator=generator)
              for name, spec in specs.items()}
    views = torch.ones(micro_batch, len(specs), dtype=torch.bool)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16")

    def one_step() -> None:
        batch = masker(tokens, views, generator)
        with autocast:
            loss, _ = model(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    flops = training_flops(model_config, specs, inputs, targets, micro_batch) * micro_batch
    return flops / fastest(one_step, seconds, threads)
