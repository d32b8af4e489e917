"""CPU thread counts for torch, chosen once for every stage.

On a machine whose cores are all busy (load average above the core count),
two OpenMP threads that wait for each other at every op were measured 3-60x
slower than one (tokenizer training, evaluation, training steps; see the
benchmarks), while on an idle machine two threads are faster. So, unless a
count is requested, stages use one thread when the machine is oversubscribed
and torch's default otherwise. The chosen count can change the last bits of
results (reductions split differently), which is why training records it in
its checkpoints.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def choose_threads(requested: int | None = None) -> int:
    """``requested`` if given, else 1 on an oversubscribed machine, else torch's current count."""
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if os.getloadavg()[0] > cores else torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[int]:
    """Run a block with ``count`` torch threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)


def cpu_threads(device: torch.device, requested: int | None = None) -> contextlib.AbstractContextManager[int]:
    """:func:`torch_threads` with :func:`choose_threads`' count on CPU; the current count on GPUs."""
    if device.type != "cpu" and requested is None:
        return torch_threads(torch.get_num_threads())
    return torch_threads(choose_threads(requested))
