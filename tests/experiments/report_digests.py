"""Digests of every committed report under docs/results as today's code writes it from its results.json,
for the check that a refactoring of the report changes no table, number or sentence.

``python tests/experiments/report_digests.py`` (from the repository root) rewrites
tests/fixtures/report_digests.json; it was first written from the code before issue 28 restructured the
report, and tests/experiments/test_committed_reports.py compares today's rendering with it. The committed
report.md files themselves were written by older report code (no samples column, ...) and by runs in
another folder (their figure links), so the fixture holds what the code renders, not those files. A change
that means to alter the report rewrites the fixture in the same commit and says why; a results.json that
was replaced (a recipe run again) needs the fixture rewritten too, which the test says.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "report_digests.json"
WRITTEN = ("report.md", "results.csv", "summary.json")


def committed_results() -> list[str]:
    """The folders under docs/results that hold a results.json (sorted)."""
    return sorted(folder.name for folder in RESULTS.iterdir() if (folder / "results.json").is_file())


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rendered(name: str, scratch: Path) -> Path:
    """The report of docs/results/NAME written again by today's code into a copy under ``scratch``."""
    from pairless.experiments.report import write_report

    folder = scratch / name
    shutil.copytree(RESULTS / name, folder, ignore=shutil.ignore_patterns("*.png", "figures", "unpaired"))
    write_report(folder)
    return folder


def report_digests(name: str) -> dict[str, str]:
    """{file: sha256} of the results.json read and of each file the report writes, for docs/results/NAME."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = rendered(name, Path(scratch))
        return {"results.json": _digest(RESULTS / name / "results.json"),
                **{file: _digest(folder / file) for file in WRITTEN}}


def main(argv: list[str] | None = None) -> int:
    digests = {name: report_digests(name) for name in committed_results()}
    FIXTURE.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE} ({len(digests)} reports)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
