"""Analytic ray-primitive intersections, vectorised over many objects and pixels at once.

Every function takes rays in the object's own frame (the footprint centre at
the origin, y up): ``origin`` (M, 1, 3) and unit ``direction`` (M, P, 3), and
the object's footprint radius (M, 1); it returns the ray distance ``t``
(M, P), ``inf`` where the ray misses, and the outward unit normal (M, P, 3) in
the same frame. All arithmetic is float32. Bottom faces are skipped: they lie
on the floor, and the camera is always above it.
"""

from __future__ import annotations

import numpy as np

from pairless.world.scenes import CONE_HEIGHT, CUBE_HALF_EXTENT, CYLINDER_HEIGHT

INF = np.float32(np.inf)
EPSILON = np.float32(1e-6)


def _safe_inverse(values: np.ndarray) -> np.ndarray:
    """1 / values, with exact zeros replaced by a tiny number (a ray parallel to a slab)."""
    return 1.0 / np.where(np.abs(values) < EPSILON, EPSILON, values)


def intersect_sphere(origin: np.ndarray, direction: np.ndarray, radius: np.ndarray):
    """Sphere of ``radius`` resting on the floor: centre (0, radius, 0)."""
    centre = np.zeros_like(origin)
    centre[..., 1] = radius
    offset = origin - centre  # (M, 1, 3)
    half_b = np.sum(offset * direction, axis=-1)  # (M, P)
    c = np.sum(offset * offset, axis=-1) - radius**2  # (M, 1)
    discriminant = half_b**2 - c
    hit = discriminant >= 0
    t = -half_b - np.sqrt(np.where(hit, discriminant, 0))
    t = np.where(hit & (t > 0), t, INF)
    normal = (origin + t[..., None] * direction - centre) / radius[..., None]
    return t, normal


def intersect_cube(origin: np.ndarray, direction: np.ndarray, radius: np.ndarray):
    """Cube of half-edge ``CUBE_HALF_EXTENT * radius`` standing on the floor, axis-aligned in its frame."""
    half = CUBE_HALF_EXTENT * radius  # (M, 1)
    centre = np.zeros_like(origin)
    centre[..., 1] = half
    offset = origin - centre  # (M, 1, 3)
    inverse = _safe_inverse(direction)  # (M, P, 3)
    low = (-half[..., None] - offset) * inverse
    high = (half[..., None] - offset) * inverse
    near_each = np.minimum(low, high)  # (M, P, 3)
    near = near_each.max(axis=-1)
    far = np.maximum(low, high).min(axis=-1)
    t = np.where((near <= far) & (near > 0), near, INF)
    # The face hit is the axis whose slab was entered last; its normal faces the ray.
    axis = near_each.argmax(axis=-1)  # (M, P)
    normal = np.zeros(direction.shape, dtype=np.float32)
    picked = np.take_along_axis(direction, axis[..., None], axis=-1)
    np.put_along_axis(normal, axis[..., None], -np.sign(picked).astype(np.float32), axis=-1)
    return t, normal


def _cap(origin, direction, radius, height):
    """The flat top disc of a cylinder at y = height."""
    t = (height - origin[..., 1]) * _safe_inverse(direction[..., 1])
    x = origin[..., 0] + t * direction[..., 0]
    z = origin[..., 2] + t * direction[..., 2]
    return np.where((t > 0) & (x * x + z * z <= radius**2), t, INF)


def intersect_cylinder(origin: np.ndarray, direction: np.ndarray, radius: np.ndarray):
    """Capped cylinder of ``radius`` and height ``CYLINDER_HEIGHT * radius`` on the floor."""
    height = CYLINDER_HEIGHT * radius  # (M, 1)
    ox, oy, oz = origin[..., 0], origin[..., 1], origin[..., 2]
    dx, dy, dz = direction[..., 0], direction[..., 1], direction[..., 2]
    a = dx * dx + dz * dz
    half_b = ox * dx + oz * dz
    c = ox * ox + oz * oz - radius**2
    discriminant = half_b**2 - a * c
    hit = (discriminant >= 0) & (a > EPSILON)
    side = (-half_b - np.sqrt(np.where(hit, discriminant, 0))) / np.where(hit, a, 1)
    y = oy + side * dy
    side = np.where(hit & (side > 0) & (y >= 0) & (y <= height), side, INF)
    top = _cap(origin, direction, radius, height)
    t = np.minimum(side, top)
    point = origin + t[..., None] * direction
    side_normal = point * np.array([1, 0, 1], dtype=np.float32) / radius[..., None]
    normal = np.where((top < side)[..., None], np.array([0, 1, 0], dtype=np.float32), side_normal)
    return t, normal


def intersect_cone(origin: np.ndarray, direction: np.ndarray, radius: np.ndarray):
    """Cone with base ``radius`` on the floor and apex at height ``CONE_HEIGHT * radius``."""
    height = CONE_HEIGHT * radius  # (M, 1)
    slope2 = (radius / height) ** 2  # (footprint radius per unit of height)^2
    ox, oy, oz = origin[..., 0], origin[..., 1], origin[..., 2]
    dx, dy, dz = direction[..., 0], direction[..., 1], direction[..., 2]
    above = height - oy  # (M, 1): apex height above the ray origin
    # x^2 + z^2 = slope2 * (height - y)^2 along the ray gives a t^2 + 2 half_b t + c = 0.
    a = dx * dx + dz * dz - slope2 * dy * dy
    half_b = ox * dx + oz * dz + slope2 * above * dy
    c = ox * ox + oz * oz - slope2 * above**2
    discriminant = half_b**2 - a * c
    hit = (discriminant >= 0) & (np.abs(a) > EPSILON)
    root = np.sqrt(np.where(hit, discriminant, 0))
    safe_a = np.where(hit, a, 1)
    best = np.full(a.shape, INF, dtype=np.float32)
    for t in ((-half_b - root) / safe_a, (-half_b + root) / safe_a):
        y = oy + t * dy
        ok = hit & (t > 0) & (y >= 0) & (y <= height)
        best = np.where(ok & (t < best), t, best)
    point = origin + best[..., None] * direction
    # Gradient of x^2 + z^2 - slope2 (height - y)^2, up to a factor 2.
    normal = np.stack([point[..., 0], slope2 * (height - point[..., 1]), point[..., 2]], axis=-1)
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), EPSILON)
    return best, normal


# Indexed by shape index (see pairless.world.scenes.SHAPES).
INTERSECTORS = (intersect_sphere, intersect_cube, intersect_cylinder, intersect_cone)
