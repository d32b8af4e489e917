"""Nothing executable from files: no pickle in the package, and every loader refuses a crafted pickle.

A crafted pickle here is an object whose unpickling would create a sentinel
file; each loader must raise, and the sentinel must not exist afterwards
(proof that nothing was unpickled). Both a plain pickle and a
``torch.save`` file (a zip around a pickle) are tried.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import pairless

PACKAGE = Path(pairless.__file__).parent
SCRIPTS = [PACKAGE.parent / "scripts", PACKAGE.parent / "benchmarks"]

# (pattern, why it is refused); comments and docstrings are stripped before matching.
FORBIDDEN = [
    (re.compile(r"\bimport\s+(c?pickle|dill|shelve|marshal|joblib)\b|\bfrom\s+(c?pickle|dill|shelve|marshal|joblib)\b"),
     "a pickle-family module"),
    (re.compile(r"\bpickle\.load"), "pickle.load"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy allow_pickle=True"),
    (re.compile(r"(?<![\w.])(eval|exec)\s*\("), "eval/exec"),
    (re.compile(r"yaml\.load\s*\((?![^)]*SafeLoader)"), "yaml.load without SafeLoader"),
]
TORCH_LOAD = re.compile(r"torch\.load\s*\(")


class Exploit:
    """Unpickling this creates ``path`` (harmless, but it proves code ran)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _code_lines(source: str) -> list[tuple[int, str]]:
    """Source lines without comments and docstring/string-only lines (a rough but sufficient filter)."""
    lines, in_docstring = [], False
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        quotes = stripped.count('"""') + stripped.count("'''")
        if in_docstring or stripped.startswith(('"""', "'''")):
            if quotes % 2 == 1:
                in_docstring = not in_docstring
            continue
        lines.append((number, line.split("#", 1)[0]))
    return lines


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    for folder in SCRIPTS:
        if folder.is_dir():
            files += sorted(folder.rglob("*.py"))
    return files


def test_no_pickle_eval_or_exec_in_the_package():
    found = []
    for path in _sources():
        for number, line in _code_lines(path.read_text(encoding="utf-8")):
            for pattern, why in FORBIDDEN:
                if pattern.search(line):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {why}: {line.strip()}")
            if TORCH_LOAD.search(line) and "weights_only=True" not in line:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: torch.load without "
                             "weights_only=True")
    assert not found, "\n".join(found)


def test_the_scan_sees_what_it_forbids():
    bad = 'import pickle\nx = np.load(p, allow_pickle=True)\ny = eval("1")\nstate = torch.load(path)\n'
    lines = _code_lines(bad)
    hits = {why for _, line in lines for pattern, why in FORBIDDEN if pattern.search(line)}
    assert hits == {"a pickle-family module", "numpy allow_pickle=True", "eval/exec"}
    assert any(TORCH_LOAD.search(line) for _, line in lines)
    assert not any(pattern.search("model.eval()") for pattern, _ in FORBIDDEN)


