"""Saving and loading a :class:`~pairless.model.transformer.FourM` as safetensors (no pickle).

The file holds the weights plus, as JSON metadata, the model config and the
token specs, so that :func:`load_model` rebuilds the model from the file alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from pairless.batch import TokenSpec
from pairless.model.config import ModelConfig
from pairless.model.transformer import FourM
from pairless.utils.tensor_files import atomic_write_safetensors


def save_model(path: str | Path, model: FourM, state: dict[str, torch.Tensor] | None = None) -> None:
    """Weights as safetensors (atomic, tensor by tensor), with the model config and token specs as JSON
    metadata.

    ``state``: the weights to write instead of ``model.state_dict()`` (e.g. gathered from a sharded model).
    """
    # no host copy here: the writer brings each tensor to the host on its own as it writes it
    tensors = model.state_dict() if state is None else state
    metadata = {
        "format": "pairless.FourM",
        "config": model.config.model_dump_json(),
        "specs": json.dumps([asdict(spec) for spec in model.specs.values()]),
    }
    atomic_write_safetensors(path, tensors, metadata)


def read_weights(path: str | Path,
                 device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of a file written by :func:`save_model` (without building a model: resuming
    loads them straight into the one it trains, so a large model is not held twice)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise ValueError(f"{path}: cannot read model weights ({error})") from error
    if metadata.get("format") != "pairless.FourM":
        raise ValueError(f"{path}: not a pairless model file (metadata format={metadata.get('format')!r})")
    return tensors, metadata


def load_model(path: str | Path, device: str | torch.device = "cpu") -> FourM:
    """The model written by :func:`save_model` (no pickle: config and specs come from JSON metadata)."""
    path = Path(path)
    tensors, metadata = read_weights(path, device)
    config = ModelConfig.from_saved(metadata["config"])
    specs = {}
    for entry in json.loads(metadata["specs"]):
        entry["grid"] = tuple(entry["grid"]) if entry.get("grid") is not None else None
        specs[entry["name"]] = TokenSpec(**entry)
    model = FourM(config, specs).to(device)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        # e.g. the single flat output head of early versions, which is no longer read: retrain that run
        raise ValueError(f"{path}: the weights do not fit the model they describe ({error})") from error
    return model
