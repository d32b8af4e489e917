"""Paths that one output records of another (a run's shards, the shards' tokenizers), found again after
the project folder was moved or from another working directory.

Outputs record the folders they were made from as absolute paths (a path given on the command line is
resolved against the current directory first). When a recorded folder no longer exists there, the
project was most likely moved or copied whole: the folder is then looked for by the recorded path's
trailing parts under the recording output's own folder and each folder above it (``/old/p/cache/shards-1``
recorded by ``/new/p/cache/runs/r`` is found as ``/new/p/cache/shards-1``). A relative path (older
outputs recorded paths as given) is tried from the current directory first.
"""

from __future__ import annotations

from pathlib import Path


def find_recorded(recorded: str | Path, near: Path, marker: str) -> Path | None:
    """The folder ``recorded`` (holding the file ``marker``), as written or relocated beside ``near`` (the
    folder that recorded it); None when it is found nowhere."""
    path = Path(recorded)
    if (path / marker).is_file():
        return path
    near = Path(near).absolute()
    parts = path.parts[1:] if path.is_absolute() else path.parts
    for folder in (near, *near.parents):
        for start in range(len(parts)):  # the longest trailing part first: the most specific match
            candidate = folder.joinpath(*parts[start:])
            if (candidate / marker).is_file():
                return candidate
    return None