@pytest.fixture(params=["pickle", "torch.save"])
def crafted(request, tmp_path):
    """A function writing a crafted pickle at a path, and the sentinel it would create."""
    sentinel = tmp_path / "code-ran"

    def write(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if request.param == "pickle":
            path.write_bytes(pickle.dumps(Exploit(sentinel)))
        else:
            buffer = io.BytesIO()
            torch.save({"weights": Exploit(sentinel)}, buffer)
            path.write_bytes(buffer.getvalue())

    # The exploit works when unpickled (so a refusal below is meaningful).
    pickle.loads(pickle.dumps(Exploit(sentinel)))
    assert sentinel.exists()
    sentinel.unlink()
    return write, sentinel


def test_training_state_refuses_a_pickle(tmp_path, crafted):
    from pairless.training.checkpoint import read_state

    write, sentinel = crafted
    write(tmp_path / "state.safetensors")
    with pytest.raises(ValueError, match="state.safetensors.*refusing to load"):
        read_state(tmp_path / "state.safetensors")
    assert not sentinel.exists()


def test_model_weights_refuse_a_pickle(tmp_path, crafted):
    from pairless.model import load_model

    write, sentinel = crafted
    write(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_model(tmp_path / "model.safetensors")
    assert not sentinel.exists()


def test_tokenizer_weights_refuse_a_pickle(tmp_path, crafted):
    from pairless.tokenizers import load_tokenizer
    from pairless.tokenizers.neural_training import build_vector, preset_config
    from pairless.utils.storage import staged_dir

    write, sentinel = crafted
    vectors = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    tokenizer = build_vector("embed", vectors, preset_config("micro"))
    with staged_dir(tmp_path / "tok" / "embed") as staging:
        tokenizer.save(staging)
    write(tmp_path / "tok" / "embed" / "weights.safetensors")
    with pytest.raises(Exception) as raised:
        load_tokenizer(tmp_path / "tok", "embed")
    assert not isinstance(raised.value, AssertionError)
    assert not sentinel.exists()


def test_dataset_and_shard_arrays_refuse_a_pickle(tmp_path, crafted):
    from data_helpers import make_split
    from train_helpers import make_shards

    from pairless.data import DataError, open_dataset, write_dataset
    from pairless.data.shards import open_shards

    write, sentinel = crafted
    object_array = io.BytesIO()
    np.save(object_array, np.array([Exploit(sentinel)], dtype=object), allow_pickle=True)

    packed = write_dataset(tmp_path / "packed", {"train": make_split(3)}, form="packed")
    (packed / "train" / "embed.npy").write_bytes(object_array.getvalue())
    with pytest.raises((DataError, ValueError), match="embed.npy"):
        open_dataset(packed, "train").column("embed")

    folder = tmp_path / "folder" / "train"
    write_dataset(tmp_path / "folder-made", {"train": make_split(3)}, form="folder")
    (folder / "embed").mkdir(parents=True)
    (folder / "embed" / "s0.npy").write_bytes(object_array.getvalue())
    with pytest.raises(DataError, match="s0.npy"):
        open_dataset(tmp_path / "folder", "train")

    shards = make_shards(tmp_path / "shards", count=8)
    (shards / "train" / "rgb.npy").write_bytes(object_array.getvalue())
    with pytest.raises((DataError, ValueError), match="train/rgb.*unreadable"):
        open_shards(shards, "train")
    write(shards / "train" / "rgb.npy")  # a pickle (or torch zip) where an .npy should be
    try:
        open_shards(shards, "train")
    except Exception:  # noqa: BLE001 - refusing is what matters here; the message is checked below
        pass
    assert not sentinel.exists()


@pytest.mark.parametrize("form", ["packed", "folder", "shards"])
def test_a_zip_where_an_npy_belongs_is_a_data_error_naming_the_file(tmp_path, form):
    """np.load opens a zip (torch.save, npz) lazily as an NpzFile: it must be refused, not crash later."""
    from data_helpers import make_split
    from train_helpers import make_shards

    from pairless.data import DataError, open_dataset, write_dataset
    from pairless.data.shards import open_shards

    zipped = io.BytesIO()
    np.savez(zipped, embed=np.zeros(3))
    if form == "shards":
        root = make_shards(tmp_path / "shards", count=8)
        (root / "train" / "rgb.npy").write_bytes(zipped.getvalue())
        opener, name = (lambda: open_shards(root, "train")), "rgb"
    elif form == "packed":
        root = write_dataset(tmp_path / "packed", {"train": make_split(3)}, form="packed")
        (root / "train" / "embed.npy").write_bytes(zipped.getvalue())
        opener, name = (lambda: open_dataset(root, "train")[0]), "embed"
    else:
        root = tmp_path / "folder"
        (root / "train" / "embed").mkdir(parents=True)
        (root / "train" / "embed" / "s0.npy").write_bytes(zipped.getvalue())
        opener, name = (lambda: open_dataset(root, "train")), "s0"
    with pytest.raises(DataError, match=name):
        opener()
