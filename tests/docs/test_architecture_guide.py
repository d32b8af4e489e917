"""docs/architecture.md's newcomer guides run as written: "Adding a recipe" (a recipe function, its cache
folders shared with the demo's, the whole experiment at the micro preset) and "Adding a report section" (a
section added to the committed demo results' report)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"


def python_block(heading: str) -> str:
    """The one python block of the section ``## heading`` of docs/architecture.md."""
    section = PAGE.read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"expected one python block under '## {heading}'"
    return blocks[0]


def run_block(code: str, folder: Path) -> subprocess.CompletedProcess:
    (folder / "docs").symlink_to(ROOT / "docs")  # the blocks read docs/results as from the repository root
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                             os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code], cwd=folder, env=environment, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_adding_a_recipe_runs_as_written(tmp_path):
    result = run_block(python_block("Adding a recipe"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "# pairless report: rgb-normal (preset micro)" in result.stdout
    report = (tmp_path / "results" / "rgb-normal" / "report.md").read_text()
    assert "rgb → normal" in report and "normal → rgb" in report


def test_adding_a_report_section_runs_as_written(tmp_path):
    result = run_block(python_block("Adding a report section"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train_seconds" in (tmp_path / "demo-report" / "summary.json").read_text()
