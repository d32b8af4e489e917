"""Training-state files and checkpoint folders: exact round trip, no pickle, only complete ones count."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from pairless.training.checkpoint import (
    STATE_FILE,
    TrainingState,
    latest_checkpoint,
    list_checkpoints,
    read_state,
    save_checkpoint,
    write_state,
)
from pairless.utils.storage import atomic_write_bytes


def trained_optimizer(steps: int = 3) -> tuple[torch.nn.Module, torch.optim.AdamW]:
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(
        [{"params": [model[0].weight, model[2].weight], "weight_decay": 0.05},
         {"params": [model[0].bias, model[1].weight, model[1].bias, model[2].bias], "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), fused=False)
    for _ in range(steps):
        model(torch.randn(5, 4, generator=generator)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_training_state_round_trips_exactly(tmp_path):
    _, optimizer = trained_optimizer()
    state = TrainingState(step=3, tokens_seen=1234, optimizer=optimizer.state_dict(),
                          rng={"torch_cpu": torch.get_rng_state()},
                          info={"batches_per_epoch": 7, "tokens_per_modality": {"rgb": 5}, "loss": 1.25})
    write_state(tmp_path / STATE_FILE, state)
    loaded = read_state(tmp_path / STATE_FILE)
    assert (loaded.step, loaded.tokens_seen, loaded.info) == (3, 1234, state.info)
    assert torch.equal(loaded.rng["torch_cpu"], state.rng["torch_cpu"])
    original = optimizer.state_dict()
    assert loaded.optimizer["param_groups"] == original["param_groups"]
    assert set(loaded.optimizer["state"]) == set(original["state"])
    for index, entries in original["state"].items():
        for key, value in entries.items():
            assert torch.equal(loaded.optimizer["state"][index][key], value), (index, key)
    # The loaded state drives an optimizer to the same next step as the original.
    model_a, optimizer_a = trained_optimizer()
    model_b, optimizer_b = trained_optimizer(steps=0)
    model_b.load_state_dict(model_a.state_dict())
    optimizer_b.load_state_dict(loaded.optimizer)
    batch = torch.ones(2, 4)
    for model, optimizer in ((model_a, optimizer_a), (model_b, optimizer_b)):
        model(batch).sum().backward()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True))


class _Exploit:
    """Unpickling this runs code: it creates the file named in ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_a_crafted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / STATE_FILE
    atomic_write_bytes(path, pickle.dumps({"step": 1, "payload": _Exploit(str(marker))}))
    with pytest.raises(ValueError, match=r"not a pairless training-state file \(safetensors expected"):
        read_state(path)
    assert not marker.exists()
    # torch.save's format (a zip of pickles) is refused too.
    torch.save({"step": 1, "payload": _Exploit(str(marker))}, path)
    with pytest.raises(ValueError, match="not a pairless training-state file"):
        read_state(path)
    assert not marker.exists()


def test_a_safetensors_file_of_another_kind_is_refused(tmp_path):
    import safetensors.torch

    path = tmp_path / STATE_FILE
    safetensors.torch.save_file({"weight": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="metadata 'format' is 'pt'"):
        read_state(path)


def test_only_complete_checkpoints_are_found_and_old_ones_pruned(tmp_path):
    _, optimizer = trained_optimizer()
    folder = tmp_path / "checkpoints"

    def weights(path):
        atomic_write_bytes(path, b"weights")

    for step in (2, 4, 6):
        save_checkpoint(folder, TrainingState(step, step * 10, optimizer.state_dict()), weights, keep=2)
    assert [step for step, _ in list_checkpoints(folder)] == [4, 6]
    # A folder without its completion marker (a process killed mid-write) is never chosen.
    (folder / "step-00000008").mkdir()
    (folder / "step-00000008" / STATE_FILE).write_bytes(b"partial")
    assert latest_checkpoint(folder).name == "step-00000006"
    assert read_state(latest_checkpoint(folder) / STATE_FILE).tokens_seen == 60

    def failing(path):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(folder, TrainingState(10, 100, optimizer.state_dict()), failing)
    assert latest_checkpoint(folder).name == "step-00000006" and not (folder / "step-00000010").exists()
    assert latest_checkpoint(tmp_path / "nothing") is None
