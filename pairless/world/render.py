"""Vectorised ray casting of a :class:`~pairless.world.scenes.SceneBatch` into the image modalities.

One primary ray per pixel centre, for all scenes of the batch at once (numpy
float32 on (B, H*W) rays). Per object slot and shape the rays are moved into
the object's frame and intersected analytically (geometry.py); a z-buffer
keeps the nearest hit. Outputs, exactly as in pairless/modalities.py:

- rgb: uint8 (S, S, 3). Lambert shading ``albedo * (AMBIENT + DIFFUSE * max(0, n . light))``
  without shadows; the floor's albedo is a grey checker, the sky a vertical
  gradient from ``HORIZON`` to ``ZENITH`` by the ray's elevation.
- depth: float32 (S, S), distance along the camera's view axis; sky = ``SKY_DEPTH``.
- normal: uint8 (S, S, 3), camera-space unit normal n (x right, y up, z towards
  the camera) stored as round((n + 1) / 2 * 255); sky stores n = (0, 0, 0), i.e. (128, 128, 128).
- semseg: uint8 (S, S), class ids of SEMSEG_CLASSES (0 sky, 1 floor, 2 + shape index).
- instance: uint8 (S, S), 0 for floor and sky, slot + 1 for objects (not a modality;
  it gives each object's visible-pixel box).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pairless.world.geometry import INTERSECTORS
from pairless.world.scenes import (
    COLOURS,
    FIELD_OF_VIEW,
    FLOOR_RADIUS,
    LOOK_AT,
    MAX_OBJECTS,
    SHAPE_CLASS_OFFSET,
    TILE_SIZE,
    SceneBatch,
)

AMBIENT = 0.3
DIFFUSE = 0.7
FLOOR_ALBEDO = (0.62, 0.42)  # the two checker tiles
HORIZON = np.array([0.80, 0.86, 0.95], dtype=np.float32)
ZENITH = np.array([0.35, 0.52, 0.88], dtype=np.float32)
SKY_DEPTH = 25.0  # farther than any floor point: camera distance <= 8, floor radius 9
SKY_CLASS, FLOOR_CLASS = 0, 1
COLOUR_TABLE = np.array(list(COLOURS.values()), dtype=np.float32)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product of channel-first vectors (3, ...) -> (...)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


@dataclass
class Camera:
    """Per-scene camera frames, channel-first (3, B, 1) each, plus tan of the half field of view."""

    position: np.ndarray
    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray
    tan_half_fov: float

    @classmethod
    def from_scenes(cls, scenes: SceneBatch) -> Camera:
        azimuth, elevation = np.radians(scenes.azimuth), np.radians(scenes.elevation)
        offset = np.stack([np.cos(elevation) * np.cos(azimuth), np.sin(elevation),
                           np.cos(elevation) * np.sin(azimuth)], axis=-1)  # (B, 3)
        position = np.asarray(LOOK_AT, dtype=np.float32) + scenes.distance[:, None] * offset
        forward = -offset
        right = np.cross(forward, np.array([0, 1, 0], dtype=np.float32))
        right /= np.linalg.norm(right, axis=-1, keepdims=True)
        up = np.cross(right, forward)
        frame = [np.ascontiguousarray(vector.T[:, :, None], dtype=np.float32)
                 for vector in (position, right, up, forward)]
        return cls(*frame, float(np.tan(np.radians(FIELD_OF_VIEW / 2))))

    def rays(self, size: int) -> np.ndarray:
        """(3, B, S*S) unit world directions through the pixel centres, row-major from the top left."""
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        v, u = np.meshgrid(-coords, coords, indexing="ij")  # v: +1 at the top row
        u, v = u.reshape(1, 1, -1) * self.tan_half_fov, v.reshape(1, 1, -1) * self.tan_half_fov
        directions = u * self.right + v * self.up + self.forward
        return directions / np.sqrt(_dot(directions, directions))

    def to_camera(self, vectors: np.ndarray) -> np.ndarray:
        """World vectors (3, B, ...) -> camera space (x right, y up, z towards the camera)."""
        return np.stack([_dot(vectors, self.right), _dot(vectors, self.up), -_dot(vectors, self.forward)])


@dataclass
class RenderedBatch:
    """Image modalities (B, S, S[, 3]) plus per-slot visibility facts (B, K[, ...])."""

    rgb: np.ndarray
    depth: np.ndarray
    normal: np.ndarray
    semseg: np.ndarray
    instance: np.ndarray
    pixels: np.ndarray  # (B, K) int, visible pixels of each slot
    box: np.ndarray  # (B, K, 4) int, (x0, y0, x1, y1) of visible pixels, ends exclusive; 0 if unseen
    screen_center: np.ndarray  # (B, K, 2) float32, (column, row) of the object's centre in pixels
    center_depth: np.ndarray  # (B, K) float32, view-axis distance of the object's centre


def _rotate_y(vectors: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate channel-first vectors (3, M, P) about the y axis (cos, sin shaped (M, 1))."""
    x, y, z = vectors
    return np.stack([cos * x + sin * z, np.broadcast_to(y, (cos * x).shape), cos * z - sin * x])


