"""Samplers that generate a destination modality's tokens from source tokens through the model API.

Three schemes, as in 4M:

- ``roar`` (random-order autoregressive): a random order of the target
  positions is drawn per sample; at each of ``num_steps`` steps the next
  chunk of positions (its size given by the token schedule) is predicted
  from the source plus every target token generated so far, sampled, and
  added to the inputs. One step = everything predicted in parallel.
- ``maskgit``: at each step every still-unknown position is predicted and
  sampled; only the most confident ones (the schedule's count) are kept.
- ``ar``: left to right for sequence modalities (captions, boxes as text),
  with the model's KV cache; stops at EOS, padding after.

Sampling: temperature (constant, or linear from ``temperature`` to
``temperature_final`` over the steps; 0 = argmax), top-k (0 = off), top-p
(1 = off), and classifier-free guidance ``uncond + scale * (cond - uncond)``
where the unconditional pass drops the source modalities but keeps the
target tokens generated so far, and the scale follows a schedule over the
steps (constant, linear or cosine from ``guidance_scale`` to
``guidance_scale_final``; 4M itself has only constant). Chained generation
(``rgb:normal:depth``) conditions each link on every modality given or
generated before it (``chain_condition="all"``, what 4M does) or only on the
previous one (``"last"``). Randomness comes only from the ``torch.Generator``
passed in.
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch
from pydantic import Field

from pairless.batch import TokenSpec
from pairless.config import Config, ConfigError
from pairless.inference.translation_batch import pack_batch
from pairless.utils.threads import torch_threads


class GenerationSchedule(Config):
    """How one modality is generated (the study's Table III columns, plus schedules)."""

    scheme: Literal["roar", "maskgit", "ar"] = "roar"
    num_steps: int = Field(8, ge=1)  # roar / maskgit; ar takes one step per token
    token_schedule: Literal["linear", "cosine"] = "linear"
    temperature: float = Field(1.0, ge=0.0)
    temperature_schedule: Literal["constant", "linear"] = "constant"
    temperature_final: float = Field(0.0, ge=0.0)  # the linear schedule's last value
    guidance_scale: float = 1.0
    guidance_schedule: Literal["constant", "linear", "cosine"] = "constant"
    guidance_scale_final: float = 1.0  # the linear / cosine schedule's last value
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    chain_condition: Literal["all", "last"] = "all"


PRESETS: dict[str, GenerationSchedule] = {
    # the study's Table III
    "roar1": GenerationSchedule(scheme="roar", num_steps=1, temperature=0.01, guidance_scale=2.0, top_p=0.8),
    "roar8": GenerationSchedule(scheme="roar", num_steps=8, temperature=0.01, guidance_scale=2.0, top_p=0.8),
    "ar-caption": GenerationSchedule(scheme="ar", temperature=0.3, guidance_scale=1.0, top_p=0.8),
    "roar25-caption": GenerationSchedule(scheme="roar", num_steps=25, temperature=3.0, guidance_scale=2.0,
                                         top_p=0.8),
    # not in the study: samples from the model's own distribution (no guidance, no truncation), e.g. for
    # pseudo-pairs that keep the model's uncertainty instead of its mode
    "sample8": GenerationSchedule(scheme="roar", num_steps=8, temperature=1.0, guidance_scale=1.0),
    # not in the study: deterministic baselines
    "greedy": GenerationSchedule(scheme="roar", num_steps=1, temperature=0.0),
    "greedy-ar": GenerationSchedule(scheme="ar", temperature=0.0),
}


def schedule_preset(name: str) -> GenerationSchedule:
    """A named schedule (a copy); the error lists the presets."""
    if name not in PRESETS:
        raise ConfigError(f"schedule: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name].model_copy()


def default_schedule(dst_kind: str) -> GenerationSchedule:
    """The study's schedule for a destination kind: AR for text, ROAR 8 steps otherwise."""
    return schedule_preset("ar-caption" if dst_kind == "sequence" else "roar8")


def schedule_for_kind(dst_kind: str, schedule: GenerationSchedule) -> GenerationSchedule:
    """``schedule`` where its scheme fits a destination of ``dst_kind`` (``ar`` for sequences, a parallel one
    otherwise), else the study's default for that kind: what the runner's generations use."""
    fits = (schedule.scheme == "ar") == (dst_kind == "sequence")
    return schedule if fits else default_schedule(dst_kind)


# ----------------------------------------------------------------------------- schedules


def token_counts(total: int, num_steps: int, kind: str = "linear") -> list[int]:
    """How many tokens each step reveals: ``num_steps`` non-negative counts summing to ``total``.

    linear: as equal as possible (earlier steps take the remainder);
    cosine (MaskGIT): the unknown fraction after step t is cos(pi/2 * (t+1)/N),
    so few tokens come first and many at the end. Steps never exceed the
    tokens left; with more steps than tokens the extra steps reveal nothing.
    """
    if total < 0 or num_steps < 1:
        raise ValueError(f"token_counts: need total >= 0 and num_steps >= 1, got {total}, {num_steps}")
    if kind == "linear":
        base, extra = divmod(total, num_steps)
        return [base + (1 if step < extra else 0) for step in range(num_steps)]
    if kind == "cosine":
        unknown = [round(total * math.cos(math.pi / 2 * (step + 1) / num_steps)) for step in range(num_steps)]
        counts, left = [], total
        for step in range(num_steps):
            # at least one token per step while tokens remain, so no step is wasted
            count = max(left - unknown[step], 1 if left > 0 else 0)
            counts.append(count)
            left -= count
        counts[-1] += left
        return counts
    raise ValueError(f"token_schedule: unknown kind {kind!r}; allowed: linear, cosine")


def step_values(start: float, end: float, num_steps: int, kind: str) -> list[float]:
    """A value per step: constant (``start``), linear or cosine interpolation from ``start`` to ``end``."""
    if kind == "constant" or num_steps == 1:
        return [start] * num_steps
    fractions = [step / (num_steps - 1) for step in range(num_steps)]
    if kind == "linear":
        return [start + (end - start) * f for f in fractions]
    if kind == "cosine":
        return [end + (start - end) * 0.5 * (1 + math.cos(math.pi * f)) for f in fractions]
    raise ValueError(f"schedule kind {kind!r}: allowed constant, linear, cosine")


def temperatures(schedule: GenerationSchedule, num_steps: int) -> list[float]:
    return step_values(schedule.temperature, schedule.temperature_final, num_steps,
                       schedule.temperature_schedule)


def guidance_scales(schedule: GenerationSchedule, num_steps: int) -> list[float]:
    return step_values(schedule.guidance_scale, schedule.guidance_scale_final, num_steps,
                       schedule.guidance_schedule)


# ----------------------------------------------------------------------------- sampling


def guided_logits(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)`` (scale 1 = the conditional logits)."""
    if scale == 1.0:
        return conditional
    return unconditional + scale * (conditional - unconditional)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / the top-p nucleus to -inf (0 / 1.0 switch each off)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_tokens(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ids from (..., V) logits; returns (ids, probability of each chosen id).

    Temperature 0 is argmax. Sampling uses the Gumbel-max trick with noise
    drawn from ``generator`` (on the CPU, so results do not depend on the device).
    """
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    logits = filter_logits(logits, top_k, top_p)
    if temperature > 0:
        uniform = torch.rand(logits.shape, generator=generator).to(logits.device)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
        ids = torch.argmax(logits + gumbel, dim=-1)
    else:
        ids = torch.argmax(logits, dim=-1)
    probabilities = logits.softmax(-1).gather(-1, ids[..., None])[..., 0]
    return ids, probabilities


def precision(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast (about 4x faster matmuls on our CPUs, and on GPUs); logits are cast back to fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16)


def model_device(model) -> torch.device:
    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


# ----------------------------------------------------------------------------- samplers


def _both(tokens, guided: bool):
    return torch.cat([tokens, tokens]) if guided else tokens


def _slot_logits(model, inputs, targets, specs, modalities, dst):
    batch = pack_batch(inputs, targets, specs, modalities)
    logits = model.logits(batch.to(model_device(model))).float()[..., : specs[dst].vocab_size].cpu()
    return logits, batch


def _parallel_logits(model, source, src, dst, current, known, query, specs, modalities, scale):
    """Logits (B, L, V) for the queried positions of dst given src + known dst tokens (+ guidance)."""
    batch_size = current.shape[0]
    targets = {dst: (current, query)}
    inputs = {name: (source[name], torch.ones_like(source[name], dtype=torch.bool)) for name in src}
    inputs[dst] = (current, known)
    slot_logits, batch = _slot_logits(model, inputs, targets, specs, modalities, dst)
    if scale != 1.0:
        # a separate pass rather than stacked rows: its encoder holds only the known dst tokens,
        # so it is not padded to the width of the conditional inputs
        unconditional, _ = _slot_logits(model, {dst: (current, known)}, targets, specs, modalities, dst)
        slot_logits = guided_logits(slot_logits, unconditional, scale)
    # scatter the slots back to positions; positions not queried stay -inf
    full = torch.full((batch_size, current.shape[1], slot_logits.shape[-1]), float("-inf"))
    valid = batch.dec_valid
    rows_index = torch.arange(batch_size)[:, None].expand_as(valid)
    full[rows_index[valid], batch.dec_positions[valid]] = slot_logits[valid]
    return full


def parallel_generate(model, source: dict[str, torch.Tensor], src: list[str], dst: str,
                      specs: dict[str, TokenSpec], modalities: tuple[str, ...],
                      schedule: GenerationSchedule, generator: torch.Generator) -> torch.Tensor:
    """ROAR or MaskGIT generation of an image/vector modality; returns ids (B, L)."""
    spec = specs[dst]
    if spec.kind == "sequence":
        raise ValueError(f"schedule.scheme={schedule.scheme!r} cannot generate the sequence modality "
                         f"{dst!r}; use 'ar'")
    batch_size = next(iter(source.values())).shape[0] if source else 1
    length = spec.num_tokens
    counts = token_counts(length, schedule.num_steps, schedule.token_schedule)
    temps, scales = temperatures(schedule, len(counts)), guidance_scales(schedule, len(counts))
    current = torch.zeros(batch_size, length, dtype=torch.long)
    known = torch.zeros(batch_size, length, dtype=torch.bool)
    order = torch.argsort(torch.rand(batch_size, length, generator=generator), dim=1)  # ROAR's random order
    rank = torch.argsort(order, dim=1)  # rank[b, p]: when position p comes in the order
    start = 0
    for step, count in enumerate(counts):
        if count == 0:
            continue
        if schedule.scheme == "roar":
            query = (rank >= start) & (rank < start + count)
        else:
            query = ~known
        logits = _parallel_logits(model, source, src, dst, current, known, query, specs, modalities,
                                  scales[step])
        ids, confidence = sample_tokens(logits, temps[step], schedule.top_k, schedule.top_p, generator)
        if schedule.scheme == "maskgit":
            confidence = confidence.masked_fill(~query, -1.0)
            keep = torch.topk(confidence, count, dim=1).indices
            query = torch.zeros_like(query).scatter(1, keep, True)
        current = torch.where(query, ids, current)
        known |= query
        start += count
    return current


def _forbidden_ids(spec: TokenSpec) -> list[int]:
    return [token for token in (spec.pad_id, spec.bos_id) if token is not None and token != spec.eos_id]


def ar_generate(model, source: dict[str, torch.Tensor], src: list[str], dst: str,
                specs: dict[str, TokenSpec], modalities: tuple[str, ...],
                schedule: GenerationSchedule, generator: torch.Generator,
                *, use_cache: bool = True) -> torch.Tensor:
    """Left-to-right generation of a sequence modality; ids (B, L): tokens, EOS, then padding.

    ``use_cache=False`` re-decodes the whole prefix at every step (no KV
    cache): slower, same result; kept as the reference the cache is tested
    against and for models without ``decode_step``.
    """
    spec = specs[dst]
    if spec.kind != "sequence":
        raise ValueError(f"schedule.scheme='ar' generates sequence modalities; {dst!r} is a {spec.kind}")
    batch_size = next(iter(source.values())).shape[0] if source else 1
    length = spec.num_tokens
    temps, scales = temperatures(schedule, length), guidance_scales(schedule, length)
    guided = any(scale != 1.0 for scale in scales)
    rows = 2 * batch_size if guided else batch_size
    on = torch.ones(batch_size, dtype=torch.bool)
    use_source = torch.cat([on, ~on]) if guided else on
    inputs = {name: (_both(source[name], guided), use_source[:, None].expand(rows, source[name].shape[1]))
              for name in src}
    # a non-pad placeholder stands for not-yet-generated tokens so that every prefix slot is valid
    work = torch.full((rows, length), spec.eos_id if spec.eos_id is not None else 0, dtype=torch.long)
    device = model_device(model)
    encoder_batch = pack_batch(inputs, {dst: (work[:, :1], torch.ones(rows, 1, dtype=torch.bool))}, specs,
                               modalities)
    memory, memory_valid = model.encode(encoder_batch.to(device))
    cache = model.start_cache(memory, memory_valid) if use_cache else None
    output = torch.full((batch_size, length), spec.pad_id, dtype=torch.long)
    finished = torch.zeros(batch_size, dtype=torch.bool)
    previous = torch.full((rows, 1), spec.bos_id, dtype=torch.long)
    forbidden = _forbidden_ids(spec)
    for step in range(length):
        if use_cache:
            position = torch.full((rows, 1), step, dtype=torch.long, device=device)
            logits = model.decode_step(cache, previous.to(device), dst, position)[:, 0]
        else:
            prefix = torch.zeros(rows, length, dtype=torch.bool)
            prefix[:, : step + 1] = True
            batch = pack_batch(inputs, {dst: (work, prefix)}, specs, modalities)
            logits = model.decode(memory, memory_valid, batch.to(device))[:, step]
        logits = logits.float().cpu()[:, : spec.vocab_size]
        if guided:
            logits = guided_logits(logits[:batch_size], logits[batch_size:], scales[step])
        logits[:, forbidden] = float("-inf")
        ids, _ = sample_tokens(logits, temps[step], schedule.top_k, schedule.top_p, generator)
        ids = torch.where(finished, torch.full_like(ids, spec.pad_id), ids)
        output[:, step] = ids
        finished |= ids == spec.eos_id
        if bool(finished.all()):
            break
        previous = _both(ids, guided)[:, None]
        work[:, step] = _both(torch.where(finished, work[:batch_size, step], ids), guided)
    return output


def generate(model, source: dict[str, torch.Tensor], src: list[str], dst: str,
             specs: dict[str, TokenSpec], modalities: tuple[str, ...],
             schedule: GenerationSchedule, generator: torch.Generator, *, use_cache: bool = True,
             threads: int | None = None) -> torch.Tensor:
    """Generate ``dst`` token ids (B, L) from the ``src`` tokens in ``source`` with one schedule.

    Runs under inference mode and bf16 autocast (the samplers themselves
    leave precision to their caller). ``use_cache`` applies to ``ar``;
    ``threads``: torch threads (None: the current count).
    """
    missing = [name for name in src if name not in source]
    if missing:
        raise ValueError(f"generate: source tokens missing for {missing}; given {sorted(source)}")
    # one autocast region for the whole generation: the bf16 copies of the weights are made once
    device = model_device(model)
    with torch.inference_mode(), precision(device), torch_threads(threads):
        if schedule.scheme == "ar":
            return ar_generate(model, source, src, dst, specs, modalities, schedule, generator,
                               use_cache=use_cache)
        return parallel_generate(model, source, src, dst, specs, modalities, schedule, generator)


def generate_chain(model, source: dict[str, torch.Tensor], chain: list[list[str]],
                   specs: dict[str, TokenSpec], modalities: tuple[str, ...],
                   schedules: dict[str, GenerationSchedule], generator: torch.Generator) -> dict[str,
                       torch.Tensor]:
    """Generate each link of a chain in turn; returns the generated ids of every link after the first.

    With ``chain_condition="all"`` a link is conditioned on the sources and
    every modality generated before it; with ``"last"`` only on the previous link.
    """
    available = dict(source)
    conditioning = list(chain[0])
    generated: dict[str, torch.Tensor] = {}
    for link in chain[1:]:
        dst = link[0]
        schedule = schedules[dst]
        generated[dst] = generate(model, available, conditioning, dst, specs, modalities, schedule, generator)
        available[dst] = generated[dst]
        conditioning = conditioning + [dst] if schedule.chain_condition == "all" else [dst]
    return generated
