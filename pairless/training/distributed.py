"""Multi-process training helpers: the torchrun environment, process groups, collectives.

``torchrun --nproc-per-node N -m pairless train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup` reads them, joins the process group (gloo on CPU, NCCL on
GPU) and picks the device. With no such environment it returns a
one-process context and every collective here is a no-op, so the training
loop has a single code path and the model code knows nothing about it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class ProcessContext:
    """Where this process sits in the job: its rank, the number of processes, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool  # whether setup() created the process group (and teardown() must end it)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, logs and progress bars."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU when there is one, else the CPU; ``cpu`` / ``cuda[:N]`` as given."""
    if not DEVICE_PATTERN.match(name):
        raise ValueError(f"device: {name!r} is not one of auto, cpu, cuda, cuda:N")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {name!r} was requested but no CUDA device is available")
        # Under torchrun each process owns the GPU of its local rank.
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")


def setup(device_name: str = "auto") -> ProcessContext:
    """Join the torchrun process group when there is one; otherwise a one-process context."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"environment: RANK={rank} is not within WORLD_SIZE={world_size}")
    device = resolve_device(device_name, local_rank)
    initialized_here = False
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                rank=rank, world_size=world_size)
        initialized_here = True
    return ProcessContext(rank, world_size, local_rank, device, initialized_here)


def teardown(context: ProcessContext) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if context.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: ProcessContext) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; a no-op on one process."""
    if context.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(context: ProcessContext) -> None:
    """Wait for every process; a no-op on one process."""
    if context.is_distributed:
        dist.barrier()


def broadcast_int(value: int, context: ProcessContext) -> int:
    """Rank 0's ``value`` on every process (so that all ranks agree on, e.g., which checkpoint to load)."""
    if not context.is_distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=context.device)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def shard_model(model: torch.nn.Module, context: ProcessContext,
                param_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) in place: every encoder and decoder block is its own
    unit (gathered just before it runs, freed after); the rest (embeddings, heads, norms) is the root unit,
    gathered for the whole forward. Parameters become DTensors sharded along dim 0 over the processes;
    build the optimizer afterwards. ``param_dtype`` (bf16 training): the weights are all-gathered and
    computed with in that dtype, while the shards, AdamW and the gradient reduce-scatter stay in fp32.
    A model built on the meta device is sharded without ever existing whole on a device (then
    ``to_empty`` and :func:`load_full_state_dict`). The training step then computes the loss with
    ``touch_every_parameter`` (FourM.forward), so that every process has the same parameters with a
    gradient."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not context.is_distributed:
        return model
    mesh = init_device_mesh(context.device.type, (context.world_size,))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype,
                                  reduce_dtype=torch.float32 if param_dtype is not None else None)
    for block in [*getattr(model, "encoder", []), *getattr(model, "decoder", [])]:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` was sharded by :func:`shard_model` (its parameters are DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(parameter, DTensor) for parameter in model.parameters())


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on every process (a collective for a sharded model: call it on all)."""
    from torch.distributed.tensor import DTensor

    return {name: (value.full_tensor() if isinstance(value, DTensor) else value).detach()
            for name, value in model.state_dict().items()}


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load whole weights into ``model``, each process keeping its own shard of a sharded model (one
    parameter at a time is whole on the device)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(f"weights missing for {missing[:3]}")
    with torch.no_grad():
        for name, target in own.items():
            value = state[name].to(target.dtype)
            if isinstance(target, DTensor):
                local = distribute_tensor(value.to(target.device), target.device_mesh, target.placements)
                target.to_local().copy_(local.to_local())
            else:
                target.copy_(value)


def wrap_model(model: torch.nn.Module, context: ProcessContext) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` on several processes; the model itself otherwise (also when
    it is sharded by :func:`shard_model`: FSDP2 hooks live in the module).

    A batch slice need not contain every modality, so the output head of a modality it does not predict
    would get no gradient on that process. DDP is told every parameter gets one
    (``find_unused_parameters=False``: no search for unused parameters after each forward), which holds
    because the training step calls the wrapped model with ``touch_unused_heads=True``
    (:meth:`pairless.model.FourM.forward`: those heads enter the loss times zero) whenever the model is
    wrapped.
    """
    if not context.is_distributed or is_sharded(model):
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                                     find_unused_parameters=False)
