"""The in-memory view of one split, whichever form it was read from (opened by
:func:`pairless.data.readers.open_dataset`), and the listing of skipped bad samples.

``Dataset`` holds one column per modality (an array ``[N, ...]``, memory-mapped
for the packed form, or a list of N strings for text) plus a ``present`` mask,
so that ``ds[i]`` (one sample dict) and ``ds.column(m)`` (bulk access for the
tokenizers) are both cheap. Reading validates every value (see
:mod:`pairless.data.validate`); with ``on_bad_sample="skip"`` a bad value is
dropped from its sample (present becomes False) and listed in
``ds.bad_samples`` as ``(file or location, reason)``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pairless import modalities as registry
from pairless.utils.storage import atomic_write_json, read_json


@dataclass
class Dataset:
    """One split of a dataset: sample ids, a column and present mask per modality, scenes."""

    root: Path
    split: str
    form: str  # "packed" | "folder"
    ids: list[str]
    columns: dict[str, np.ndarray | list[str]]
    present: dict[str, np.ndarray]
    scenes: list[dict | None] | None = None
    size: int | None = None  # image size S (None when there are no image modalities)
    bad_samples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def modalities(self) -> list[str]:
        """Modalities present in at least one sample, in registry order."""
        order = {name: index for index, name in enumerate(registry.names())}
        found = [name for name, mask in self.present.items() if bool(np.any(mask))]
        return sorted(found, key=lambda name: order.get(name, len(order)))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        if not -len(self.ids) <= index < len(self.ids):
            raise IndexError(f"sample index {index} out of range for {len(self.ids)} samples")
        sample: dict = {}
        for name in self.modalities:
            if self.present[name][index]:
                value = self.columns[name][index]
                sample[name] = str(value) if registry.get(name).is_text else np.array(value)
        if self.scenes is not None and self.scenes[index] is not None:
            sample["scene"] = self.scenes[index]
        return sample

    def column(self, modality: str) -> tuple[np.ndarray | list[str], np.ndarray]:
        """All values of one modality and its present mask (placeholders where absent)."""
        if modality not in self.columns:
            raise KeyError(f"{self.root}/{self.split}: no modality {modality!r}; "
                           f"this split has: {', '.join(self.modalities) or 'none'}")
        values = self.columns[modality]
        if registry.get(modality).is_text and isinstance(values, np.ndarray):
            values = values.tolist()
        return values, self.present[modality]

    def index_of(self, sample_id: str) -> int:
        """Position of a sample id (ids are sorted for folders, in written order for packed)."""
        try:
            return self.ids.index(sample_id)
        except ValueError:
            raise KeyError(f"{self.root}/{self.split}: no sample with id {sample_id!r}") from None


def list_splits(root: str | os.PathLike) -> list[str]:
    """The splits of a dataset: from the manifest when there is one, else the subfolders."""
    root = Path(root)
    manifest = root / "manifest.json"
    if manifest.is_file():
        data = read_json(manifest)
        if isinstance(data, dict) and isinstance(data.get("splits"), dict):
            return sorted(data["splits"])
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


BAD_SAMPLES_FILE = "bad_samples.json"


def report_bad_samples(bad: list[tuple[str, str]], split: str, command: str,
                       listing: str | os.PathLike | None = None) -> None:
    """Say on stderr how many files of ``split`` were skipped as bad (and the first one), and add their list
    under ``split`` to the JSON file ``listing`` when given (the caller holds the folder's lock)."""
    if not bad:
        return
    where = ""
    if listing is not None:
        listing = Path(listing)
        previous = read_json(listing) if listing.is_file() else {}
        listing.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(listing, {**previous, split: [list(item) for item in bad]})
        where = f"; all listed in {listing}"
    print(f"{command}: skipped {len(bad)} bad file(s) in {split} (first: {bad[0][0]}: {bad[0][1]}){where}",
          file=sys.stderr)
