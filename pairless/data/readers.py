"""``open_dataset``: one split of a dataset in whichever on-disk form it was written, through the reader
registered for that form (:data:`READERS`).

The readers build a :class:`~pairless.data.dataset.Dataset`; this module sits above them and the class, so
that neither imports the other in a loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pairless.data.dataset import Dataset
from pairless.data.declared import declare_from
from pairless.data.folder import read_folder_split
from pairless.data.packed import read_packed_split
from pairless.data.validate import DataError
from pairless.utils.storage import read_json


def _read_written_folder(root: Path, split: str, manifest: dict, on_bad_sample: str) -> Dataset:
    """A folder written by :func:`pairless.data.write_dataset` (its manifest says so)."""
    return read_folder_split(root, split, on_bad_sample)


# manifest "format" -> reader(root, split, manifest, on_bad_sample); a folder without a manifest is a
# user's folder, read by read_folder_split
READERS: dict[str, Callable[[Path, str, dict, str], Dataset]] = {
    "packed": read_packed_split,
    "folder": _read_written_folder,
}


def open_dataset(root: str | os.PathLike, split: str, on_bad_sample: str = "error") -> Dataset:
    """Open one split of a dataset in either form (detected from ``manifest.json``).

    ``on_bad_sample``: "error" (default) raises :class:`DataError` naming the
    file and the problem; "skip" drops the bad value from its sample and
    records it in ``Dataset.bad_samples``.
    """
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no dataset here (not a folder)")
    declare_from(root)  # modalities.yaml (or .yml/.json/.toml) next to the data
    manifest_path = root / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else None
    if manifest is not None and not isinstance(manifest, dict):
        raise DataError(f"{manifest_path}: not a dataset manifest (expected a JSON object)")
    if manifest is None:  # a folder of files as a user made it: no manifest
        return read_folder_split(root, split, on_bad_sample)
    _check_complete(root)
    form = manifest.get("format")
    if form not in READERS:
        hint = " (this looks like token shards: open them with pairless.data.shards.open_shards)" \
            if "modalities" in manifest else ""
        raise DataError(f"{manifest_path}: unknown dataset format {form!r} (expected "
                        f"{'|'.join(READERS)}){hint}")
    return READERS[form](root, split, manifest, on_bad_sample)


def _check_complete(root: Path) -> None:
    marker = root / "COMPLETE.json"
    problem = None
    if not marker.is_file():
        problem = "no COMPLETE.json"
    else:
        try:
            data = read_json(marker)
        except ValueError as error:
            problem = str(error)
        else:
            if not isinstance(data, dict) or "content_hash" not in data:
                problem = "COMPLETE.json has no content hash"
    if problem:
        raise DataError(f"{root}: dataset is incomplete (killed mid-write?): {problem}; write it again")
