"""What every section of the report draws with: markdown tables, number cells, and matplotlib figures
written atomically."""

from __future__ import annotations

import io
from pathlib import Path

from pairless.utils.storage import atomic_write_bytes


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table: the header, the separator, one line per row (cells already formatted)."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def number(value) -> str:
    """A table cell: a float to 3 decimals, anything else as it is, a dash for None."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def count(value) -> str:
    """A whole number cell, a dash for None."""
    return "–" if value is None else str(int(value))


def tokens(value) -> str:
    """A token count in millions, a dash for None."""
    return "–" if value is None else f"{value / 1e6:.2f}M"


def arrow(direction: str) -> str:
    """``"rgb:depth"`` as the report writes it: ``"rgb → depth"``."""
    return direction.replace(":", " → ")


def plotted(draw, results, folder: Path, file: str, title: str) -> dict[str, str]:
    """``{title: file}`` when ``draw(results, folder / file)`` drew its figure (it returns whether it did),
    else nothing: what a section's ``plot`` returns for each figure it may draw."""
    return {title: file} if draw(results, folder / file) else {}


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use (fast start-up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path) -> None:
    """Lay out, render to PNG in memory, write atomically (a killed report never leaves half a PNG), close."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())
