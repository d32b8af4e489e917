"""From sampled scenes to the seven modality columns plus JSON-able scene dicts: :func:`render_world`.

All scenes are sampled up front from ``seed`` and then rendered in batches;
because sampling happens once and rendering is a pure function of each
scene, the output is byte-identical for a given seed whatever the batch size.

Objects with no visible pixel (hidden behind another or outside the frame)
affect no image modality (there are no shadows), so they are dropped from the
scene dict, the det text, the caption and the embedding: every modality
describes the same set of objects.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from pairless.world.captions import make_caption
from pairless.world.det import det_to_text
from pairless.world.embed import embed_scenes
from pairless.world.render import RenderedBatch, render_batch
from pairless.world.scenes import (
    COLOUR_NAMES,
    FIELD_OF_VIEW,
    FLOOR_RADIUS,
    LOOK_AT,
    SHAPES,
    SIZES,
    TILE_SIZE,
    SceneBatch,
    sample_scenes,
)

IMAGE_MODALITIES = ("rgb", "depth", "normal", "semseg")


def _round(values) -> list[float]:
    return [round(float(value), 4) for value in np.ravel(values)]


def scene_dicts(scenes: SceneBatch, rendered: RenderedBatch, size: int) -> list[dict]:
    """One JSON-able dict per scene: its visible objects, the camera and the light."""
    out = []
    heights = scenes.height
    azimuth, elevation = np.radians(scenes.azimuth), np.radians(scenes.elevation)
    for index in range(len(scenes)):
        objects = []
        for slot in np.nonzero(scenes.valid[index] & (rendered.pixels[index] > 0))[0]:
            x, z = scenes.position[index, slot]
            objects.append({
                "shape": SHAPES[scenes.shape[index, slot]],
                "colour": COLOUR_NAMES[scenes.colour[index, slot]],
                "size": SIZES[scenes.size[index, slot]],
                "position": _round([x, heights[index, slot] / 2, z]),
                "yaw_degrees": round(float(np.degrees(scenes.yaw[index, slot])), 4),
                "box": [int(value) for value in rendered.box[index, slot]],
                "pixels": int(rendered.pixels[index, slot]),
                "screen_center": _round(rendered.screen_center[index, slot]),
                "center_depth": round(float(rendered.center_depth[index, slot]), 4),
            })
        direction = [np.cos(elevation[index]) * np.cos(azimuth[index]), np.sin(elevation[index]),
                     np.cos(elevation[index]) * np.sin(azimuth[index])]
        out.append({
            "image_size": size,
            "objects": objects,
            "camera": {
                "azimuth_degrees": round(float(scenes.azimuth[index]), 4),
                "elevation_degrees": round(float(scenes.elevation[index]), 4),
                "distance": round(float(scenes.distance[index]), 4),
                "field_of_view_degrees": FIELD_OF_VIEW,
                "look_at": list(LOOK_AT),
                "position": _round(np.asarray(LOOK_AT) + scenes.distance[index] * np.asarray(direction)),
            },
            "light": {"direction": _round(scenes.light[index])},
            "floor": {"radius": FLOOR_RADIUS, "tile_size": TILE_SIZE},
        })
    return out


def render_world(num_scenes: int, size: int = 32, seed: int = 0, batch_size: int = 256,
                 progress: bool | None = None) -> tuple[dict[str, np.ndarray | list[str]], list[dict]]:
    """Render ``num_scenes`` world scenes at ``size`` x ``size`` into modality columns and scene dicts.

    Returns ``(columns, scenes)``: columns ``rgb`` (N, S, S, 3) uint8, ``depth``
    (N, S, S) float32, ``normal`` (N, S, S, 3) uint8, ``semseg`` (N, S, S) uint8,
    ``embed`` (N, 64) float32, and ``det`` / ``caption`` lists of N strings;
    ``scenes`` the N scene dicts. ``progress=None`` shows a bar on a terminal only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    all_scenes = sample_scenes(num_scenes, seed)
    columns: dict[str, np.ndarray | list[str]] = {
        "rgb": np.zeros((num_scenes, size, size, 3), dtype=np.uint8),
        "depth": np.zeros((num_scenes, size, size), dtype=np.float32),
        "normal": np.zeros((num_scenes, size, size, 3), dtype=np.uint8),
        "semseg": np.zeros((num_scenes, size, size), dtype=np.uint8),
        "det": [], "caption": [],
        "embed": np.zeros((num_scenes, 0), dtype=np.float32),
    }
    visible = np.zeros(all_scenes.valid.shape, dtype=bool)
    dicts: list[dict] = []
    starts = range(0, num_scenes, batch_size)
    for start in tqdm(starts, desc="render world", unit="batch", disable=None if progress is None
                      else not progress):
        stop = min(start + batch_size, num_scenes)
        batch = all_scenes.slice(start, stop)
        rendered = render_batch(batch, size)
        for name in IMAGE_MODALITIES:
            columns[name][start:stop] = getattr(rendered, name)
        visible[start:stop] = batch.valid & (rendered.pixels > 0)
        batch_dicts = scene_dicts(batch, rendered, size)
        for scene, text_seed in zip(batch_dicts, batch.text_seed, strict=True):
            columns["det"].append(det_to_text(scene["objects"], size))
            columns["caption"].append(make_caption(scene, int(text_seed)))
        dicts += batch_dicts
    columns["embed"] = embed_scenes(all_scenes.shape, all_scenes.colour, all_scenes.size, visible)
    return columns, dicts
