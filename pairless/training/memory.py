"""The memory a training run needs, predicted before it starts (the machine side, the fit check and the
out-of-memory advice, is :mod:`pairless.training.memory_fit`).

:func:`estimate` counts, per process, the bytes of every part of a run: fp32 weights, their bf16 copies that
autocast keeps for the backward pass, fp32 gradients, AdamW's two moments, the activations one micro-batch
saves for its backward pass (for each attention kind, with and without activation checkpointing), the
runtime (Python, torch, the data) and what a checkpoint save adds. For a CPU run all of it is host memory;
for a GPU run the training state and activations are device memory and the host holds the runtime plus, at a
save, one tensor at a time (:func:`pairless.utils.tensor_files.atomic_write_safetensors`).

The activation count is per token and layer, from what each operation keeps for its backward pass:

- a block's input (fp32, kept by its layer norm) and the bf16 copy of each norm's output fed to a matmul;
- q, k, v and the attention output (bf16); the MLP's hidden activations before and after GELU (bf16);
- ``explicit`` attention keeps its probabilities ``(heads, queries, keys)``: bf16 on the CPU, fp32 plus a
  bf16 copy on CUDA (autocast runs softmax in fp32 there); ``sdpa`` keeps one log-sum-exp per head instead;
- with activation checkpointing only each block's input is kept, and one block's activations are rebuilt
  at a time in the backward pass.

tests/training/test_memory.py holds the prediction against the measured peak of a short CPU run.
"""

from __future__ import annotations

from dataclasses import dataclass

from pairless.batch import TokenSpec
from pairless.model import ModelConfig
from pairless.model.architecture import swiglu_hidden
from pairless.model.attention import resolve_attention

GIB = 1024**3
# Python, torch and its allocator, the shards' index, tqdm and TensorBoard: the resident memory of a
# ``pairless train`` process before its model exists (0.4-0.45 GiB measured here on the CPU).
RUNTIME_BYTES = int(0.45 * GIB)
# Kernel workspace and allocator fragmentation on CUDA: a share of the rest kept free.
CUDA_HEADROOM = 0.10


@dataclass(frozen=True)
class Workload:
    """What a run's memory depends on, per process."""

    model: ModelConfig
    specs: dict[str, TokenSpec]
    input_tokens: int  # encoder inputs per sample (the masking input budget)
    target_tokens: int  # decoder targets per sample
    micro_batch: int  # samples per forward pass on one process
    precision: str = "bf16"
    device_type: str = "cpu"  # "cpu" or "cuda"
    activation_checkpointing: bool = False
    processes: int = 1
    sharded: bool = False  # FSDP: weights, gradients and moments split over the processes

    @property
    def vocab_total(self) -> int:
        return sum(spec.vocab_size for spec in self.specs.values())


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each part of a run on one process, and where they live."""

    parameters: int
    weights: int  # fp32 (this process's share when sharded)
    weight_copies: int  # bf16 copies of the matrices that autocast keeps for the backward pass
    gradients: int
    optimizer: int  # AdamW exp_avg + exp_avg_sq
    activations: int  # one micro-batch's saved activations plus the backward pass's working set
    runtime: int  # the process before its model exists
    save: int  # what a checkpoint save adds on the host
    checkpoint_file: int  # bytes of one checkpoint on disk (weights + training state)
    device_type: str
    micro_batch: int

    @property
    def training_state(self) -> int:
        return self.weights + self.weight_copies + self.gradients + self.optimizer

    @property
    def device(self) -> int:
        """Peak device memory of a GPU run (0 for a CPU run: everything is host memory)."""
        if self.device_type == "cpu":
            return 0
        return int((self.training_state + self.activations) * (1 + CUDA_HEADROOM))

    @property
    def host(self) -> int:
        """Peak host memory: a CPU run holds everything there; a GPU run its runtime and a save's tensor."""
        if self.device_type == "cpu":
            return self.runtime + self.training_state + self.activations + self.save
        return self.runtime + self.save


