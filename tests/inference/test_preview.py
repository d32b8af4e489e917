"""The preview grid: a PNG of the documented pixel size, and per-modality drawing."""

from __future__ import annotations

import numpy as np
from data_helpers import make_split
from matplotlib.figure import Figure
from PIL import Image

from pairless.commands.preview import main
from pairless.data import write_dataset
from pairless.inference.figures import CELL_PIXELS, HEADER_PIXELS, draw_value


def test_preview_png_size(tmp_path, capsys):
    root = write_dataset(tmp_path / "data", {"val": make_split(5)}, form="packed")
    out = tmp_path / "grid.png"
    assert main([str(root), "--out", str(out), "--num", "3"]) == 0
    with Image.open(out) as image:
        assert image.size == (7 * CELL_PIXELS, 3 * CELL_PIXELS + HEADER_PIXELS)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # something was drawn, not a blank canvas
    assert "3 samples" in capsys.readouterr().out
    # More rows than samples: clipped to the split.
    assert main([str(root), "--out", str(out), "--num", "20", "--start", "2"]) == 0
    with Image.open(out) as image:
        assert image.size[1] == 3 * CELL_PIXELS + HEADER_PIXELS


def test_preview_errors_are_reported(tmp_path, capsys):
    root = write_dataset(tmp_path / "data", {"train": make_split(2)}, form="packed")
    assert main([str(root), "--out", str(tmp_path / "g.png")]) == 1
    assert "no split 'val'" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_draw_value_every_viz_kind():
    split = make_split(2)
    figure = Figure()
    for name, values in split.columns.items():
        ax = figure.add_subplot()
        draw_value(ax, name, values[0], 8, background=split.columns["rgb"][0])
        assert ax.images or ax.texts, name  # an image or text was drawn for every modality
    # det text in the world's format becomes boxes with class names on the background
    ax = figure.add_subplot()
    draw_value(ax, "det", "v0 1 v1 2 v2 20 v3 30 cube", 32, background=np.zeros((32, 32, 3), np.uint8))
    assert ax.patches and ax.texts[0].get_text() == "cube"
