"""Test-wide settings: one torch thread per pytest-xdist worker.

CI runs the suite with two workers on two cores; letting each worker's torch
use two OpenMP threads oversubscribes the machine, and OpenMP threads that
spin while waiting for a core make that many times slower, not 2x.
"""

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def one_thread():
    """One intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    its models are tiny, and on a loaded 2-core machine two threads spin-wait each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def modality_registry_restored():
    """Each test starts from the registry the test before it found: a command run in-process registers the
    modalities a folder declares, and a later test in the same worker declaring another ``thermal`` then
    failed (tests/docs/test_docs_commands.py before tests/training/test_adapter.py)."""
    from pairless import modalities

    before = dict(modalities._REGISTRY)
    yield
    modalities._REGISTRY.clear()
    modalities._REGISTRY.update(before)
