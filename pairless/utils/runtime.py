"""Where a stage runs: its torch thread count and its device, resolved once and recorded with its outputs.

Every command that runs a model or a tokenizer takes ``--threads N`` and ``--device auto|cpu|cuda[:N]``
(:mod:`pairless.commands.runtime` adds both); the experiment runner passes one :class:`Runtime` to each of
its stages. ``auto`` is the GPU when torch sees one, else the CPU; a CUDA device asked for where there is
none is an error naming it. The thread count defaults to :func:`pairless.utils.threads.default_threads`
(the cores this process may use, never the machine's load).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from pairless.utils.threads import choose_threads

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> the first GPU when torch sees one, else the CPU; ``cpu`` / ``cuda[:N]`` checked, as given.

    ValueError naming the device when it is malformed or absent (no CUDA, or no GPU of that index).
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not DEVICE_PATTERN.match(name):
        raise ValueError(f"device: {name!r} is not one of {DEVICE_CHOICES}")
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} was requested but this torch ({torch.__version__}) sees no CUDA "
                         "device; use --device cpu (or auto)")
    device = torch.device(name if ":" in name else "cuda:0")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"device: {name!r} was requested but only {count} CUDA device(s) are present "
                         f"(cuda:0..cuda:{count - 1})")
    return device


@dataclass(frozen=True)
class Runtime:
    """A resolved thread count and device (see :meth:`resolve`)."""

    threads: int
    device: torch.device

    @classmethod
    def resolve(cls, threads: int | None = None, device: str | torch.device = "auto") -> Runtime:
        """``threads`` (None: the fixed default of the usable cores), ``device`` (``auto``: CUDA if any)."""
        return cls(choose_threads(threads), resolve_device(device))

    def record(self) -> dict[str, object]:
        """What outputs record about how they were made: {"threads": N, "device": "cpu" | "cuda:N"}."""
        return {"threads": self.threads, "device": str(self.device)}