def _hit_objects(scenes: SceneBatch, camera: Camera, directions: np.ndarray):
    """Nearest object hit per ray: t (B, P), world normal (3, B, P), slot + 1 or 0 (B, P)."""
    count, pixels = directions.shape[1:]
    best_t = np.full((count, pixels), np.inf, dtype=np.float32)
    best_normal = np.zeros((3, count, pixels), dtype=np.float32)
    best_slot = np.zeros((count, pixels), dtype=np.uint8)
    radius, yaw = scenes.radius, scenes.yaw
    for slot in range(MAX_OBJECTS):
        for shape_index, intersect in enumerate(INTERSECTORS):
            rows = np.nonzero(scenes.valid[:, slot] & (scenes.shape[:, slot] == shape_index))[0]
            if len(rows) == 0:
                continue
            cos, sin = np.cos(yaw[rows, slot])[:, None], np.sin(yaw[rows, slot])[:, None]
            base = np.zeros((3, len(rows), 1), dtype=np.float32)
            base[0, :, 0], base[2, :, 0] = scenes.position[rows, slot, 0], scenes.position[rows, slot, 1]
            origin = _rotate_y(camera.position[:, rows] - base, cos, sin)  # (3, M, 1) object frame
            local = _rotate_y(directions[:, rows], cos, sin)  # (3, M, P)
            t, normal = intersect(origin, local, radius[rows, slot][:, None])
            closer = t < best_t[rows]
            normal = _rotate_y(normal, cos, -sin)  # back to the world frame
            best_t[rows] = np.where(closer, t, best_t[rows])
            best_normal[:, rows] = np.where(closer, normal, best_normal[:, rows])
            best_slot[rows] = np.where(closer, slot + 1, best_slot[rows])
    return best_t, best_normal, best_slot


def _boxes(instance: np.ndarray):
    """Visible pixel count and box (x0, y0, x1, y1), ends exclusive, of every slot."""
    masks = instance[:, None] == np.arange(1, MAX_OBJECTS + 1, dtype=np.uint8)[None, :, None, None]
    pixels = masks.sum(axis=(2, 3))
    size = instance.shape[-1]
    rows, cols = masks.any(axis=3), masks.any(axis=2)  # (B, K, S)
    y0, x0 = rows.argmax(axis=-1), cols.argmax(axis=-1)
    y1, x1 = size - rows[..., ::-1].argmax(axis=-1), size - cols[..., ::-1].argmax(axis=-1)
    box = np.stack([x0, y0, x1, y1], axis=-1) * (pixels > 0)[..., None]
    return pixels, box


