"""The thread count stages choose: the cores other processes leave free, not the load this process made."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pairless.utils import threads


@pytest.mark.parametrize(("others", "cores", "expected"), [(0.0, 2, 2), (0.3, 2, 2), (0.6, 2, 1), (1.0, 2, 1),
                                                           (1.9, 2, 1), (5.0, 2, 1), (1.2, 8, 2)])
def test_the_count_is_the_free_cores_capped_by_torchs(monkeypatch, others, cores, expected):
    monkeypatch.setattr(threads, "_last_sample", None)
    monkeypatch.setattr(threads, "other_busy_cores", lambda: others)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    with threads.torch_threads(2):
        assert threads.choose_threads() == expected
    assert threads.choose_threads(3) == 3  # a requested count is taken as it is


def test_without_proc_stat_the_load_average_decides(monkeypatch):
    monkeypatch.setattr(threads, "_last_sample", None)
    monkeypatch.setattr(threads, "other_busy_cores", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with threads.torch_threads(2):
        monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 1.0, 1.0))
        assert threads.choose_threads() == 1
        monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.0, 1.0))
        assert threads.choose_threads() == 2


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs /proc/stat")
def test_a_busy_process_is_seen():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        seen = threads.other_busy_cores(window=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert seen is not None and seen >= 0.6, seen


def test_this_processs_own_cpu_time_is_left_out(monkeypatch):
    # A fake 2-core machine: over a 1 s window /proc/stat counts 2 CPU-seconds, all busy; 1.5 of them were
    # this process's own (its last stage's threads winding down), so other processes kept 0.5 core busy.
    ticks = iter([(10.0, 100.0), (12.0, 102.0)])
    own = iter([50.0, 51.5])
    clock = iter([0.0, 1.0])
    monkeypatch.setattr(threads, "_cpu_ticks", lambda: next(ticks))
    monkeypatch.setattr(threads.time, "process_time", lambda: next(own))
    monkeypatch.setattr(threads.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert threads.other_busy_cores(window=1.0) == pytest.approx(0.5)


def test_one_sample_serves_the_next_few_seconds(monkeypatch):
    calls = []
    monkeypatch.setattr(threads, "_last_sample", None)
    monkeypatch.setattr(threads, "other_busy_cores", lambda: calls.append(1) or 0.0)
    for _ in range(5):
        threads.choose_threads()
    assert len(calls) == 1
    monkeypatch.setattr(threads, "_last_sample",
                        (threads.time.monotonic() - threads.SAMPLE_REUSE_SECONDS, 0.0))
    threads.choose_threads()
    assert len(calls) == 2
