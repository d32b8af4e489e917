"""Whether a training run fits the machine: the memory it may use, the fit check, ``micro_batch_size="auto"``
and the advice after an out-of-memory failure (the prediction itself is :mod:`pairless.training.memory`).

``pairless train`` checks the estimate against what the machine has (:func:`check_fit`) before it loads
anything, resolves ``micro_batch_size="auto"`` (:func:`auto_micro_batch`), and turns an allocator failure
during a step or a save into the same advice (:func:`out_of_memory`): each option it lists (a smaller
micro-batch, activation checkpointing, sdpa attention, sharding) with the memory it would need.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pairless.batch import TokenSpec
from pairless.config import ConfigError
from pairless.model.attention import resolve_attention
from pairless.training.memory import GIB, MemoryEstimate, Workload, estimate, gib, needed, workload_of


class DoesNotFit(ConfigError):
    """A run needs more memory than the machine has; the message names the run and what to change."""


def checkpointing_key(config) -> str | None:
    """The ``--set`` key of activation checkpointing in this version's config (None: it has none)."""
    if "activation_checkpointing" in type(config).model_fields:
        return "activation_checkpointing"
    if "activation_checkpointing" in type(config.model).model_fields:
        return "model.activation_checkpointing"
    return None


def available_memory(device: torch.device | str, stated_gb: float | None = None) -> tuple[int, str]:
    """Bytes the run may use on ``device`` and where that number comes from."""
    if stated_gb is not None:
        return int(stated_gb * GIB), "stated (device_memory_gb)"
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)} ({total / GIB:.0f} GiB in all)"
    available, where = _meminfo_available(), "available host RAM (/proc/meminfo)"
    limit = _cgroup_limit()
    if limit is not None and limit < available:
        available, where = limit, "the cgroup's memory limit"
    return available, where


def _proc_kib_field(proc_file: str, field: str) -> int | None:
    """A "Field:   N kB" line of a /proc file, in bytes (None where the file or the line is missing)."""
    try:
        for line in Path(proc_file).read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _meminfo_available() -> int:
    available = _proc_kib_field("/proc/meminfo", "MemAvailable")
    if available is None:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return available


def _cgroup_limit() -> int | None:
    """This process's cgroup memory limit (v2, or v1), or None when it sets none."""
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def divisors(count: int) -> list[int]:
    return [size for size in range(1, count + 1) if count % size == 0]


def auto_micro_batch(config, specs: dict[str, TokenSpec], available: int, *, processes: int = 1,
                     device_type: str = "cpu") -> int | None:
    """The largest micro-batch that divides the per-process batch and fits ``available`` bytes (None: not
    even one sample fits)."""
    share = config.batch_size // processes
    for size in sorted(divisors(share), reverse=True):
        workload = workload_of(config, specs, processes=processes, device_type=device_type, micro_batch=size)
        if needed(estimate(workload))[0] <= available:
            return size
    return None


def advice(config, specs: dict[str, TokenSpec], available: int, *, processes: int = 1,
           device_type: str = "cpu") -> list[str]:
    """What to change so that the run fits ``available`` bytes, most direct first, each with its need."""
    workload = workload_of(config, specs, processes=processes, device_type=device_type)
    options = []
    share = config.batch_size // processes
    micro = auto_micro_batch(config, specs, available, processes=processes, device_type=device_type)
    if micro is not None and micro < workload.micro_batch:
        need = needed(estimate(workload_of(config, specs, processes=processes, device_type=device_type,
                                           micro_batch=micro)))[0]
        options.append(f"a smaller micro-batch: --set micro_batch_size={micro} (or auto; the same batch of "
                       f"{config.batch_size} in {share // micro} passes, needs {gib(need)})")
    key = checkpointing_key(config)
    if not workload.activation_checkpointing and key is not None:
        for size in sorted(divisors(share), reverse=True):
            need = needed(estimate(workload_of(config, specs, processes=processes, device_type=device_type,
                                               micro_batch=size, activation_checkpointing=True)))[0]
            if need <= available:
                options.append(f"activation checkpointing: --set {key}=true"
                               f"{'' if size == workload.micro_batch else f' with micro_batch_size={size}'} "
                               f"(needs {gib(need)}; each block's forward runs twice)")
                break
    if resolve_attention(workload.model.attention, workload.device_type) == "explicit":
        sdpa_model = workload.model.model_copy(update={"attention": "sdpa"})
        sdpa = Workload(**{**workload.__dict__, "model": sdpa_model})
        fitting = [size for size in sorted(divisors(share), reverse=True)
                   if needed(estimate(Workload(**{**sdpa.__dict__, "micro_batch": size})))[0] <= available]
        if fitting:  # offered only where it makes the run fit
            size = fitting[0]
            need = needed(estimate(Workload(**{**sdpa.__dict__, "micro_batch": size})))[0]
            options.append(f"attention without stored probabilities: --set model.attention=sdpa"
                           f"{'' if size == workload.micro_batch else f' with micro_batch_size={size}'} "
                           f"(needs {gib(need)})")
    if not workload.sharded:
        # processes on one machine share its RAM: on CPUs sharding helps across machines only
        where = "GPUs" if device_type == "cuda" else "machines (the processes of one machine share its RAM)"
        options.append(f"shard weights, gradients and AdamW moments over several {where}: torchrun "
                       "--nproc-per-node N -m pairless train ... --set distributed=fsdp")
    if processes > 1 and device_type == "cpu":
        options.append(f"fewer processes on this machine (now {processes}: each holds a copy of the model)")
    options.append("a smaller model preset, or a machine with more memory")
    return options


