"""Token shards: every split of a dataset encoded with trained tokenizers (what ``pairless tokenize`` runs).

Each modality is encoded for the samples that have it, in batches; the ids
do not depend on the batch size (see :mod:`pairless.tokenizers.base`).
Samples without a modality stay without it (``present`` False, tokens 0):
nothing is invented. World scene metadata is copied along. Output is written
by :func:`pairless.data.shards.write_shards` (staged, with ``COMPLETE.json``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pairless.data.dataset import report_bad_samples
from pairless.tokenizers import available_modalities, load_tokenizer
from pairless.utils.storage import FolderLock, hash_files, is_complete, read_json, reusable_output
from pairless.utils.threads import torch_threads


def encode_column(tokenizer, values, present: np.ndarray, batch_size: int,
                  description: str = "") -> np.ndarray:
    """Tokens ``int32 [N, L]`` of one modality column; rows without the modality are 0."""
    spec = tokenizer.spec
    tokens = np.zeros((len(present), spec.num_tokens), dtype=np.int32)
    rows = np.flatnonzero(present)
    for start in tqdm(range(0, len(rows), batch_size), desc=description, disable=None, leave=False):
        chunk = rows[start:start + batch_size]
        batch = [values[i] for i in chunk] if tokenizer.kind == "text" else np.asarray(values[chunk])
        tokens[chunk] = tokenizer.encode(batch).numpy().astype(np.int32)
    return tokens


def _encode_split(split: str, dataset, tokenizers: dict, batch_size: int):
    from pairless.data.shards import ShardSplit

    tokens, present = {}, {}
    for name, tokenizer in tokenizers.items():
        if name in dataset.columns:
            values, mask = dataset.column(name)
            mask = np.asarray(mask, dtype=bool)
        else:
            values, mask = None, np.zeros(len(dataset), dtype=bool)
        tokens[name] = encode_column(tokenizer, values, mask, batch_size, f"tokenize {split}/{name}")
        present[name] = mask
    return ShardSplit(ids=list(dataset.ids), tokens=tokens, present=present, scenes=dataset.scenes)


def tokenize_dataset(data: str | Path, tokenizer_root: str | Path, out: str | Path, batch_size: int = 1024,
                     overwrite: bool = False, truncate_text: bool = False,
                     threads: int | None = None, on_bad_sample: str = "error",
                     device: str | torch.device = "cpu") -> Path:
    """Encode every split of ``data`` with the tokenizers in ``tokenizer_root`` and write shards to ``out``.

    ``threads``: torch threads (None: the current count); ``device``: where the neural tokenizers run. The
    manifest records both (``threads``, ``device``).
    """
    from pairless.data import list_splits, open_dataset
    from pairless.data.shards import write_shards

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    data, tokenizer_root = Path(data), Path(tokenizer_root)
    splits = list_splits(data)
    if not splits:
        raise FileNotFoundError(f"{data}: no splits (expected subfolders such as train/ and val/)")
    trained = available_modalities(tokenizer_root)
    datasets = {split: open_dataset(data, split, on_bad_sample=on_bad_sample) for split in splits}
    for split, dataset in datasets.items():  # skipped files: listed in the manifest's bad_samples
        report_bad_samples(dataset.bad_samples, split, "pairless tokenize")
    in_data = {name for dataset in datasets.values() for name in dataset.modalities}
    untrained = sorted(in_data - set(trained))
    if untrained:
        print(f"pairless tokenize: no tokenizer for {', '.join(untrained)} in {tokenizer_root}; "
              "these modalities are left out of the shards", file=sys.stderr)
    modalities = [name for name in trained if name in in_data]
    if not modalities:
        raise ValueError(f"{tokenizer_root}: none of its tokenizers ({', '.join(trained) or 'none'}) matches "
                         f"a modality of {data} ({', '.join(sorted(in_data)) or 'none'})")
    device = torch.device(device)
    tokenizers = {name: load_tokenizer(tokenizer_root, name) for name in modalities}
    tokenizers = {name: tok.to(device) if isinstance(tok, torch.nn.Module) else tok
                  for name, tok in tokenizers.items()}
    if truncate_text:
        tokenizers = {name: tok.truncating() if tok.kind == "text" else tok
                      for name, tok in tokenizers.items()}
    shard_splits = {}
    with torch_threads(threads) as used_threads:
        for split, dataset in datasets.items():
            shard_splits[split] = _encode_split(split, dataset, tokenizers, batch_size)
    info = {**shard_request(data, tokenizer_root, truncate_text), "threads": used_threads,
            "device": str(device)}
    bad = {split: [list(item) for item in dataset.bad_samples] for split, dataset in datasets.items()
           if dataset.bad_samples}
    if bad:
        info["bad_samples"] = bad
    specs = {name: tokenizer.spec for name, tokenizer in tokenizers.items()}
    return write_shards(out, shard_splits, specs, info, overwrite=overwrite)


def shard_request(data: Path, tokenizer_root: Path, truncate_text: bool) -> dict:
    """What a shard folder is made from (stored in its manifest): the inputs' paths, the tokenizers' hash."""
    marker = tokenizer_root / "COMPLETE.json"
    tokenizers_hash = (read_json(marker).get("content_hash") if marker.is_file()
                       else hash_files(tokenizer_root))
    return {"tokenizers": str(tokenizer_root.resolve()), "tokenizers_hash": tokenizers_hash,
            "data": str(data.resolve()), "truncate_text": truncate_text}


def already_tokenized(out: Path, data: Path, tokenizer_root: Path, truncate_text: bool) -> bool:
    """True when ``out`` holds complete shards of these data and tokenizers; FileExistsError naming what
    differs."""
    if not is_complete(out):
        return False
    wanted = shard_request(Path(data), Path(tokenizer_root), truncate_text)
    manifest = out / "manifest.json"
    found = read_json(manifest) if manifest.is_file() else None
    if isinstance(found, dict):
        found = {key: found.get(key) for key in wanted}
    return reusable_output(out, wanted, found, what="token shards")


def write_token_shards(data: Path, tokenizer_root: Path, out: Path, batch_size: int = 1024,
                       overwrite: bool = False, truncate_text: bool = False,
                       threads: int | None = None, on_bad_sample: str = "error",
                       device: str | torch.device = "cpu") -> bool:
    """:func:`tokenize_dataset` under a lock on ``out``; False (nothing done) when ``out`` already holds these
    shards, FileExistsError naming what differs when it holds others (unless ``overwrite``)."""
    with FolderLock(out):
        if not overwrite and already_tokenized(out, data, tokenizer_root, truncate_text):
            return False
        tokenize_dataset(data, tokenizer_root, out, batch_size, overwrite=overwrite,
                         truncate_text=truncate_text, threads=threads, on_bad_sample=on_bad_sample,
                         device=device)
    return True
