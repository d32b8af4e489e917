"""The 4M-style encoder-decoder (``FourM``); its config and presets are in :mod:`pairless.model.config`.

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

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from pairless.batch import MaskedBatch, TokenSpec
from pairless.model.attention import prepare_mask
from pairless.model.blocks import Block, index_buffers
from pairless.model.config import ModelConfig


@dataclass
class DecoderCache:
    """State of left-to-right decoding: encoder keys/values per layer, decoder keys/values so far."""

    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]
    memory_valid: torch.Tensor  # (B, S) bool: FourM.encode's
    layers: list[dict] = field(default_factory=list)  # per decoder layer: {"k", "v"} (B, H, S, hd)
    modality: torch.Tensor | None = None  # (B, S) long: modality of each cached decoder slot
    position: torch.Tensor | None = None  # (B, S) long


def _run_block(block: Block, checkpointed: bool, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``block(x, ...)``; ``checkpointed`` while gradients are on, its activations are not kept but
    recomputed in the backward (same values: the recompute replays the RNG state)."""
    if checkpointed and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(block, x, *args, use_reentrant=False, **kwargs)
    return block(x, *args, **kwargs)


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
        self.vocab_sizes = [spec.vocab_size for spec in specs.values()]
        self.max_vocab = max(self.vocab_sizes)
        for name, tensor in index_buffers(config, specs).items():
            self.register_buffer(name, tensor, persistent=False)
        total_vocab = sum(self.vocab_sizes)  # python ints: a model built on the meta device has no values
        self.token_embedding = nn.Embedding(total_vocab, dim)
        self.modality_embedding = nn.Parameter(torch.zeros(len(specs), dim))
        architecture = self.architecture = config.architecture()
        self.null_token = nn.Parameter(torch.zeros(dim)) if architecture.null_token else None
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.encoder = nn.ModuleList([Block(config, cross=False) for _ in range(config.encoder_layers)])
        self.decoder = nn.ModuleList([Block(config, cross=True) for _ in range(config.decoder_layers)])
        self.encoder_norm = nn.LayerNorm(dim, eps=architecture.norm_eps, bias=config.bias)
        self.decoder_norm = nn.LayerNorm(dim, eps=architecture.norm_eps, bias=config.bias)
        # heads[i]: modality i's output head (a list, not a dict: any user modality name is safe)
        self.heads = nn.ModuleList([nn.Linear(dim, spec.vocab_size, bias=architecture.head_bias)
                                    for spec in specs.values()])
        # ml-4m's parts (each exists only with its option, so a default model has exactly its old weights)
        self.context_projection = nn.Linear(dim, dim) if architecture.context_projection else None
        self.decoder_token_embedding = (nn.Embedding(total_vocab, dim)
                                        if architecture.decoder_token_table else None)
        self.decoder_modality_embedding = (nn.Parameter(torch.zeros(len(specs), dim))
                                           if architecture.separate_decoder_modalities else None)
        if architecture.stored_positions:  # fixed like the sin-cos table, but saved (and loaded) as weights
            self.register_buffer("encoder_positions", self.sincos.clone())
            self.register_buffer("decoder_positions", self.sincos.clone())
        self.apply(self._init)
        for parameter, std in ((self.modality_embedding, config.modality_init_std), (self.null_token, 0.02),
                               (self.mask_token, 0.02),  # this order: the same weights as before the option
                               (self.decoder_modality_embedding, config.modality_init_std)):
            if parameter is not None:
                nn.init.normal_(parameter, std=std)

    @property
    def input_offset(self) -> int:
        """Encoder slots before the inputs: 1 with the null token, else 0."""
        return 1 if self.null_token is not None else 0

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

    def _positions(self, modality: torch.Tensor, position: torch.Tensor,
                   side: str = "encoder") -> torch.Tensor:
        """Position + modality embedding ``(..., D)`` of slots on the ``"encoder"`` or ``"decoder"`` side."""
        # Gathers through F.embedding, not tensor indexing: the backward of indexing accumulates repeated
        # rows in an order that varies between runs with 2+ CPU threads (training was not reproducible);
        # the embedding backward is deterministic.
        modalities = self.modality_embedding
        if side == "decoder" and self.decoder_modality_embedding is not None:
            modalities = self.decoder_modality_embedding
        positions = getattr(self, f"{side}_positions") if self.architecture.stored_positions else self.sincos
        table = positions + F.embedding(self.slot_modality, modalities)  # (T, D) over all slots
        return F.embedding(self.slot_offset[modality] + position, table)

    def _rank_positions(self, modality: torch.Tensor, position: torch.Tensor,
                        valid: torch.Tensor) -> torch.Tensor:
        """Input positions with each sequence token's replaced by its rank among the sample's visible tokens
        of that modality (ml-4m numbers a span-masked input 0, 1, ... whatever positions it came from)."""
        same = (modality.unsqueeze(2) == modality.unsqueeze(1)) & valid.unsqueeze(1)  # (B, query, key)
        rank = (same & (position.unsqueeze(1) < position.unsqueeze(2))).sum(2)
        return torch.where(self.is_sequence[modality] & valid, rank, position)

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
                what: str, table: nn.Embedding | None = None) -> torch.Tensor:
        if tokens.device.type == "cpu":
            self._check_token_ids(modality, tokens, valid, what)
        table = self.token_embedding if table is None else table
        return table(self.vocab_offset[modality] + torch.where(valid, tokens, 0))

    # ---- encoder / decoder ------------------------------------------------------------------------------

    def _encoder_input(self, batch: MaskedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                         torch.Tensor]:
        """Embedded inputs ``(B, S, D)``, their validity ``(B, S)``, the attention mask and the inputs'
        position + modality embeddings ``(B, S, D)``; S = 1 + Ni with the null token first, else Ni."""
        self._check(batch)
        positions, valid = batch.enc_positions, batch.enc_valid
        if self.architecture.sequence_rank_positions:
            positions = self._rank_positions(batch.enc_modality, positions, valid)
        x = self._tokens(batch.enc_modality, batch.enc_tokens, valid, "enc_tokens")
        embedded = self._positions(batch.enc_modality, positions)
        x = x + embedded  # (B, Ni, D)
        if self.null_token is not None:
            x = torch.cat([self.null_token.expand(x.shape[0], 1, -1), x], 1)
            # (the null token's slot adds no embedding; new_zeros, not zeros_like(embedded[:, :1]), which is
            # empty when the input is: the context would then broadcast to no slot at all)
            embedded = torch.cat([embedded.new_zeros(x.shape[0], 1, x.shape[2]), embedded], 1)
            always = torch.ones(x.shape[0], 1, dtype=torch.bool, device=x.device)  # the null token
            memory_valid = torch.cat([always, valid], 1)
        else:
            if x.shape[1] == 0:  # no slot at all: one empty one, which an empty input attends to (ml-4m)
                x, embedded = x.new_zeros(x.shape[0], 1, x.shape[2]), embedded.new_zeros(x.shape[0], 1,
                                                                                         x.shape[2])
                valid = torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device)
            # empty slots hold zeros, as in ml-4m: an input with no token attends to them all alike
            keep = valid.unsqueeze(-1).to(x.dtype)
            x, embedded, memory_valid = x * keep, embedded * keep, valid
        mask = prepare_mask(memory_valid[:, None, None, :], x, self.config.attention, self.config.heads,
                            self.architecture.finite_mask)
        return x, memory_valid, mask, embedded

    def _context(self, normed: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        """What the decoder reads: the normed encoder output, or (ml-4m) its projection plus the inputs'
        position and modality embeddings."""
        if self.context_projection is None:
            return normed
        return self.context_projection(normed) + embedded

    def encode(self, batch: MaskedBatch,
               checkpoint_blocks: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's memory ``(B, S, D)`` and its validity ``(B, S)`` (:meth:`_encoder_input`'s S);
        ``checkpoint_blocks`` as in :meth:`forward`."""
        x, memory_valid, mask, embedded = self._encoder_input(batch)
        for block in self.encoder:
            x = _run_block(block, checkpoint_blocks, x, mask)
        return self._context(self.encoder_norm(x), embedded), memory_valid

    def encode_layers(self, batch: MaskedBatch) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The states ``(B, S, D)`` of every encoder layer, and their validity ``(B, S)``.

        Entry 0 is the embedded input, entry i the residual stream after block i; the last entry has the
        final norm applied, so it is :meth:`encode`'s output unless ``context_projection`` projects that
        for the decoder. For probes of the representation (:mod:`pairless.inference.probes`); training and
        generation use ``encode``. Slots from ``input_offset`` on are the inputs.
        """
        x, memory_valid, mask, _ = self._encoder_input(batch)
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
        positions = self._positions(modality, position, "decoder")
        if self.decoder_token_embedding is not None:  # ml-4m: sequences from the decoder's own table
            tokens = self._tokens(modality, previous, is_sequence, "dec_input_tokens",
                                  self.decoder_token_embedding)
            return torch.where(is_sequence.unsqueeze(-1), tokens, self.mask_token) + positions
        x = self.mask_token + positions
        return x + self._tokens(modality, previous, is_sequence,
                                "dec_input_tokens") * is_sequence.unsqueeze(-1)

    def decode_hidden(self, memory: torch.Tensor, memory_valid: torch.Tensor, batch: MaskedBatch,
                      checkpoint_blocks: bool = False) -> torch.Tensor:
        """Final decoder states ``(B, Nt, D)`` at every target slot; ``checkpoint_blocks`` as in
        :meth:`forward`."""
        self._check(batch)
        x = self._queries(batch.dec_modality, batch.dec_positions, batch.dec_input_tokens)
        valid = batch.dec_valid
        self_mask = self._decoder_mask(batch.dec_modality, batch.dec_positions, valid,
                                       batch.dec_modality, batch.dec_positions, valid)
        # Invalid slots still attend to themselves, so that no softmax row is empty.
        self_mask = self_mask | torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)
        finite = self.architecture.finite_mask
        self_mask = prepare_mask(self_mask, x, self.config.attention, self.config.heads, finite)
        memory_mask = prepare_mask(memory_valid[:, None, None, :], x, self.config.attention,
                                   self.config.heads, finite)
        for block in self.decoder:
            x = _run_block(block, checkpoint_blocks, x, self_mask, memory_mask=memory_mask, memory=memory)
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

    def forward(self, batch: MaskedBatch, loss_weights: Mapping[str, float] | None = None,
                touch_every_parameter: bool = False, touch_unused_heads: bool = False,
                checkpoint_blocks: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean over target modalities of each modality's mean token cross-entropy; and the per-modality
        losses. The trainer passes its settings of the step (the model holds none): ``loss_weights``
        (per modality, 1 where missing; TrainConfig.loss_weights) make it a weighted mean;
        ``touch_every_parameter`` (a sharded model, pairless.training.distributed.shard_model) adds every
        gathered parameter times zero, so that every process has the same parameters with a gradient;
        ``touch_unused_heads`` (a replicated model, pairless.training.distributed.wrap_model) adds the
        heads of the modalities this batch does not predict times zero, for the same reason;
        ``checkpoint_blocks`` (TrainConfig.activation_checkpointing) keeps no activations inside the
        blocks while gradients are on but recomputes them in the backward (the same values: the recompute
        replays the RNG state)."""
        memory, memory_valid = self.encode(batch, checkpoint_blocks)
        hidden = self.decode_hidden(memory, memory_valid, batch, checkpoint_blocks)
        hidden = hidden.flatten(0, 1)  # (B * Nt, D)
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
        elif loss_weights:
            weights = torch.tensor([loss_weights.get(name, 1.0) for name in losses],
                                   device=hidden.device)
            loss = (torch.stack(list(losses.values())) * weights).sum() / weights.sum()
        else:
            loss = torch.stack(list(losses.values())).mean()
        if touch_unused_heads and unused:
            # Replicated (DDP) training without a search for unused parameters: every head gets a (zero)
            # gradient, also when this process's micro-batch has no target of its modality.
            loss = loss + 0.0 * sum(parameter.sum() for head in unused for parameter in head.parameters())
        if touch_every_parameter:
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
        return DecoderCache(memory_kv=[block.memory_kv(memory) for block in self.decoder],
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
                                 self.config.heads, self.architecture.finite_mask)
        memory_mask = prepare_mask(cache.memory_valid[:, None, None, :], x, self.config.attention,
                                   self.config.heads, self.architecture.finite_mask)
        for block, memory_kv, layer in zip(self.decoder, cache.memory_kv, cache.layers, strict=True):
            x = block(x, self_mask, memory_kv, memory_mask, cache=layer)
        return self.head_logits(self.decoder_norm(x), modality).float().view(batch, 1, -1)

    # ---- bookkeeping ------------------------------------------------------------------------------------

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())
