"""The modalities a run, its shards and its tokenizers were made with, known to every command that opens them.

A modality declared next to the data (``modalities.yaml``) travels as a copy, ``modalities.json``, in the
tokenizer folder, the token shards and the run folder made from it. :func:`know_modalities` registers the
copies found in the folders a command was given, and in the folders those record (a run's shards, the
shards' tokenizers), so that ``generate``, ``eval``, ``probe``, ``explore`` and the rest accept a declared
modality with no flag, also for runs trained before runs kept their own copy.
"""

from __future__ import annotations

from pathlib import Path

from pairless.data.declared import declare_from


def know_modalities(*runs: Path | None, shards: Path | None = None, tokenizers: Path | None = None) -> None:
    """Register the declarations kept in ``runs`` (run folders or their model files), ``shards`` and
    ``tokenizers``, and in the shards and tokenizers the runs and shards record; missing folders and
    records are skipped (the command's own checks name what is missing)."""
    from pairless.inference.evaluate import run_shards_path
    from pairless.inference.translations import tokenizers_of

    shard_folders = [Path(shards)] if shards is not None else []
    for run in runs:
        if run is None:
            continue
        folder = Path(run).parent if Path(run).is_file() else Path(run)
        declare_from(folder)
        try:
            shard_folders.append(run_shards_path(folder))
        except (ValueError, FileNotFoundError, OSError):
            pass  # no recorded shards (e.g. a bare model file): nothing more to find
    tokenizer_folders = [Path(tokenizers)] if tokenizers is not None else []
    for folder in shard_folders:
        declare_from(folder)
        try:
            tokenizer_folders.append(tokenizers_of(folder))
        except (ValueError, FileNotFoundError, OSError):
            pass
    for folder in tokenizer_folders:
        declare_from(folder)
