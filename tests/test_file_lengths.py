"""No module of the package is over 400 lines (DESIGN.md: files under ~400 lines, one concept each): a file
that grows past it is split along a seam of what it does, not cut at a line count."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pairless"
MAX_LINES = 400


def test_no_module_is_over_400_lines():
    lengths = {str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
               for path in sorted(PACKAGE.rglob("*.py"))}
    assert len(lengths) > 50, "the check must see the package's modules"
    long = {name: count for name, count in lengths.items() if count > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split each along a seam of what it does): {long}"
