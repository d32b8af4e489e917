"""safetensors files written and compared byte for byte: tensor by tensor, atomically, and hashed in the
canonical form (header keys sorted) that is the same whichever process wrote the file.

- ``atomic_write_safetensors``: a dict of tensors written one tensor at a time through
  :func:`pairless.utils.storage.atomic_write` (the file is never held in memory as one bytes object);
- ``canonical_safetensors``: a file's bytes with its header sorted, for comparing two files;
- ``weights_digest``: the hash of a run folder's ``model.safetensors`` in that form (computed once per file
  version and process).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from pairless.utils.storage import atomic_write

# safetensors' dtype names, and the order its own writer lays tensors out in (widest dtype first, then by
# name): files written here hold the same bytes after the header as ``safetensors.torch.save`` would.
_SAFETENSORS_DTYPES = {"float64": "F64", "int64": "I64", "uint64": "U64", "float32": "F32", "int32": "I32",
                       "uint32": "U32", "bfloat16": "BF16", "float16": "F16", "int16": "I16",
                       "uint16": "U16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}
_SAFETENSORS_ORDER = ["BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64",
                      "U64"]


def atomic_write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None,
                             ) -> None:
    """A safetensors file of ``tensors`` (name -> torch tensor), written atomically and tensor by tensor.

    ``safetensors.torch.save`` builds the whole file as one bytes object: a checkpoint of the large model
    (2.9 GB of weights, 8.6 GB with AdamW moments) then needed its size again in memory at every save, and
    the kernel killed the run there. Here only the header is built in memory; each tensor goes from its own
    storage to the file (a tensor on a GPU is copied to the host one at a time), so a save needs the
    training state plus the largest tensor, no more.
    """
    entries = []
    for name, tensor in tensors.items():
        dtype = _SAFETENSORS_DTYPES.get(str(tensor.dtype).removeprefix("torch."))
        if dtype is None:
            raise TypeError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot "
                            "hold")
        entries.append((dtype, name, tensor))
    entries.sort(key=lambda entry: (-_SAFETENSORS_ORDER.index(entry[0]), entry[1]))
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for dtype, name, tensor in entries:
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    # keys sorted: the same tensors and metadata give the same bytes in every process
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors writes it

    def write(handle) -> None:
        handle.write(len(blob).to_bytes(8, "little"))
        handle.write(blob)
        for _, _, tensor in entries:
            if tensor.numel():
                # the tensor's own bytes, viewed (not copied) as uint8; a GPU tensor comes to the host alone
                flat = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
                handle.write(memoryview(flat.numpy()))

    import torch  # only here: the digests serve tools (the report) that never load torch

    atomic_write(path, write)


def canonical_safetensors(data: bytes) -> bytes:
    """A safetensors file with its header's keys sorted.

    The safetensors writer keeps metadata in a Rust HashMap, whose order
    changes from process to process: two runs writing the very same tensors
    and metadata give different bytes. Sorting the header compares what the
    file holds (every tensor's dtype, shape, offsets and bytes, and the
    metadata) and nothing else.
    """
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    return json.dumps(header, sort_keys=True).encode() + b"\0" + data[8 + length:]


def weights_digest(folder: Path) -> str | None:
    """A hash (16 hex digits) of the weights in ``folder/model.safetensors``, the same whichever process
    wrote them (of :func:`canonical_safetensors`); None when there are none."""
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        return None
    stat = weights.stat()
    return _file_digest(str(weights.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """Once per file version and process: a report reads a run's caches several times (50 ms per tiny
    model, seconds for a large one); a rewritten file has a new mtime or size, so it is hashed again.

    The same hash as of :func:`canonical_safetensors` of the whole file, read in chunks: a large model's
    weights (2.9 GB) are never held in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        digest.update(canonical_safetensors(length.to_bytes(8, "little") + handle.read(length)))
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
