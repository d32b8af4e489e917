"""Timing short repeated calls for the plan's calibration (pairless.experiments.calibrate,
pairless.training.compute.measure_cpu).

A call is timed after warm-up calls (kernel choice, allocation, bf16 weight caches: a tiny model's first
training steps run up to 10x slower than the rest) and scored by its fastest repetition. Another process on
the machine slows some repetitions enormously (two torch threads on two cores stall whenever another process
takes a core: the median of a tiny model's steps, timed beside other work, was over 20x its fastest), so the
fastest is the stable figure: what the work runs at on a machine it has to itself (docs/training.md, "The
plan").
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pairless.utils.threads import torch_threads

WARMUP = 2  # calls timed but not scored
MAX_REPEATS = 20


def fastest(function: Callable[[], object], seconds: float, threads: int | None = None) -> float:
    """Seconds of the fastest call of ``function`` after :data:`WARMUP` calls, repeating for about
    ``seconds`` (at least 3 scored calls, at most :data:`MAX_REPEATS`), with ``threads`` torch threads
    (None: the current count)."""
    times: list[float] = []
    with torch_threads(threads):
        for _ in range(WARMUP):
            function()
        while len(times) < 3 or (sum(times) < seconds and len(times) < MAX_REPEATS):
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
    return min(times)
