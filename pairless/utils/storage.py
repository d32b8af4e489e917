"""Crash-safe writing: atomic files, staged folders with completion markers, locks, hashes.

Every stage writes through these helpers so that a process killed at any
moment leaves either the previous complete output or nothing, never a
half-written file that a later run could mistake for a finished one.

- ``atomic_write_bytes`` / ``atomic_write_json`` / ``atomic_save_npy``:
  temp file in the same folder, fsync, rename, fsync the folder.
- ``atomic_write(path, write)``: the same for a writer that streams into the file (safetensors:
  :mod:`pairless.utils.tensor_files`).
- ``staged_dir(final)``: a context manager yielding a temporary sibling
  folder; on success it writes ``COMPLETE.json`` (with a content hash) into
  it and renames it to ``final``. ``is_complete(final)`` checks the marker.
- ``remove_interrupted_writes(folder)``: what killed writes left behind (staging folders, temp files),
  removed when the writer starts again.
- ``FolderLock``: an exclusive ``fcntl`` lock so two processes never write
  the same output folder.
- ``config_hash``: the short hash that names cached stage folders.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

COMPLETE_MARKER = "COMPLETE.json"


class OutputBusyError(RuntimeError):
    """Another live pairless process is writing the same output."""

# Files that later stages add beside a finished output (``pairless eval`` writes RUN/eval.json and ``pairless
# probe`` RUN/probes.json into a completed run folder); they are results *about* the folder, not part of its
# content hash.
ADDED_LATER = ("eval.json", "probes.json")
# Wall-clock times of a stage, kept beside its output but outside its content hash (at any depth, like the
# completion markers of sub-folders), so that the same request yields the same hash on every run.
TIMINGS_FILE = "timings.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` through an atomic write; object arrays are refused (they would need pickle)."""
    array = np.asarray(array)
    if array.dtype == object:
        raise TypeError(f"{path}: refusing to save an object array (it would need pickle)")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def load_array(path: str | os.PathLike, *, mmap: bool = False) -> np.ndarray:
    """``np.load`` of one ``.npy`` array, never pickle; a zip/npz archive under that name is refused."""
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if not isinstance(array, np.ndarray):
        if hasattr(array, "close"):
            array.close()
        raise ValueError(f"{path}: not a .npy array (a zip/.npz archive?)")
    return array


