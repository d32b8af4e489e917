"""The 4M-style encoder-decoder (``FourM``) and its presets.

Every modality is a list of discrete tokens. Embedding a packed
:class:`~pairless.batch.MaskedBatch` is two gathers: one flat token table
over all modalities' vocabularies (each modality at its own offset) and one
flat position table over all (modality, position) slots, holding fixed
sin-cos positions (2-D on an image's token grid, 1-D otherwise) plus a
learned modality embedding.

- Encoder: the input tokens, after a learned null token that is always
  present (so an empty input set is valid); pre-norm blocks.
- Decoder: one query per target slot = mask embedding + position/modality
  embedding (+ the previous token's embedding for sequence targets);
  self-attention only within the slot's own modality (causal by position
  for sequences), cross-attention to the encoder output.
- Output: one linear head per modality over its own vocabulary (separate
  parameters, so that a step's gradient touches only the heads it used and
  never allocates a zeroed gradient of all vocabularies per modality).

Loss: cross-entropy per target modality (mean over its valid target tokens),
averaged over the modalities present in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from pydantic import Field, model_validator
from torch import nn

from pairless.batch import MaskedBatch, TokenSpec
from pairless.config import Config
from pairless.model.attention import AttentionKind, prepare_mask
from pairless.model.blocks import Block, position_table

PRESETS: dict[str, dict] = {
    "tiny": dict(dim=192, encoder_layers=4, decoder_layers=4, heads=3),  # ~4-5M parameters: CPU tests, demos
    "small": dict(dim=256, encoder_layers=6, decoder_layers=6, heads=4),  # CPU experiments
    "anchor": dict(dim=384, encoder_layers=6, decoder_layers=6, heads=6),  # ml-4m fm_tiny_6e_6d
    "base": dict(dim=768, encoder_layers=12, decoder_layers=12, heads=12),  # 4M-B
    "large": dict(dim=1024, encoder_layers=24, decoder_layers=24, heads=16),  # 4M-L
    "xl": dict(dim=2048, encoder_layers=24, decoder_layers=24, heads=32),  # 4M-XL: train it sharded
}


class ModelConfig(Config):
    """Transformer shape; defaults are the ``tiny`` preset. A ``preset`` fills the fields not given."""

    preset: str = "tiny"
    dim: int = Field(192, ge=8)
    encoder_layers: int = Field(4, ge=1)
    decoder_layers: int = Field(4, ge=1)
    heads: int = Field(3, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # "explicit" (matmul + softmax), "sdpa", or "auto" (sdpa on a GPU, explicit on a CPU; pairless train
    # stores the kind it resolved for its device, so a CPU run's config still reads "explicit")
    attention: AttentionKind = "auto"
    bias: bool = False  # biases in linear layers and layer norms
    # Initial scale of the token embeddings and of the fixed sin-cos positions (whose entries have amplitude
    # ``position_scale``). With 0.02 against 1.0 (the default until 2026-12), a token's content was ~2% of
    # its input vector and runs of a few hundred steps never recovered: the model learned the average scene
    # and ignored its input (benchmarks/learning.py, docs/learning.md: rgb -> depth CE ratio 0.75 -> 0.66).
    token_init_std: float = Field(1.0, gt=0)
    position_scale: float = Field(1.0, ge=0)
    # initial std of the learned modality embedding (4M's 0.02): 0.3 and 1.0 learned worse, the output heads
    # and the modality-local decoder attention tell the modalities apart already (docs/learning.md)
    modality_init_std: float = Field(0.02, gt=0)
    # Longest sin-cos period / 2 pi (10000 in 4M): on an 8x8 grid most of those frequencies barely change
    # across the grid, so only a few dimensions tell positions apart.
    position_temperature: float = Field(10000.0, gt=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data):
        """The named preset gives every shape field the data leaves out: ``{"preset": "small"}`` is small."""
        if isinstance(data, dict) and "preset" in data:
            if data["preset"] not in PRESETS:
                raise ValueError(f"model.preset: unknown preset {data['preset']!r}; allowed: "
                                 f"{', '.join(PRESETS)}")
            data = {**PRESETS[data["preset"]], **data}
        return data

    @model_validator(mode="after")
    def _check_shape(self) -> ModelConfig:
        if self.dim % self.heads:
            raise ValueError(f"model.heads: dim {self.dim} is not divisible by heads {self.heads}")
        if self.dim % 4:
            raise ValueError(f"model.dim: must be a multiple of 4 for 2-D sin-cos positions, got {self.dim}")
        return self

    @classmethod
    def from_preset(cls, name: str, **overrides) -> ModelConfig:
        if name not in PRESETS:
            raise ValueError(f"model.preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
        return cls(preset=name, **{**PRESETS[name], **overrides})


@dataclass
class DecoderCache:
    """State of left-to-right decoding: encoder keys/values per layer, decoder keys/values so far."""

    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]
    memory_valid: torch.Tensor  # (B, 1 + Ni) bool
    layers: list[dict] = field(default_factory=list)  # per decoder layer: {"k", "v"} (B, H, S, hd)
    modality: torch.Tensor | None = None  # (B, S) long: modality of each cached decoder slot
    position: torch.Tensor | None = None  # (B, S) long


def _bucket(count: int, step: int = 256) -> int:
    """``count`` rounded up to a multiple of ``step``: few distinct matmul shapes across batches."""
    return -(-count // step) * step


def _find_target_rows(batch: MaskedBatch) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Each modality's valid target rows of the flattened decoder ``(B * Nt)``, padded to a bucket, one
    modality after another; and their counts (a host sync per modality when the batch is on a GPU)."""
    modality, valid = batch.dec_modality.flatten(), batch.dec_valid.flatten()
    rows, counts = [], []
    for index in range(len(batch.modalities)):
        found = (valid & (modality == index)).nonzero().squeeze(1)
        counts.append(found.numel())
        # Pad the row count up to a bucket: a bf16 matmul of a never-seen shape makes oneDNN build (and
        # cache) a new kernel, which cost time and leaked ~4-20 MB of memory per step.
        rows.append(F.pad(found, (0, _bucket(found.numel()) - found.numel())))
    return torch.cat(rows), tuple(counts)