def render_batch(scenes: SceneBatch, size: int) -> RenderedBatch:
    """Ray-cast every scene of ``scenes`` at ``size`` x ``size`` pixels."""
    if size < 4:
        raise ValueError(f"size must be >= 4 pixels, got {size}")
    count = len(scenes)
    camera = Camera.from_scenes(scenes)
    directions = camera.rays(size)  # (3, B, P)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        object_t, object_normal, slot = _hit_objects(scenes, camera, directions)
        floor_t = -camera.position[1] / np.minimum(directions[1], -1e-6)  # (B, P)
        floor_x = camera.position[0] + floor_t * directions[0]
        floor_z = camera.position[2] + floor_t * directions[2]
        on_floor = (directions[1] < 0) & (floor_x * floor_x + floor_z * floor_z <= FLOOR_RADIUS**2)
        floor_t = np.where(on_floor, floor_t, np.inf)
        is_object = object_t < floor_t
        slot = np.where(is_object, slot, 0).astype(np.uint8)
        t = np.minimum(object_t, floor_t)
        hit = np.isfinite(t)

        normal = np.stack([np.where(is_object, object_normal[0], 0), np.where(is_object, object_normal[1], 1),
                           np.where(is_object, object_normal[2], 0)])
        tiles = (np.floor(floor_x / TILE_SIZE) + np.floor(floor_z / TILE_SIZE)) % 2
        floor_albedo = np.where(tiles == 0, FLOOR_ALBEDO[0], FLOOR_ALBEDO[1]).astype(np.float32)
        slot_index = np.maximum(slot.astype(np.int64) - 1, 0)
        object_colour = COLOUR_TABLE.T[:, np.take_along_axis(scenes.colour, slot_index, axis=1)]  # (3, B, P)
        light = np.ascontiguousarray(scenes.light.T[:, :, None])
        shade = AMBIENT + DIFFUSE * np.maximum(_dot(normal, light), 0)
        sky_mix = np.clip(directions[1] * 2.5, 0, 1)
        colour = np.stack([
            np.where(hit, np.where(is_object, object_colour[channel], floor_albedo) * shade,
                     HORIZON[channel] + (ZENITH[channel] - HORIZON[channel]) * sky_mix)
            for channel in range(3)], axis=-1)  # (B, P, 3)

        view_depth = t * _dot(directions, camera.forward)
        depth = np.where(hit, view_depth, SKY_DEPTH).astype(np.float32)
        camera_normal = np.stack([np.where(hit, component, 0) for component in camera.to_camera(normal)],
                                 axis=-1)
        shape_class = np.take_along_axis(scenes.shape, slot_index, axis=1) + SHAPE_CLASS_OFFSET
        semseg = np.where(is_object, shape_class, np.where(hit, FLOOR_CLASS, SKY_CLASS)).astype(np.uint8)

    image = (count, size, size)
    instance = slot.reshape(image)
    pixels, box = _boxes(instance)
    heights = scenes.height  # (B, K)
    centre = np.stack([scenes.position[..., 0], heights / 2, scenes.position[..., 1]])  # (3, B, K)
    centre_camera = camera.to_camera(centre - camera.position)  # (3, B, K)
    centre_depth = -centre_camera[2]
    scale = size / 2 / camera.tan_half_fov
    column = size / 2 + scale * centre_camera[0] / centre_depth
    row = size / 2 - scale * centre_camera[1] / centre_depth
    return RenderedBatch(
        rgb=np.round(np.clip(colour, 0, 1) * 255).astype(np.uint8).reshape(image + (3,)),
        depth=depth.reshape(image),
        normal=np.round((np.clip(camera_normal, -1, 1) + 1) / 2 * 255).astype(np.uint8).reshape(image + (3,)),
        semseg=semseg.reshape(image),
        instance=instance,
        pixels=pixels,
        box=box,
        screen_center=np.stack([column, row], axis=-1).astype(np.float32),
        center_depth=centre_depth.astype(np.float32),
    )
