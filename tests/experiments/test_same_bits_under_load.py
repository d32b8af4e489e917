"""The same ``pairless run demo --preset micro``, once on a quiet machine and once with a CPU-burning process
beside it, leaves byte-identical run folders (weights, checkpoints and configs) (issue 30).

The thread count was once chosen from the machine's load, so a busy core beside a run changed the count and
with it the last bits of every trained weight. Now it depends only on the cores the process may use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pairless.utils.storage import read_json

# What must not differ: everything a run folder holds but the files that record wall-clock time (log.jsonl's
# throughput, COMPLETE.json's wall seconds, the TensorBoard events, the checkpoints' training state, whose
# metadata holds the elapsed time; the state's tensors are compared through the final weights they lead to).
TIMED = {"log.jsonl", "COMPLETE.json", "state.safetensors"}


def _run_demo(out: Path) -> None:
    # At the default thread count (the test workers' OMP_NUM_THREADS=1 dropped): a count chosen by load
    # would then be 2 on a quiet 2-core machine and 1 beside the busy core.
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    command = [sys.executable, "-m", "pairless", "run", "demo", "--preset", "micro", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env={**environment, "TQDM_DISABLE": "1"},
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _run_files(results: Path) -> dict[str, bytes]:
    files = {}
    for run in sorted((results / "cache" / "runs").iterdir()):
        for path in sorted(run.rglob("*")):
            if path.is_file() and path.name not in TIMED and "tb" not in path.relative_to(run).parts:
                files[path.relative_to(results).as_posix()] = path.read_bytes()
    return files


@pytest.mark.slow
def test_a_busy_core_beside_the_run_changes_no_bit(tmp_path):
    out = tmp_path / "results"
    _run_demo(out)
    quiet = tmp_path / "quiet"
    out.rename(quiet)  # the second run writes to the same path: configs record absolute paths
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        _run_demo(out)
    finally:
        burner.kill()
        burner.wait()
    first, second = _run_files(quiet), _run_files(out)
    assert sorted(first) == sorted(second)
    assert any(name.endswith("/model.safetensors") for name in first)
    assert any(name.endswith("/config.json") for name in first)
    differing = [name for name in first if first[name] != second[name]]
    assert not differing, f"differ with a busy core beside the run: {differing}"
    # the thread count each run used is recorded, and it is the same
    counts = {read_json(path)["num_threads"] for path in (out / "cache" / "runs").glob("*/config.json")}
    assert len(counts) == 1 and None not in counts