def with_target_rows(batch: MaskedBatch) -> MaskedBatch:
    """``batch`` (on the host) with ``target_rows`` / ``target_counts`` filled in, so that the forward on a
    GPU finds each modality's targets without waiting for the GPU (the training loop calls it)."""
    rows, counts = _find_target_rows(batch)
    return replace(batch, target_rows=rows, target_counts=counts)


class FourM(nn.Module):
    """Any-to-any masked encoder-decoder over the modalities of ``specs`` (in that order)."""

    def __init__(self, config: ModelConfig, specs: dict[str, TokenSpec]):
        super().__init__()
        self.config, self.specs = config, dict(specs)
        self.modalities = tuple(specs)
        dim = config.dim
        vocab = torch.tensor([spec.vocab_size for spec in specs.values()])
        lengths = torch.tensor([spec.num_tokens for spec in specs.values()])
        self.vocab_sizes = [spec.vocab_size for spec in specs.values()]
        self.max_vocab = max(self.vocab_sizes)
        self.register_buffer("vocab_size", vocab, persistent=False)
        self.register_buffer("vocab_offset", torch.cumsum(vocab, 0) - vocab, persistent=False)
        self.register_buffer("slot_offset", torch.cumsum(lengths, 0) - lengths, persistent=False)
        # output_size: also computable on the meta device (a sharded model is built there)
        self.register_buffer("slot_modality", torch.repeat_interleave(
            torch.arange(len(specs)), lengths, output_size=sum(spec.num_tokens for spec in specs.values())),
                             persistent=False)
        self.register_buffer("sincos", config.position_scale
                             * torch.cat([position_table(spec, dim, config.position_temperature)
                                          for spec in specs.values()]),
                             persistent=False)
        self.register_buffer("is_sequence",
                             torch.tensor([spec.kind == "sequence" for spec in specs.values()]),
                             persistent=False)
        self.token_embedding = nn.Embedding(sum(self.vocab_sizes), dim)
        self.modality_embedding = nn.Parameter(torch.zeros(len(specs), dim))
        self.null_token = nn.Parameter(torch.zeros(dim))
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.encoder = nn.ModuleList([Block(config, cross=False) for _ in range(config.encoder_layers)])
        self.decoder = nn.ModuleList([Block(config, cross=True) for _ in range(config.decoder_layers)])
        self.encoder_norm = nn.LayerNorm(dim, bias=config.bias)
        self.decoder_norm = nn.LayerNorm(dim, bias=config.bias)
        # heads[i]: modality i's output head (a list, not a dict: any user modality name is safe)
        self.heads = nn.ModuleList([nn.Linear(dim, spec.vocab_size, bias=config.bias)
                                    for spec in specs.values()])
        self.apply(self._init)
        self.touch_every_parameter = False  # set by pairless.training.distributed.shard_model
        self.touch_unused_heads = False  # set by pairless.training.distributed.wrap_model (DDP)
        self.checkpoint_blocks = False  # recompute each block in the backward (activation_checkpointing)
        self.loss_weights: dict[str, float] = {}  # per modality, set by training (TrainConfig.loss_weights)
        for parameter, std in ((self.modality_embedding, config.modality_init_std), (self.null_token, 0.02),
                               (self.mask_token, 0.02)):  # this order: the same weights as before the option
            nn.init.normal_(parameter, std=std)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            std = self.config.token_init_std if isinstance(module, nn.Embedding) else 0.02
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * max(std, 1.0), b=2 * max(std, 1.0))
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    # ---- embeddings -------------------------------------------------------------------------------------

    def _check(self, batch: MaskedBatch) -> None:
        if tuple(batch.modalities) != self.modalities:
            raise ValueError(f"batch.modalities {batch.modalities} != model.modalities {self.modalities} "
                             "(build the Masker with the model's specs/modality order)")

    def _positions(self, modality: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        # Gathers through F.embedding, not tensor indexing: the backward of indexing accumulates repeated
        # rows in an order that varies between runs with 2+ CPU threads (training was not reproducible);
        # the embedding backward is deterministic.
        # (T, D) over all slots
        table = self.sincos + F.embedding(self.slot_modality, self.modality_embedding)
        return F.embedding(self.slot_offset[modality] + position, table)

    def _check_token_ids(self, modality: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor,
                         what: str) -> None:
        vocab = torch.tensor(self.vocab_sizes, device=tokens.device)
        out_of_range = valid & ((tokens < 0) | (tokens >= vocab[modality]))
        if bool(out_of_range.any()):
            index = out_of_range.nonzero()[0]
            name = self.modalities[int(modality[tuple(index)])]
            raise ValueError(f"batch.{what}: token id {int(tokens[tuple(index)])} outside the vocabulary of "
                             f"{name!r} (size {self.vocab_sizes[self.modalities.index(name)]})")

    def check_token_ids(self, batch: MaskedBatch) -> None:
        """Raise ValueError naming the first token id outside its modality's vocabulary. The forward checks
        a batch on the CPU itself; on a GPU that check would wait for the GPU, so the training loop calls
        this on the host copy instead."""
        self._check_token_ids(batch.enc_modality, batch.enc_tokens, batch.enc_valid, "enc_tokens")
        is_sequence = torch.tensor([spec.kind == "sequence" for spec in self.specs.values()])
        self._check_token_ids(batch.dec_modality, batch.dec_input_tokens, is_sequence[batch.dec_modality],
                              "dec_input_tokens")

    def _tokens(self, modality: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor,
                what: str) -> torch.Tensor:
        if tokens.device.type == "cpu":
            self._check_token_ids(modality, tokens, valid, what)
        return self.token_embedding(self.vocab_offset[modality] + torch.where(valid, tokens, 0))

    # ---- encoder / decoder ------------------------------------------------------------------------------

    def _encoder_input(self, batch: MaskedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embedded inputs ``(B, 1 + Ni, D)`` (null token first), their validity and the attention mask."""
        self._check(batch)
        x = self._tokens(batch.enc_modality, batch.enc_tokens, batch.enc_valid, "enc_tokens")
        x = x + self._positions(batch.enc_modality, batch.enc_positions)  # (B, Ni, D)
        x = torch.cat([self.null_token.expand(x.shape[0], 1, -1), x], 1)
        always = torch.ones(x.shape[0], 1, dtype=torch.bool, device=x.device)  # the null token
        memory_valid = torch.cat([always, batch.enc_valid], 1)
        mask = prepare_mask(memory_valid[:, None, None, :], x, self.config.attention, self.config.heads)
        return x, memory_valid, mask

    def encode(self, batch: MaskedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output ``(B, 1 + Ni, D)`` (null token first) and its validity ``(B, 1 + Ni)``."""
        x, memory_valid, mask = self._encoder_input(batch)
        for block in self.encoder:
            x = self._run_block(block, x, mask)
        return self.encoder_norm(x), memory_valid

    def _run_block(self, block: Block, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``block(x, ...)``; with ``checkpoint_blocks`` while gradients are on, its activations are not
        kept but recomputed in the backward (same values: the recompute replays the RNG state)."""
        if self.checkpoint_blocks and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, x, *args, use_reentrant=False, **kwargs)
        return block(x, *args, **kwargs)

    def encode_layers(self, batch: MaskedBatch) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The states ``(B, 1 + Ni, D)`` of every encoder layer, and their validity ``(B, 1 + Ni)``.

        Entry 0 is the embedded input, entry i the residual stream after block i; the last entry has the
        final norm applied, so it is exactly :meth:`encode`'s output (what the decoder reads). For probes
        of the representation (:mod:`pairless.inference.probes`); training and generation use ``encode``.
        """
        x, memory_valid, mask = self._encoder_input(batch)
        states = [x]
        for block in self.encoder:
            x = block(x, mask)
            states.append(x)
        states[-1] = self.encoder_norm(x)
        return states, memory_valid

    def _decoder_mask(self, modality, position, valid, key_modality, key_position, key_valid) -> torch.Tensor:
        """Bool ``(B, 1, Nq, Nk)``: same modality, causal for sequences, valid keys (and always itself)."""
        same = modality.unsqueeze(2) == key_modality.unsqueeze(1)
        causal = (~self.is_sequence[modality].unsqueeze(2)
                  | (key_position.unsqueeze(1) <= position.unsqueeze(2)))
        return (same & causal & key_valid.unsqueeze(1)).unsqueeze(1)

    def _queries(self, modality: torch.Tensor, position: torch.Tensor,
                 previous: torch.Tensor) -> torch.Tensor:
        is_sequence = self.is_sequence[modality]
        x = self.mask_token + self._positions(modality, position)
        return x + self._tokens(modality, previous, is_sequence,
                                "dec_input_tokens") * is_sequence.unsqueeze(-1)

    def decode_hidden(self, memory: torch.Tensor, memory_valid: torch.Tensor,
                      batch: MaskedBatch) -> torch.Tensor:
        """Final decoder states ``(B, Nt, D)`` at every target slot."""
        self._check(batch)
        x = self._queries(batch.dec_modality, batch.dec_positions, batch.dec_input_tokens)
        valid = batch.dec_valid
        self_mask = self._decoder_mask(batch.dec_modality, batch.dec_positions, valid,
                                       batch.dec_modality, batch.dec_positions, valid)
        # Invalid slots still attend to themselves, so that no softmax row is empty.
        self_mask = self_mask | torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)
        self_mask = prepare_mask(self_mask, x, self.config.attention, self.config.heads)
        memory_mask = prepare_mask(memory_valid[:, None, None, :], x, self.config.attention,
                                   self.config.heads)
        for block in self.decoder:
            x = self._run_block(block, x, self_mask, memory_mask=memory_mask, memory=memory)
        return self.decoder_norm(x)

    def head_logits(self, hidden: torch.Tensor, modality: str) -> torch.Tensor:
        """Logits over ``modality``'s own vocabulary for hidden states ``(..., D)``."""
        return self.heads[self.modalities.index(modality)](hidden)

    def decode(self, memory: torch.Tensor, memory_valid: torch.Tensor, batch: MaskedBatch) -> torch.Tensor:
        """Logits ``(B, Nt, V_max)`` at every target slot; -inf beyond the slot's modality vocabulary."""
        hidden = self.decode_hidden(memory, memory_valid, batch)
        logits = hidden.new_full((*hidden.shape[:2], self.max_vocab), float("-inf"), dtype=torch.float32)
        for index, name in enumerate(self.modalities):
            selected = batch.dec_modality == index
            if bool(selected.any()):
                logits[..., : self.vocab_sizes[index]][selected] = self.head_logits(hidden[selected],
                                                                                    name).float()
        return logits

    def logits(self, batch: MaskedBatch) -> torch.Tensor:
        """``decode(*encode(batch), batch)``."""
        return self.decode(*self.encode(batch), batch)

    def forward(self, batch: MaskedBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean over target modalities of each modality's mean token cross-entropy (weighted by
        ``loss_weights`` where set); and the per-modality losses."""
        hidden = self.decode_hidden(*self.encode(batch), batch).flatten(0, 1)  # (B * Nt, D)
        targets = batch.dec_tokens.flatten()
        if batch.target_counts is None:
            all_rows, counts = _find_target_rows(batch)
        else:
            all_rows, counts = batch.target_rows, batch.target_counts
        losses, start, unused = {}, 0, []
        for index, (name, count) in enumerate(zip(self.modalities, counts, strict=True)):
            padded = all_rows[start:start + _bucket(count)]
            start += _bucket(count)
            if count:
                logits = self.heads[index](hidden[padded])[:count]
                losses[name] = F.cross_entropy(logits.float(), targets[padded[:count]])
            else:
                unused.append(self.heads[index])
        if not losses:  # nothing to predict: a zero loss that still backpropagates
            loss = hidden.sum() * 0.0
        elif self.loss_weights:
            weights = torch.tensor([self.loss_weights.get(name, 1.0) for name in losses],
                                   device=hidden.device)
            loss = (torch.stack(list(losses.values())) * weights).sum() / weights.sum()
        else:
            loss = torch.stack(list(losses.values())).mean()
        if self.touch_unused_heads and unused:
            # Replicated (DDP) training without a search for unused parameters: every head gets a (zero)
            # gradient, also when this process's micro-batch has no target of its modality.
            loss = loss + 0.0 * sum(parameter.sum() for head in unused for parameter in head.parameters())
        if self.touch_every_parameter:
            # A sharded (FSDP) model reduce-scatters the gradients of exactly the parameters that have one:
            # every process must have the same set, also when its slice of the batch lacks a modality.
            # (Gathered parameters are plain tensors here; those of units already freed stay DTensors,
            # and those, the encoder and decoder blocks, are used on every process anyway.)
            gathered = [parameter for parameter in self.parameters() if not hasattr(parameter, "placements")]
            loss = loss + 0.0 * sum(parameter.sum() for parameter in gathered)
        return loss, losses

    # ---- left-to-right generation with a KV cache -------------------------------------------------------

    def start_cache(self, memory: torch.Tensor, memory_valid: torch.Tensor) -> DecoderCache:
        """Encoder keys/values of every decoder layer, computed once for many decode steps."""
        return DecoderCache(memory_kv=[block.cross.memory_kv(memory) for block in self.decoder],
                            memory_valid=memory_valid, layers=[{} for _ in self.decoder])

    def decode_step(self, cache: DecoderCache, tokens_in: torch.Tensor, modality: str,
                    position: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, V)`` over ``modality``'s own vocabulary (V = its vocab_size) at ``position``.

        ``tokens_in`` ``(B, 1)`` is the previous token (BOS at position 0).
        Feeding positions 0, 1, ... of a sequence modality in turn gives the
        same logits as the causal full decode of that prefix (``decode``).
        Updates ``cache`` in place.
        """
        index = self.modalities.index(modality)
        batch = tokens_in.shape[0]
        step_modality = torch.full_like(position, index)
        x = self._queries(step_modality, position, tokens_in)  # (B, 1, D)
        cache.modality = step_modality if cache.modality is None else torch.cat([cache.modality,
                                                                                 step_modality], 1)
        cache.position = position if cache.position is None else torch.cat([cache.position, position], 1)
        key_valid = torch.ones_like(cache.modality, dtype=torch.bool)
        self_mask = prepare_mask(self._decoder_mask(step_modality, position, key_valid[:, :1], cache.modality,
                                                    cache.position, key_valid), x, self.config.attention,
                                 self.config.heads)
        memory_mask = prepare_mask(cache.memory_valid[:, None, None, :], x, self.config.attention,
                                   self.config.heads)
        for block, memory_kv, layer in zip(self.decoder, cache.memory_kv, cache.layers, strict=True):
            x = block(x, self_mask, memory_kv, memory_mask, cache=layer)
        return self.head_logits(self.decoder_norm(x), modality).float().view(batch, 1, -1)

    # ---- bookkeeping ------------------------------------------------------------------------------------

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())
