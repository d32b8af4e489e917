"""CPU thread counts for torch, chosen once for every stage.

The library takes thread counts from its caller (None: the current count);
:func:`choose_threads` is called only by the commands and the experiment
runner, so that a library call's result does not depend on the machine's load.

On a machine whose cores are busy with other work, two OpenMP threads that
wait for each other at every op were measured 3-60x slower than one
(tokenizer training, evaluation, training steps; see the benchmarks), while
on an idle machine two threads are faster. So, unless a count is requested,
a stage takes the cores that other processes leave free: it samples the
machine's busy CPU time for a moment (``/proc/stat``; one sample serves the calls
of the next few seconds) and subtracts its own
process's, so that a long ``pairless run`` is not misled by the load its own
previous stage left in the load average (which it was, taking one thread
for every other training run on an idle machine). Where ``/proc/stat`` is
missing, the 1-minute load average decides (one thread above the core
count). The chosen count can change the last bits of results (reductions
split differently), which is why training records it in its checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import torch


def _cpu_ticks() -> tuple[float, float] | None:
    """(busy, total) CPU time of the whole machine since boot, in seconds; None without ``/proc/stat``."""
    try:
        with open("/proc/stat") as handle:
            fields = [float(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / ticks, sum(fields[:8]) / ticks


def other_busy_cores(window: float = 0.3) -> float | None:
    """Cores kept busy by other processes over the next ``window`` seconds (this process's own left out)."""
    before, own_before, started = _cpu_ticks(), time.process_time(), time.perf_counter()
    if before is None:
        return None
    time.sleep(window)
    after, own, elapsed = _cpu_ticks(), time.process_time() - own_before, time.perf_counter() - started
    if after is None or after[1] <= before[1]:
        return None
    # busy / total is the busy fraction of all cores; times the core count is the number of busy cores.
    total_cores = os.cpu_count() or 1
    busy = (after[0] - before[0]) / (after[1] - before[1]) * total_cores
    return max(0.0, busy - own / elapsed)


# One sample serves the calls of the next few seconds: sampling (a 0.3 s sleep) for each of many short
# commands (the tests, many directions) made them slower.
SAMPLE_REUSE_SECONDS = 5.0
_last_sample: tuple[float, float | None] | None = None  # (time.monotonic() when taken, other busy cores)


def _recent_other_busy_cores() -> float | None:
    global _last_sample
    if _last_sample is None or time.monotonic() - _last_sample[0] >= SAMPLE_REUSE_SECONDS:
        _last_sample = (time.monotonic(), other_busy_cores())
    return _last_sample[1]


def choose_threads(requested: int | None = None) -> int:
    """``requested`` if given, else the cores other processes leave free (>= 1, <= torch's count)."""
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    others = _recent_other_busy_cores()
    if others is None:
        return 1 if os.getloadavg()[0] > cores else torch.get_num_threads()
    free = int(cores - others + 0.5)  # a core counts as free when others use less than half of it
    return max(1, min(torch.get_num_threads(), free))


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

