"""The default thread count: the cores this process may use, capped by torch's default, never the load."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pairless.utils import threads


@pytest.mark.parametrize(("cores", "torch_count", "expected"), [(2, 2, 2), (1, 2, 1), (8, 2, 2), (4, 3, 3)])
def test_the_default_is_the_usable_cores_capped_by_torchs(monkeypatch, cores, torch_count, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    with threads.torch_threads(torch_count):
        assert threads.default_threads() == expected
        assert threads.choose_threads() == expected
    assert threads.choose_threads(3) == 3  # a requested count is taken as it is
    with pytest.raises(ValueError, match="positive"):
        threads.choose_threads(0)


def test_the_default_does_not_read_the_machines_load(monkeypatch):
    # Whatever the load average and /proc/stat say, the count is the same.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: pytest.fail("the thread default read the load average"))
    real_open = open

    def guarded_open(path, *args, **kwargs):
        if str(path).startswith("/proc/stat") or str(path).startswith("/proc/loadavg"):
            pytest.fail(f"the thread default read {path}")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    with threads.torch_threads(2):
        assert threads.default_threads() == 2


COUNT = "from pairless.utils.threads import default_threads; print(default_threads())"


def test_a_busy_core_beside_it_does_not_change_the_count():
    # The count a fresh process picks, on an idle machine and with a process spinning on a core beside it.
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}

    def count() -> str:
        return subprocess.run([sys.executable, "-c", COUNT], capture_output=True, text=True, check=True,
                              env=environment).stdout.strip()

    idle = count()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = [count() for _ in range(2)]
    finally:
        spinner.kill()
        spinner.wait()
    assert busy == [idle, idle]


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with threads.torch_threads(1) as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with threads.torch_threads(None) as count:
        assert count == before
