"""What every neural (FSQ) tokenizer shares: input checks, batch-size-independent encoding, save/load.

A neural tokenizer is an ``nn.Module`` holding an encoder, an FSQ bottleneck
and a decoder. Subclasses supply ``prepare`` (natural batch -> network
input and loss target), ``quantize`` (network input -> code indices),
``reconstruct_from_indices`` (indices -> network output), ``loss`` and
``to_natural``. This base turns those into the public ``encode`` /
``decode`` API.

Exactness: ids must not depend on how callers batch their data, so
``encode`` always runs the network on chunks of exactly ``ENCODE_CHUNK``
samples (the last one zero-padded). Kernel choices on CPU depend on the batch
shape, and a different kernel may round differently and flip an FSQ code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pairless.batch import TokenSpec
from pairless.config import validate
from pairless.utils.storage import atomic_write_bytes, atomic_write_json

ENCODE_CHUNK = 128
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"


class NeuralTokenizer(nn.Module):
    """Base class: subclasses set ``kind`` and implement the network-side methods."""

    kind: str = ""

    def __init__(self, config):
        super().__init__()
        self.config = config

    # --- subclass hooks -------------------------------------------------
    @property
    def spec(self) -> TokenSpec:
        raise NotImplementedError

    def natural_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def natural_dtype(self) -> str:
        raise NotImplementedError

    def prepare(self, values: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def quantize(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input -> (quantized codes, indices (N, L))."""
        raise NotImplementedError

    def reconstruct_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_natural(self, outputs: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    # --- shared behaviour -------------------------------------------------
    @property
    def modality(self) -> str:
        return self.config.modality

    @property
    def device(self) -> torch.device:
        """Where the weights are (``.to(device)`` moves them): encode and decode run there and return CPU
        results."""
        parameter = next(self.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: network input -> (reconstruction, indices)."""
        codes, indices = self.quantize(inputs)
        return self.reconstruct_from_codes(codes), indices

    def check_values(self, values) -> np.ndarray:
        """Refuse anything that is not a batch ``[N, *natural_shape]`` of the natural dtype."""
        expected_shape = self.natural_shape()
        expected_dtype = np.dtype(self.natural_dtype())
        if not isinstance(values, np.ndarray):
            raise TypeError(f"{self.modality}: expected a numpy array of shape [N, "
                            f"{', '.join(map(str, expected_shape))}] "
                            f"and dtype {expected_dtype}, got {type(values).__name__}")
        if values.ndim != len(expected_shape) + 1 or values.shape[1:] != expected_shape:
            raise ValueError(f"{self.modality}: expected shape [N, {', '.join(map(str, expected_shape))}], "
                             f"got {list(values.shape)}")
        if values.dtype != expected_dtype:
            raise TypeError(f"{self.modality}: expected dtype {expected_dtype}, got {values.dtype} "
                            f"(convert with values.astype(np.{expected_dtype}) if that is lossless for your "
                            "data)")
        return values

    def check_ids(self, ids) -> torch.Tensor:
        spec = self.spec
        ids = torch.as_tensor(ids)
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"{self.modality}: token ids must be integers, got {ids.dtype}")
        if ids.ndim != 2 or ids.shape[1] != spec.num_tokens:
            raise ValueError(f"{self.modality}: expected token ids of shape [N, {spec.num_tokens}], got "
                             f"{list(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= spec.vocab_size):
            raise ValueError(f"{self.modality}: token ids must lie in [0, {spec.vocab_size}), "
                             f"got [{int(ids.min())}, {int(ids.max())}]")
        return ids.long()

    @torch.no_grad()
    def encode(self, values: np.ndarray, autocast: bool = True) -> torch.Tensor:
        """Natural batch -> token ids ``LongTensor [N, num_tokens]`` (independent of batch size)."""
        values = self.check_values(values)
        was_training = self.training
        self.eval()
        out = []
        for start in range(0, len(values), ENCODE_CHUNK):
            chunk = values[start:start + ENCODE_CHUNK]
            count = len(chunk)
            if count < ENCODE_CHUNK:
                padding = np.zeros((ENCODE_CHUNK - count, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            inputs, _ = self.prepare(chunk)
            device = self.device
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                _, indices = self.quantize(inputs.to(device))
            out.append(indices[:count].long().cpu())
        self.train(was_training)
        if not out:
            return torch.zeros((0, self.spec.num_tokens), dtype=torch.long)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, ids, autocast: bool = True) -> np.ndarray:
        """Token ids ``[N, num_tokens]`` -> natural batch (numpy, the modality's dtype)."""
        ids = self.check_ids(ids)
        was_training = self.training
        self.eval()
        out = []
        for start in range(0, len(ids), ENCODE_CHUNK):
            device = self.device
            codes = self.codes_from_indices(ids[start:start + ENCODE_CHUNK].to(device))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                outputs = self.reconstruct_from_codes(codes)
            out.append(self.to_natural(outputs.float().cpu()))
        self.train(was_training)
        if not out:
            return np.zeros((0, *self.natural_shape()), dtype=self.natural_dtype())
        return np.concatenate(out)

    def save(self, folder: str | Path) -> None:
        """Write ``weights.safetensors`` and ``config.json`` (with the tokenizer type) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().contiguous().clone() for name, tensor in self.state_dict().items()}
        tmp = folder / f".{WEIGHTS_FILE}.tmp"
        save_file(state, str(tmp))
        atomic_write_bytes(folder / WEIGHTS_FILE, tmp.read_bytes())
        tmp.unlink()
        atomic_write_json(folder / CONFIG_FILE, {"type": self.kind, **self.config.model_dump(mode="json")})

    @classmethod
    def load(cls, folder: str | Path):
        folder = Path(folder)
        raw = json.loads((folder / CONFIG_FILE).read_text())
        if raw.pop("type", None) != cls.kind:
            raise ValueError(f"{folder / CONFIG_FILE}: not a {cls.kind} tokenizer")

        tokenizer = cls(validate(cls.config_class, raw, prefix=str(folder / CONFIG_FILE)))
        state = load_file(str(folder / WEIGHTS_FILE))
        tokenizer.load_state_dict(state)
        tokenizer.eval()
        return tokenizer
