"""What a training run computes: the FLOPs its model executes, and the throughput a device runs them at.

:func:`forward_flops` counts the matrix multiplications the model really executes for one sample, at the real
token counts: the encoder's and decoder's projections and MLPs, the attention scores and weighted sums over
every query-key pair the kernel computes (the decoder's modality-local mask does not skip any), the
cross-attention's keys and values, the MLP as the architecture builds it (GELU's two matrices, SwiGLU's
three at two thirds of the width), the context projection when the model has one, and the output heads
over the rows they run on (padded to buckets of 256, as :meth:`pairless.model.FourM.forward` pads them). A
training step executes three times the forward (the backward pass computes two matmuls per forward one),
four with activation checkpointing (each block's forward runs again). :func:`ar_generation_flops` counts
left-to-right generation as the sampler runs it with its KV cache (one encoder pass, then one single-query
decoder pass per token). Embedding gathers, norms and the optimizer are not counted: they are small next to
the matmuls at GPU scale, and on the CPU the measured throughput (:func:`measure_cpu`) includes their time.

Throughput: a GPU profile states its peak dense bf16 TFLOPs and assumes a model-FLOPs utilisation (MFU);
the CPU's is measured in a few seconds by timing real training steps (masking, forward, backward, AdamW) of
the run's model on random tokens. Tested against torch's FLOP counter (tests/experiments/test_plan.py; the
generation count in tests/experiments/test_plan_device.py) and against the measured times of the tiny study
(benchmarks/plan_estimate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pairless.batch import TokenSpec
from pairless.model import FourM, ModelConfig
from pairless.model.architecture import swiglu_hidden

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


def gpu_profile(name: str, memory_bytes: int) -> DeviceProfile:
    """The profile of a GPU torch names ``name`` (e.g. "NVIDIA H100 80GB HBM3") with ``memory_bytes`` in all:
    the stated peak and MFU of the profile whose model it names, with its own memory; a GPU of no profile
    gets the H100's figures, and its name says so."""
    upper = name.upper()
    known = next((profile for key, profile in GPU_PROFILES.items() if key.upper() in upper), None)
    label = name if known is not None else f"{name} (no stated peak known: the H100's assumed)"
    base = known or GPU_PROFILES["h100"]
    return DeviceProfile(label, "cuda", base.peak_tflops, base.mfu, memory_bytes / 1e9)


def device_profile(device: torch.device) -> DeviceProfile | None:
    """The profile a plan for ``device`` uses: a CUDA device's (:func:`gpu_profile`); None for the CPU, whose
    throughput the plan measures."""
    if device.type != "cuda":
        return None
    properties = torch.cuda.get_device_properties(device)
    return gpu_profile(properties.name, properties.total_memory)


def _head_rows(target_tokens: int, micro_batch: int, modalities: int) -> float:
    """Rows one sample contributes to the output heads, with each head's rows padded to a bucket."""
    per_modality = micro_batch * target_tokens / max(1, modalities)
    return modalities * HEAD_BUCKET * math.ceil(per_modality / HEAD_BUCKET) / micro_batch


def _mlp_flops(model: ModelConfig) -> int:
    """Matmul FLOPs of one token through one block's MLP: two matrices for GELU, three (at two thirds of
    the width) for SwiGLU."""
    if model.architecture().mlp == "swiglu":
        return 2 * 3 * model.dim * swiglu_hidden(model.dim, model.mlp_ratio)
    return 2 * 2 * model.dim * int(model.dim * model.mlp_ratio)


def _encoder_slots(model: ModelConfig, input_tokens: int) -> int:
    """The encoder's rows for ``input_tokens`` inputs: the null token first when the model has one, else the
    inputs (one empty slot when there are none)."""
    return input_tokens + 1 if model.architecture().null_token else max(1, input_tokens)


def forward_flops(model: ModelConfig, specs: dict[str, TokenSpec], input_tokens: int, target_tokens: int,
                  micro_batch: int = 1, blocks_only: bool = False) -> float:
    """Matmul FLOPs of one sample's forward pass (see the module docstring); ``blocks_only``: the encoder
    and decoder blocks alone (what activation checkpointing recomputes)."""
    architecture = model.architecture()
    dim, mlp = model.dim, _mlp_flops(model)
    encoder = _encoder_slots(model, input_tokens)
    decoder = target_tokens
    encoder_layer = encoder * (2 * 4 * dim * dim + mlp) + 4 * encoder * encoder * dim
    decoder_layer = (decoder * (2 * 6 * dim * dim + mlp) + 2 * encoder * 2 * dim * dim
                     + 4 * decoder * decoder * dim + 4 * decoder * encoder * dim)
    blocks = model.encoder_layers * encoder_layer + model.decoder_layers * decoder_layer
    if blocks_only:
        return float(blocks)
    if architecture.context_projection:
        blocks += 2 * encoder * dim * dim
    vocab_mean = sum(spec.vocab_size for spec in specs.values()) / max(1, len(specs))
    heads = 2 * _head_rows(target_tokens, micro_batch, len(specs)) * dim * vocab_mean
    return float(blocks + heads)


def ar_generation_flops(model: ModelConfig, input_tokens: int, vocab_size: int, steps: int,
                        guided: bool = False) -> float:
    """Matmul FLOPs of generating ``steps`` tokens of a sequence modality left to right for one sample, as
    :func:`pairless.inference.generate.ar_generate` runs it, with its KV cache: one encoder pass over the
    ``input_tokens`` (the null token too, when the model has one; the context projection once), each decoder
    layer's cross-attention keys and values of the encoder output once (``start_cache``), then per generated
    token one decoder pass of a single query (self-attention's q, k, v and output projections, its scores
    and weighted sum over the t + 1 tokens cached so far, cross-attention's query and output projections and
    its scores over the encoder output, the MLP) and the head over the modality's ``vocab_size``. With
    classifier-free guidance every row runs twice (its unconditional twin at the same width).

    A generation stops early when every row of its batch has ended (EOS): ``steps`` is at most the
    modality's length, which the plan counts (an untrained model may never end a caption)."""
    architecture = model.architecture()
    dim, mlp = model.dim, _mlp_flops(model)
    encoder = _encoder_slots(model, input_tokens)
    encoded = model.encoder_layers * (encoder * (2 * 4 * dim * dim + mlp) + 4 * encoder * encoder * dim)
    if architecture.context_projection:
        encoded += 2 * encoder * dim * dim
    encoded += model.decoder_layers * 2 * encoder * 2 * dim * dim  # the cached cross-attention keys, values
    per_token = 2 * 4 * dim * dim + 2 * 2 * dim * dim + mlp + 4 * encoder * dim  # without self-attention
    cached_keys = steps * (steps + 1) // 2  # step t attends to t + 1 cached tokens
    decoded = (model.decoder_layers * (steps * per_token + 4 * dim * cached_keys)
               + steps * 2 * dim * vocab_size)  # the head, one row per step
    return float((encoded + decoded) * (2 if guided else 1))


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
