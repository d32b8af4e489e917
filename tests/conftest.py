"""Test-wide settings: one torch thread per pytest-xdist worker.

CI runs the suite with two workers on two cores; letting each worker's torch
use two OpenMP threads oversubscribes the machine, and OpenMP threads that
spin while waiting for a core make that many times slower, not 2x.
"""

import os

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
