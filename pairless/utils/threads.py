"""CPU thread counts for torch: a fixed default from the cores this process may use, never from load.

The thread count splits reductions (matrix products, sums) into other partitions, so it changes the last bits
of results. A count chosen from what other processes do at the moment made the same command give other bits
on a busy machine than on an idle one, and a training run resumed after a kill (the killed process still in
the load average) continue on another count than it started with (issue 30). So every result-producing path
takes its count from the caller (``--threads N``, ``num_threads`` / ``threads`` in a config) and otherwise
from :func:`default_threads`, which depends only on the cores the process may run on (its CPU affinity) and
torch's own default (``OMP_NUM_THREADS`` when set): the same machine and environment give the same count,
whatever else runs beside it. Each output records the count that shaped it (run config, checkpoints,
``eval.json``, generation requests, tokenizer metadata), and a resumed training run keeps its recorded count.

On a machine whose cores are busy with other work, two OpenMP threads that wait for each other at every op
were measured 3-60x slower than one (see the benchmarks): pass ``--threads 1`` there. That is a choice of
speed the user makes and the outputs record, not one the tool makes behind their back.

The library takes thread counts from its caller (None: the current count); :func:`choose_threads` is called
by the commands and the experiment runner.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; the machine's count where that is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_threads() -> int:
    """The default torch thread count: torch's own default capped by the usable cores (>= 1).

    Derived from the process's affinity and environment only, so that it is the same on an idle and on a
    loaded machine. torch's default is read from ``torch.get_num_threads()``: inside a block that changed it
    (:func:`torch_threads`, a test's fixture) that block's count is the default.
    """
    return max(1, min(usable_cores(), torch.get_num_threads()))


def choose_threads(requested: int | None = None) -> int:
    """``requested`` if given, else :func:`default_threads` (never chosen from the machine's load)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads: {requested} is not a positive thread count")
        return requested
    return default_threads()


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[int]:
    """Run a block with ``count`` torch threads (None: the current count), restoring the count afterwards."""
    previous = torch.get_num_threads()
    count = previous if count is None else count
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)