def _mlp_shape(model: ModelConfig) -> tuple[int, int]:
    """(hidden width, number of matrices) of a block's MLP: GELU's two, or SwiGLU's three 2/3 as wide."""
    if model.architecture().mlp == "swiglu":
        return swiglu_hidden(model.dim, model.mlp_ratio), 3
    return int(model.dim * model.mlp_ratio), 2


def linear_parameters(model: ModelConfig) -> int:
    """Parameters of the blocks' matrices (what autocast copies to bf16), biases excluded."""
    dim = model.dim
    hidden, matrices = _mlp_shape(model)
    encoder = 4 * dim * dim + matrices * dim * hidden
    decoder = encoder + 4 * dim * dim  # plus cross-attention: q, kv (2 D^2), proj
    context = dim * dim if model.architecture().context_projection else 0
    return model.encoder_layers * encoder + model.decoder_layers * decoder + context


def parameter_count(model: ModelConfig, specs: dict[str, TokenSpec]) -> int:
    """The exact parameter count of ``FourM(model, specs)`` (tested against the built model)."""
    architecture = model.architecture()
    dim = model.dim
    hidden, matrices = _mlp_shape(model)
    vocab, modalities = sum(spec.vocab_size for spec in specs.values()), len(specs)
    norm = dim * (2 if model.bias else 1)
    mlp_biases = (matrices - 1) * hidden + dim
    encoder_block = 2 * norm + (3 * dim + dim + mlp_biases if model.bias else 0)
    decoder_block = 3 * norm + (3 * dim + dim + mlp_biases + 3 * dim + dim if model.bias else 0)
    if architecture.context_projection:
        decoder_block += norm  # each decoder layer's norm of the context
    count = (linear_parameters(model) + model.encoder_layers * encoder_block
             + model.decoder_layers * decoder_block)
    count += vocab * dim + modalities * dim + dim  # token table, modality embeddings, mask token
    count += dim if architecture.null_token else 0
    count += dim if architecture.context_projection else 0  # the projection's bias
    count += vocab * dim if architecture.decoder_token_table else 0
    count += modalities * dim if architecture.separate_decoder_modalities else 0
    count += 2 * norm  # encoder and decoder final norms
    count += vocab * dim + (vocab if architecture.head_bias else 0)  # output heads
    return count


def _attention_bytes(workload: Workload, queries: int, keys: int) -> int:
    """Bytes one attention layer keeps per sample for its backward pass besides q, k, v and its output."""
    heads = workload.model.heads
    if resolve_attention(workload.model.attention, workload.device_type) == "sdpa":
        return 4 * heads * queries  # one fp32 log-sum-exp per head and query
    probability = 2 if workload.precision == "bf16" else 4
    if workload.device_type == "cuda" and workload.precision == "bf16":
        probability = 4 + 2  # autocast's softmax runs in fp32; the matmul after it keeps a bf16 copy
    return probability * heads * queries * keys


