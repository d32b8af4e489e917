"""docs/data.md's "Bring your own data" example blocks, for the tests that execute them."""

from __future__ import annotations

import re
from pathlib import Path

DATA_PAGE = Path(__file__).resolve().parents[1] / "docs" / "data.md"


def byod_blocks() -> tuple[str, str]:
    """The python and bash fenced blocks of the docs/data.md section "## Bring your own data"."""
    text = DATA_PAGE.read_text(encoding="utf-8")
    section = text.split("## Bring your own data", 1)[1].split("\n## ", 1)[0]
    python_blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    bash_blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(python_blocks) == 1 and len(bash_blocks) == 1, "expected one python and one bash block"
    return python_blocks[0], bash_blocks[0]
