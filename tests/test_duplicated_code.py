"""No logic written twice inside pairless/: no run of six identical statement lines in two places.

A copy drifts (one copy gets a fix, the other not): what two places need lives in one function. The check
compares lines with their indentation stripped, leaving out blank lines, comments, imports, docstring
openings and short lines (``return parser``, ``)``), so that only runs of real statements count; six such
lines in a row is above what two unrelated functions share by chance (five catches argument-parser setup).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pairless"
RUN = 6
SHORTEST = 13  # characters: shorter lines are brackets, returns and other boilerplate


def _statement_lines(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    return [(number, line) for number, line in lines
            if len(line) >= SHORTEST and not line.startswith(("#", '"""', "from ", "import "))]


def duplicated_runs(root: Path = PACKAGE) -> dict[str, list[str]]:
    """{first line of a repeated run: ["file:line", ...]}, one entry per set of files sharing runs."""
    places = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        lines = _statement_lines(path)
        for start in range(len(lines) - RUN + 1):
            key = "\n".join(line for _, line in lines[start:start + RUN])
            places[key].append((str(path.relative_to(root)), lines[start][0]))
    found, seen = {}, set()
    for key, where in places.items():
        files = tuple(sorted({name for name, _ in where}))
        if len(where) > 1 and files not in seen:
            seen.add(files)
            found[key.splitlines()[0]] = [f"{name}:{line}" for name, line in where]
    return found


def test_no_logic_is_written_twice():
    assert duplicated_runs() == {}


def test_the_check_finds_a_copy(tmp_path):
    body = "".join(f"    value_{index} = compute(value_{index - 1}, {index})\n" for index in range(1, 8))
    (tmp_path / "one.py").write_text(f"def first(value_0):\n{body}")
    (tmp_path / "two.py").write_text(f"def second(value_0):\n    other = 1\n{body}")
    found = duplicated_runs(tmp_path)
    assert list(found.values()) == [["one.py:2", "two.py:3"]]