def read_json(path: str | os.PathLike):
    """Read a JSON file, naming the file in the error if it is unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read JSON ({error})") from error


def hash_files(root: str | os.PathLike, *, exclude: tuple[str, ...] = (COMPLETE_MARKER, *ADDED_LATER)) -> str:
    """SHA-256 over the relative paths and bytes of every file under ``root`` (sorted)."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude or path.name in (COMPLETE_MARKER, TIMINGS_FILE) or path.name.endswith(".lock"):
            continue
        digest.update(rel.encode())
        digest.update(b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def is_complete(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a completion marker (written last, atomically)."""
    return (Path(folder) / COMPLETE_MARKER).is_file()


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts as one dict with dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (an empty dict is a
    value)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def first_difference(found: dict, wanted: dict, ignore: frozenset[str] = frozenset()):
    """``(dotted key, found value, wanted value)`` of the first key (sorted) where two nested records differ,
    or None; keys whose first part is in ``ignore`` are not compared. A key missing on one side is None
    there."""
    have, want = flatten(found), flatten(wanted)
    for key in sorted(set(have) | set(want)):
        if key.split(".")[0] not in ignore and have.get(key) != want.get(key):
            return key, have.get(key), want.get(key)
    return None


def reusable_output(folder: str | os.PathLike, wanted: dict, found: dict | None, *, what: str,
                    prefix: str = "",
                    remedy: str = "choose another --out or pass --overwrite to replace it") -> bool:
    """Whether a complete ``folder`` already holds what this call would write.

    ``wanted`` describes the request (config, resolved input paths, input
    hashes); ``found`` is the same record as stored with the finished output
    (None when it stored none). False when ``folder`` is not complete; True when
    the records match; otherwise ``FileExistsError`` naming the first field that
    differs, so that a complete output is never silently taken for another one.
    """
    folder = Path(folder)
    if not is_complete(folder):
        return False
    if not isinstance(found, dict):
        raise FileExistsError(f"{folder} holds a complete output that does not record what made it (not "
                              f"{what}?); {remedy}")
    difference = first_difference(found, wanted)
    if difference is not None:
        key, have, want = difference
        raise FileExistsError(f"{folder} holds {what} made with {prefix}{key}={have!r}, this run asks "
                              f"{prefix}{key}={want!r}; {remedy}")
    return True


def verify_complete(folder: str | os.PathLike) -> None:
    """Recompute the content hash of a completed folder; raise if files changed since."""
    folder = Path(folder)
    marker = read_json(folder / COMPLETE_MARKER)
    actual = hash_files(folder)
    if marker.get("content_hash") != actual:
        raise ValueError(f"{folder}: content hash mismatch (files changed or corrupted since it was written)")


def mark_complete(folder: str | os.PathLike, info: dict | None = None) -> str:
    """Write the completion marker (with the content hash) into ``folder``; returns the hash."""
    folder = Path(folder)
    content_hash = hash_files(folder)
    atomic_write_json(folder / COMPLETE_MARKER, {"content_hash": content_hash, **(info or {})})
    return content_hash


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike, info: dict | None = None, *,
               overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name; publish it at ``final`` only when the block succeeds.

    A previous complete ``final`` is kept unless ``overwrite``; stale staging
    folders from killed runs are removed first. The published folder carries
    a completion marker with a content hash.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_complete(final) and not overwrite:
        raise FileExistsError(f"{final} already exists and is complete (use overwrite to replace it)")
    # The staging folder is flock-ed while it is built: another process then removes only the staging
    # folders of dead writers (the kernel drops a killed process's locks), never a live one's.
    for stale in final.parent.glob(f".{final.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in final.parent.glob(f".{final.name}.staging-*"):
        with _locked_dir(stale, wait=False) as held:
            if not held:
                raise OutputBusyError(f"{final}: another pairless process is writing it now ({stale.name}); "
                                      "wait for it")
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    with _locked_dir(staging, wait=True):
        try:
            if not staging.is_dir():
                raise OutputBusyError(f"{final}: another pairless process removed this run's staging folder; "
                                   "two processes are writing the same output")
            yield staging
            mark_complete(staging, info)
            if final.exists():
                trash = final.parent / f".{final.name}.old-{os.getpid()}"
                os.replace(final, trash)
                os.replace(staging, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(staging, final)
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file() and not item.is_symlink())


def remove_interrupted_writes(folder: str | os.PathLike) -> list[tuple[Path, int]]:
    """Remove what writes killed part-way left directly in ``folder``: staging folders of
    :func:`staged_dir` (``.NAME.staging-*``, ``.NAME.old-*``), pending folders (``.pending-*``) and the
    temporary files of atomic writes (``.NAME.*.tmp``). A staging folder that a live process holds is
    left alone. Returns each removed path with the bytes it held."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.glob(".*")):
        name = path.name
        if path.is_dir() and (".staging-" in name or ".old-" in name or name.startswith(".pending-")):
            with _locked_dir(path, wait=False) as held:
                if not held:
                    continue  # a live writer's
                size = _size_on_disk(path)
                shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and name.endswith(".tmp"):
            size = path.stat().st_size
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append((path, size))
    return removed


@contextlib.contextmanager
def _locked_dir(folder: Path, wait: bool) -> Iterator[bool]:
    """flock a folder itself (no lock file left behind); yields False when another process holds it."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield True  # already gone: nothing to guard
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class FolderLock:
    """An exclusive, non-blocking lock on ``<folder>.lock``; released when the process dies, and the file
    removed when its holder leaves the block (a killed holder leaves an empty file that locks nothing).

    The holder deletes the file while it still holds it, so a process that opened the old file before the
    deletion may lock that orphan: after locking, each process checks that the path still names the file it
    holds, and starts again when it does not. Two processes can never both hold the lock on the path.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(str(Path(folder)) + ".lock")
        self._handle = None

    def __enter__(self) -> FolderLock:
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise OutputBusyError(f"{self.path}: another pairless process is writing this output; "
                                      "wait for it") from None
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            held = os.fstat(handle.fileno())
            if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                self._handle = handle
                return self
            handle.close()  # the file was removed by the holder we waited behind: lock the new one

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            try:
                self.path.unlink(missing_ok=True)  # still held: nobody can lock this path in between
            finally:
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
                self._handle.close()
                self._handle = None


def merge_json(path: str | os.PathLike, update: dict) -> Path:
    """Merge ``update`` into the JSON object at ``path`` (keys written before are kept), under a lock on
    ``path`` without its suffix, atomically; returns the path."""
    path = Path(path)
    with FolderLock(path.with_suffix("")):
        previous = read_json(path) if path.is_file() else {}
        atomic_write_json(path, {**previous, **update})
    return path


def config_hash(obj, length: int = 12) -> str:
    """A short stable hash of a JSON-able config (pydantic models are dumped first)."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
