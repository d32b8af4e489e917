"""Figures: the preview grid of samples (``pairless preview``), the generation grid, and the drawing
of one value of any modality.

:func:`write_preview` draws one row per sample, one column per modality;
:func:`draw_grid` the generation figure (samples x runs); both use
:func:`draw_value` (``draw_value(ax, modality, value, size)``) draws one
natural value on a matplotlib axes according to the registry's ``viz`` kind:

- ``rgb``: the image as is;  ``gray``: grey levels;  ``normal``: normals as RGB;
- ``depth``: viridis on inverse depth (near = bright), scaled per image;
- ``labels``: a fixed palette indexed by class id (the same colour for a class
  in every figure);
- ``text``: wrapped text; for ``det`` the boxes are parsed with
  ``pairless.world.det.parse_det_text`` and drawn with their class names on
  the sample's rgb image (or a blank canvas);
- ``vector``: a heat strip (blue negative, red positive).

Figures are built on ``matplotlib.figure.Figure`` (no pyplot state) and
written atomically; a cell is ``CELL_PIXELS`` square, so the grid is
``num_modalities * CELL_PIXELS`` wide and ``num_samples * CELL_PIXELS +
HEADER_PIXELS`` high.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pairless import modalities as registry
from pairless.data.dataset import Dataset
from pairless.utils.storage import atomic_write_bytes
from pairless.world.det import parse_det_text

CELL_PIXELS = 128
HEADER_PIXELS = 20
DPI = 100
# Fixed colours for class ids (tab10 then tab20's lighter half); ids beyond wrap around.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
    "#dbdb8d", "#9edae5",
)


def label_colormap(num_classes: int) -> ListedColormap:
    """The fixed palette for ``num_classes`` class ids."""
    return ListedColormap([_PALETTE[index % len(_PALETTE)] for index in range(max(1, num_classes))])


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _draw_text(ax, text: str, width: int = 24) -> None:
    wrapped = "\n".join(textwrap.wrap(text, width=width, max_lines=9, placeholder=" …")) or "(empty)"
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.text(0.02, 0.98, wrapped, va="top", ha="left", fontsize=5.5, family="monospace", wrap=False)


def _draw_boxes(ax, text: str, size: int, background: np.ndarray | None) -> bool:
    """Draw det boxes on ``background``; False when the text cannot be parsed into boxes."""
    try:
        boxes = parse_det_text(text, size)
    except (ValueError, IndexError):
        return False
    if not boxes:
        return False
    canvas = background if background is not None else np.full((size, size, 3), 235, dtype=np.uint8)
    ax.imshow(canvas, interpolation="nearest")
    for index, (name, (x0, y0, x1, y1)) in enumerate(boxes):
        colour = _PALETTE[index % len(_PALETTE)]
        ax.add_patch(_rectangle(x0, y0, x1, y1, colour))
        ax.text(x0, y0, name, fontsize=5, color="white", va="bottom", ha="left",
                bbox={"facecolor": colour, "pad": 0.5, "linewidth": 0})
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    return True


def _rectangle(x0, y0, x1, y1, colour) -> Rectangle:
    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.0)


def visualize(modality: str, value, ax, *, size: int | None = None,
              background: np.ndarray | None = None) -> None:
    """Draw one natural value of ``modality`` on ``ax`` by its registry ``viz`` kind."""
    entry = registry.get(modality)
    _bare(ax)
    if entry.is_text:
        text = str(value)
        if modality == "det" and size and _draw_boxes(ax, text, size, background):
            return
        _draw_text(ax, text)
        return
    array = np.asarray(value)
    if entry.viz == "vector":
        array = array.reshape(1, -1).astype(np.float32)
        limit = float(np.abs(array).max()) or 1.0
        ax.imshow(array, cmap="coolwarm", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        return
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if entry.viz == "depth":
        inverse = 1.0 / np.maximum(array.astype(np.float32), 1e-6)
        ax.imshow(inverse, cmap="viridis", interpolation="nearest")
    elif entry.viz == "labels":
        num_classes = entry.num_classes or int(array.max()) + 1
        ax.imshow(array, cmap=label_colormap(num_classes), vmin=-0.5, vmax=num_classes - 0.5,
                  interpolation="nearest")
    elif entry.viz == "gray" or array.ndim == 2:
        high = 255 if array.dtype == np.uint8 else float(array.max()) or 1.0
        ax.imshow(array, cmap="gray", vmin=0, vmax=high, interpolation="nearest")
    elif array.ndim == 3 and array.shape[-1] in (3, 4):
        ax.imshow(array, interpolation="nearest")
    else:
        _draw_text(ax, f"{modality}: array {array.shape} {array.dtype}")


def draw_value(ax, modality: str, value, size: int | None = None,
               background: np.ndarray | None = None) -> None:
    """Draw one value on ``ax`` (the name evaluation and generation figures use); None: no ground truth."""
    if value is None:
        _bare(ax)
        _draw_text(ax, "(no ground truth)")
        return
    visualize(modality, value, ax, size=size, background=background)


def preview_figure(dataset: Dataset, indices: list[int]) -> Figure:
    """The grid figure for the samples at ``indices``, one column per modality of the split."""
    columns = dataset.modalities
    width = len(columns) * CELL_PIXELS
    height = len(indices) * CELL_PIXELS + HEADER_PIXELS
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    pad = 3 / CELL_PIXELS  # a few pixels between cells
    for column, name in enumerate(columns):
        figure.text((column + 0.5) / len(columns), 1 - (HEADER_PIXELS / 2) / height, name,
                    ha="center", va="center", fontsize=8, weight="bold")
    for row, index in enumerate(indices):
        sample = dataset[index]
        for column, name in enumerate(columns):
            left = (column + pad) / len(columns)
            bottom = (height - HEADER_PIXELS - (row + 1) * CELL_PIXELS + pad * CELL_PIXELS) / height
            ax = figure.add_axes((left, bottom, (1 - 2 * pad) / len(columns),
                                  (CELL_PIXELS * (1 - 2 * pad)) / height))
            if name in sample:
                draw_value(ax, name, sample[name], dataset.size, background=sample.get("rgb"))
            else:
                _bare(ax)
                _draw_text(ax, "(absent)")
            if column == 0:
                ax.text(0.0, 1.0, dataset.ids[index], transform=ax.transAxes, fontsize=5, va="top",
                        color="white", bbox={"facecolor": "black", "alpha": 0.6, "pad": 0.5, "linewidth": 0})
    return figure


def write_preview(dataset: Dataset, out: str | Path, num: int = 8, start: int = 0) -> tuple[int, int]:
    """Draw samples ``start .. start + num - 1`` to a PNG at ``out``; returns (width, height) in pixels."""
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    if not 0 <= start < len(dataset):
        raise ValueError(f"--start {start} is outside the split's {len(dataset)} samples")
    indices = list(range(start, min(len(dataset), start + num)))
    figure = preview_figure(dataset, indices)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(out, buffer.getvalue())
    return round(figure.get_figwidth() * DPI), round(figure.get_figheight() * DPI)


def draw_grid(path: Path, columns: list[tuple[str, str, object]], rows: int, title: str) -> None:
    """A grid figure: ``columns`` are (header, modality, values); rows are samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(rows, len(columns), figsize=(2.0 * len(columns), 2.0 * rows), squeeze=False)
    for column, (header, modality, values) in enumerate(columns):
        axes[0, column].set_title(header, fontsize=8)
        for row in range(rows):
            value = values[row]
            size = 32 if value is None or isinstance(value, str) else int(np.asarray(value).shape[0])
            draw_value(axes[row, column], modality, value, size)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