def activation_bytes(workload: Workload) -> int:
    """Saved activations of one micro-batch plus the backward pass's working set, per process."""
    model = workload.model
    architecture = model.architecture()
    dim = model.dim
    hidden, matrices = _mlp_shape(model)
    low = 2 if workload.precision == "bf16" else 4  # bytes of a matmul input/output
    encoder = workload.input_tokens + (1 if architecture.null_token else 0)
    decoder = workload.target_tokens
    # norm input (fp32), its cast, the hidden activations: GELU's before/after; SwiGLU's gate, its SiLU,
    # the value and their product
    mlp = 4 * dim + low * dim + (2 if matrices == 2 else 4) * low * hidden
    attention = 4 * dim + low * dim + low * 3 * dim + low * dim  # norm input, cast, q k v, output
    cross = 4 * dim + low * dim + low * dim + low * dim  # norm input, cast, q, output
    memory_side = low * dim + low * 2 * dim  # per encoder token and decoder layer: its cast, k and v
    if architecture.context_projection:
        memory_side += 4 * dim  # and the input of that layer's norm of the context (fp32)
    encoder_layer = encoder * (attention + mlp) + _attention_bytes(workload, encoder, encoder)
    decoder_layer = (decoder * (attention + cross + mlp) + encoder * memory_side
                     + _attention_bytes(workload, decoder, decoder)
                     + _attention_bytes(workload, decoder, encoder))
    # once per forward: embeddings, the three attention masks, the final norms, the heads' logits and loss
    vocab_mean = workload.vocab_total / max(1, len(workload.specs))
    mask_heads = model.heads if resolve_attention(model.attention, workload.device_type) == "explicit" else 1
    projected = encoder * (4 + low) * dim if architecture.context_projection else 0  # the projected context
    once = ((encoder + decoder) * 8 * dim + projected
            + low * mask_heads * (encoder * encoder + decoder * decoder + decoder * encoder)
            + decoder * vocab_mean * (low + 4 + 4))
    if workload.activation_checkpointing:
        kept = encoder * 4 * dim * model.encoder_layers + decoder * 4 * dim * model.decoder_layers
        rebuilt = max(encoder_layer, decoder_layer)  # one block's activations at a time
        per_sample = kept + rebuilt + once
    else:
        per_sample = encoder_layer * model.encoder_layers + decoder_layer * model.decoder_layers + once
    working = 2 * max(encoder_layer, decoder_layer)  # gradients of one layer's activations in flight
    return int(workload.micro_batch * (per_sample + working))


def estimate(workload: Workload) -> MemoryEstimate:
    """Every part of the run's memory on one process (see the module docstring)."""
    parameters = parameter_count(workload.model, workload.specs)
    share = workload.processes if workload.sharded else 1
    weights = 4 * parameters // share
    copies = 2 * linear_parameters(workload.model) // share if workload.precision == "bf16" else 0
    largest = 4 * max(workload.model.dim * workload.vocab_total, int(workload.model.dim ** 2 * 4))
    # a sharded save gathers the full weights on the host of rank 0; a plain one streams tensor by tensor
    save = 4 * parameters if workload.sharded else largest
    return MemoryEstimate(parameters=parameters, weights=weights, weight_copies=copies, gradients=weights,
                          optimizer=2 * weights, activations=activation_bytes(workload),
                          runtime=RUNTIME_BYTES, save=save, checkpoint_file=3 * 4 * parameters,
                          device_type=workload.device_type, micro_batch=workload.micro_batch)


def workload_of(config, specs: dict[str, TokenSpec], *, processes: int = 1, device_type: str = "cpu",
                micro_batch: int | None = None, activation_checkpointing: bool | None = None) -> Workload:
    """The :class:`Workload` of a TrainConfig on ``processes`` processes (its micro-batch unless given)."""
    share = config.batch_size // processes
    micro = micro_batch or (config.micro_batch_size if isinstance(config.micro_batch_size, int) else share)
    return Workload(model=config.model, specs=dict(specs), input_tokens=config.masking.input_budget,
                    target_tokens=config.masking.target_budget, micro_batch=micro, precision=config.precision,
                    device_type=device_type, processes=processes, sharded=config.distributed == "fsdp",
                    activation_checkpointing=(checkpointing_of(config) if activation_checkpointing is None
                                              else activation_checkpointing))


def checkpointing_of(config) -> bool:
    """Whether a TrainConfig checkpoints activations (the option ``activation_checkpointing``, on the train
    config or its model section, whichever this version has)."""
    return bool(getattr(config, "activation_checkpointing", False)
                or getattr(config.model, "activation_checkpointing", False))


def gib(count: int) -> str:
    """Bytes in words: GiB with one decimal, MiB below one GiB."""
    return f"{count / GIB:.1f} GiB" if count >= GIB else f"{count / 2**20:.0f} MiB"


def needed(memory: MemoryEstimate) -> tuple[int, str]:
    """The bytes that must fit and on what: device memory for a GPU run, host RAM for a CPU run."""
    return (memory.device, "GPU memory") if memory.device_type == "cuda" else (memory.host, "host RAM")
