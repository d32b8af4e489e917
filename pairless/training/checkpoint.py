"""Training checkpoints: model weights plus a training-state file, written atomically, read without pickle.

A checkpoint is a folder ``RUN/checkpoints/step-00001234/`` holding
``model.safetensors`` (written by :func:`pairless.model.save_model`),
``state.safetensors`` (this module) and ``COMPLETE.json``. It is built under
a temporary name and published only when complete (``pairless.utils.storage.staged_dir``),
so a process killed while writing leaves the previous checkpoint intact.

The training-state file is a safetensors file: tensors (AdamW moments, RNG
states) as named arrays and everything else (step, tokens seen, data
position, optimizer hyper-parameters) as JSON in its metadata. Nothing in it
can execute code when loaded; a file that is not safetensors (a pickle, say)
is refused with an error naming it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import torch

from pairless.utils.storage import is_complete, staged_dir
from pairless.utils.tensor_files import atomic_write_safetensors

STATE_FORMAT = "pairless-training-state"
STATE_VERSION = 1
STATE_FILE = "state.safetensors"
MODEL_FILE = "model.safetensors"
CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")


@dataclass
class TrainingState:
    """Everything besides the weights that resuming needs to continue exactly."""

    step: int  # optimizer steps taken
    tokens_seen: int  # valid input + target tokens consumed, over all processes
    optimizer: dict  # torch.optim.Optimizer.state_dict()
    rng: dict[str, torch.Tensor] = field(default_factory=dict)  # generator states by name
    info: dict = field(default_factory=dict)  # JSON-able: data position, wall time, last loss, ...


def state_tensors(state: TrainingState) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A training state as safetensors content: tensors (by reference, not copied) and JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for param_index, entries in state.optimizer.get("state", {}).items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_index}.{key}"] = value.detach()
            else:
                scalars.setdefault(str(param_index), {})[key] = value
    for name, value in state.rng.items():
        tensors[f"rng.{name}"] = value.detach()
    payload = {
        "step": state.step,
        "tokens_seen": state.tokens_seen,
        "info": state.info,
        "optimizer_param_groups": state.optimizer.get("param_groups", []),
        "optimizer_scalars": scalars,
    }
    metadata = {"format": STATE_FORMAT, "version": str(STATE_VERSION), "state": json.dumps(payload)}
    return tensors, metadata


def write_state(path: str | Path, state: TrainingState) -> None:
    """Write a training-state file atomically, tensor by tensor (never the whole file in memory)."""
    atomic_write_safetensors(path, *state_tensors(state))


def read_state(path: str | Path) -> TrainingState:
    """Read a training-state file; anything but a pairless safetensors state file is refused."""
    path = Path(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path}: not a pairless training-state file (safetensors expected; "
                         f"refusing to load it: {error})") from None
    if metadata.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: metadata 'format' is {metadata.get('format')!r}, "
                         f"expected {STATE_FORMAT!r}")
    if metadata.get("version") != str(STATE_VERSION):
        raise ValueError(f"{path}: training-state version {metadata.get('version')!r}; "
                         f"this pairless reads version {STATE_VERSION}")
    try:
        payload = json.loads(metadata["state"])
    except (KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: metadata 'state' is missing or not JSON ({error})") from None
    optimizer_state: dict[int, dict] = {}
    rng: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        kind, _, rest = key.partition(".")
        if kind == "optimizer":
            param_index, _, name = rest.partition(".")
            optimizer_state.setdefault(int(param_index), {})[name] = tensor
        elif kind == "rng":
            rng[rest] = tensor
        else:
            raise ValueError(f"{path}: unexpected tensor {key!r} in a training-state file")
    for param_index, entries in payload["optimizer_scalars"].items():
        optimizer_state.setdefault(int(param_index), {}).update(entries)
    groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group
              for group in payload["optimizer_param_groups"]]
    return TrainingState(
        step=int(payload["step"]),
        tokens_seen=int(payload["tokens_seen"]),
        optimizer={"state": optimizer_state, "param_groups": groups},
        rng=rng,
        info=payload.get("info", {}),
    )


def shard_file(rank: int) -> str:
    """The training-state file of process ``rank`` in a sharded (FSDP) checkpoint: its optimizer shard."""
    return f"state.rank{rank:05d}.safetensors"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def read_state_info(path: str | Path) -> dict:
    """The ``info`` of a training-state file (thread count, wall time, ...) without reading its tensors."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        return json.loads(metadata.get("state", "{}")).get("info", {})
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path}: not a pairless training-state file ({error})") from None


def list_checkpoints(checkpoints_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``checkpoints_dir`` as (step, folder), oldest first."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for folder in checkpoints_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(folder.name)
        if match and folder.is_dir() and is_complete(folder):
            found.append((int(match.group(1)), folder))
    return sorted(found)


def latest_checkpoint(checkpoints_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None; incomplete ones are never returned."""
    found = list_checkpoints(checkpoints_dir)
    return found[-1][1] if found else None


def save_checkpoint(
    checkpoints_dir: str | Path,
    state: TrainingState,
    write_weights: Callable[[Path], None],
    keep: int = 2,
    extra: dict[str, Path] | None = None,
) -> Path:
    """Publish ``checkpoints_dir/step-N/`` atomically, then delete all but the newest ``keep``.

    ``write_weights(path)`` writes the model's safetensors file at ``path``; ``extra`` maps more file names
    to files already written elsewhere (the per-process optimizer shards of a sharded run), moved in.
    """
    if keep < 1:
        raise ValueError(f"keep_checkpoints: must be at least 1, got {keep}")
    final = Path(checkpoints_dir) / checkpoint_name(state.step)
    with staged_dir(final, {"step": state.step, "tokens_seen": state.tokens_seen}, overwrite=True) as staging:
        write_weights(staging / MODEL_FILE)
        write_state(staging / STATE_FILE, state)
        for name, source in (extra or {}).items():
            shutil.move(str(source), str(staging / name))
    for _, old in list_checkpoints(checkpoints_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class CheckpointWriter:
    """Writes checkpoints in order, either before the next step or in a background thread.

    Asynchronous: the weights and the optimizer state are copied to host memory first (the next steps change
    them in place), then one thread serialises and publishes the checkpoint while training goes on. The
    folder is still published atomically (``staged_dir``) and a new write waits for the one before it, so a
    process killed at any point leaves the previous complete checkpoint as the newest one.
    """

    def __init__(self, mode: str, device: torch.device):
        self.asynchronous = mode == "async" or (mode == "auto" and device.type == "cuda")
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pairless-checkpoint") \
            if self.asynchronous else None
        self.pending: Future | None = None

    def submit(self, write: Callable[[], object]) -> None:
        """Run ``write`` after the previous write (raising its error, if it failed)."""
        self.wait()
        if self.pool is None:
            write()
        else:
            self.pending = self.pool.submit(write)

    def wait(self, raise_error: bool = True) -> None:
        """Until the last write is published; its error is raised (or, with ``raise_error=False``, dropped:
        when another error is on its way out)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            error = pending.exception()
            if error is not None and raise_error:
                raise error
