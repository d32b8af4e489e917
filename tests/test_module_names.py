"""Module names: no two library modules share a file name, and none is named like a standard-library module.

A repeated name (two ``train.py``, two ``streamed.py``) makes a traceback, an editor tab or a sentence in
the docs ambiguous; a standard-library name (``inspect.py``, ``codecs.py``) is shadowed for anyone who
runs a script from that folder. Two families are named after something outside the package on purpose
and are left out: ``commands/`` (one module per verb of the ``pairless`` tool) and
``experiments/report/`` (one module per section of report.md, often named like the inference module it
reports on); ``__init__.py`` and ``config.py`` (each folder's typed config) repeat by convention.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pairless"
NAMED_AFTER_OUTSIDE = [PACKAGE / "commands", PACKAGE / "experiments" / "report"]
REPEATED_BY_CONVENTION = {"__init__", "__main__", "config"}


def _library_modules() -> list[Path]:
    return [path for path in sorted(PACKAGE.rglob("*.py"))
            if not any(folder in path.parents for folder in NAMED_AFTER_OUTSIDE)]


def test_library_module_names_do_not_repeat():
    places = defaultdict(list)
    for path in _library_modules():
        if path.stem not in REPEATED_BY_CONVENTION:
            places[path.name].append(str(path.relative_to(PACKAGE)))
    repeated = {name: paths for name, paths in places.items() if len(paths) > 1}
    assert not repeated, f"module file names used more than once in pairless/: {repeated}"


def test_library_module_names_are_not_standard_library_names():
    shadowing = [str(path.relative_to(PACKAGE)) for path in _library_modules()
                 if path.stem in sys.stdlib_module_names]
    assert not shadowing, f"modules named like a standard-library module: {shadowing}"


def test_the_check_sees_the_package():
    # the two tests above pass on an empty list too: make sure they look at the real modules
    names = {path.name for path in _library_modules()}
    assert {"transformer.py", "fragment.py", "streamed_shards.py"} <= names
    assert "train.py" in names and "report.py" not in names  # training/train.py; commands/ left out