def fit_message(config, specs: dict[str, TokenSpec], memory: MemoryEstimate, available: int, where: str, *,
                processes: int = 1, preset: str | None = None, failed: str = "") -> str:
    """The words of the fit check and of an out-of-memory failure: the run, its need, what to change."""
    need, kind = needed(memory)
    name = preset or config.model.preset
    head = failed or "does not fit"
    lines = [f"the {name} model ({memory.parameters / 1e6:,.0f}M parameters) at batch {config.batch_size}, "
             f"micro-batch {memory.micro_batch} on {processes} "
             f"process(es) {head}: it needs about {gib(need)} of {kind}, {where} is {gib(available)} "
             f"(weights + gradients + AdamW {gib(memory.training_state)}, activations "
             f"{gib(memory.activations)}, runtime {gib(memory.runtime)}). To fit it, change one of:"]
    lines += [f"  - {option}" for option in advice(config, specs, available, processes=processes,
                                                   device_type=memory.device_type)]
    lines.append("  (if the detected memory is wrong, state it: --set device_memory_gb=N)")
    return "\n".join(lines)


def is_out_of_memory(error: BaseException) -> bool:
    """An allocator's failure: torch's OutOfMemoryError, Python's MemoryError, or the CPU allocator's
    RuntimeError ("can't allocate memory")."""
    if isinstance(error, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def _resident_bytes() -> int:
    """This process's resident memory now (it is part of what the run uses, not taken from the rest)."""
    return _proc_kib_field("/proc/self/status", "VmRSS") or 0


def machine_memory(config, device: torch.device) -> tuple[int, str, int]:
    """Bytes one process of the run may use, where the number comes from, and the processes sharing it
    (the processes of one machine share its host RAM; each GPU is its process's own)."""
    available, where = available_memory(device, config.device_memory_gb)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type == "cpu":
        if config.device_memory_gb is None:
            available += _resident_bytes()
        available //= max(1, local)
    return available, where, local


def check_fit(config, specs: dict[str, TokenSpec], context) -> int:
    """The micro-batch the run trains with (``micro_batch_size="auto"`` resolved); raises
    :class:`DoesNotFit` naming the run and what to change when it cannot fit this machine."""
    processes, device = context.world_size, context.device
    available, where, local = machine_memory(config, device)
    if local > 1 and device.type == "cpu":
        where = f"{where} shared by {local} processes"
    if config.micro_batch_size == "auto":
        micro = auto_micro_batch(config, specs, available, processes=processes, device_type=device.type)
        workload = workload_of(config, specs, processes=processes, device_type=device.type,
                               micro_batch=micro or 1)
        if micro is None:
            raise DoesNotFit(fit_message(config, specs, estimate(workload), available, where,
                                         processes=processes, failed="does not fit even at micro-batch 1"))
        if context.is_main:
            print(f"pairless train: micro_batch_size=auto -> {micro} (needs about "
                  f"{gib(needed(estimate(workload))[0])} of {gib(available)}, {where})")
        return micro
    workload = workload_of(config, specs, processes=processes, device_type=device.type)
    memory = estimate(workload)
    if needed(memory)[0] > available:
        raise DoesNotFit(fit_message(config, specs, memory, available, where, processes=processes))
    return workload.micro_batch


def out_of_memory(error: BaseException, config, specs: dict[str, TokenSpec], context, micro_batch: int,
                  during: str) -> DoesNotFit:
    """The words for an allocator failure ``during`` a step or a save: what the run needed and what to
    change (the same advice as the fit check)."""
    available, where, _ = machine_memory(config, context.device)
    memory = estimate(workload_of(config, specs, processes=context.world_size,
                                  device_type=context.device.type, micro_batch=micro_batch))
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return DoesNotFit(fit_message(config, specs, memory, available, where, processes=context.world_size,
                                  failed=f"ran out of memory during {during} ({first_line[:160]})"))
