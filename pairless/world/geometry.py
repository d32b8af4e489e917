"""Analytic ray-primitive intersections, vectorised over many objects and pixels at once.

Every function takes rays in the object's own frame (the footprint centre at
the origin, y up): ``origin`` (3, M, 1) and unit ``direction`` (3, M, P), and
the object's footprint radius (M, 1); it returns the ray distance ``t``
(M, P), ``inf`` where the ray misses, and the outward unit normal (3, M, P) in
the same frame. Vectors are channel-first so that each component is a
contiguous array (several times faster in numpy than a trailing axis of 3).
All arithmetic is float32. Bottom faces are skipped: they lie
on the floor, and the camera is always above it.
"""

from __future__ import annotations

import numpy as np

from pairless.world.scenes import CONE_HEIGHT, CUBE_HALF_EXTENT, CYLINDER_HEIGHT

INF = np.float32(np.inf)
EPSILON = np.float32(1e-6)


def _safe_inverse(values: np.ndarray) -> np.ndarray:
    """1 / values, with near-zeros replaced by a tiny number (a ray parallel to a slab)."""
    return 1.0 / np.where(np.abs(values) < EPSILON, EPSILON, values)


def intersect_sphere(origin: np.ndarray, direction: np.ndarray, radius: np.ndarray):
    """Sphere of ``radius`` resting on the floor: centre (0, radius, 0)."""
    ox, oy, oz = origin[0], origin[1] - radius, origin[2]  # relative to the centre, (M, 1) each
    dx, dy, dz = direction
    half_b = ox * dx + oy * dy + oz * dz  # (M, P)
    c = ox * ox + oy * oy + oz * oz - radius * radius  # (M, 1)
    discriminant = half_b * half_b - c
    hit = discriminant >= 0
    t = -half_b - np.sqrt(np.where(hit, discriminant, 0))
    t = np.where(hit & (t > 0), t, INF)
    inverse = 1 / radius
    normal = np.stack([(ox + t * dx) * inverse, (oy + t * dy) * inverse, (oz + t * dz) * inverse])
    return t, normal


def intersect_cube(origin: np.ndarray, direction: np.ndarray, radius: np.ndarray):
    """Cube of half-edge ``CUBE_HALF_EXTENT * radius`` standing on the floor, axis-aligned in its frame."""
    half = CUBE_HALF_EXTENT * radius  # (M, 1)
    offsets = (origin[0], origin[1] - half, origin[2])  # relative to the centre
    near = far = None
    nears = []
    for offset, component in zip(offsets, direction, strict=True):
        inverse = _safe_inverse(component)
        low, high = (-half - offset) * inverse, (half - offset) * inverse
        enter, leave = np.minimum(low, high), np.maximum(low, high)
        nears.append(enter)
        near = enter if near is None else np.maximum(near, enter)
        far = leave if far is None else np.minimum(far, leave)
    t = np.where((near <= far) & (near > 0), near, INF)
    # The face hit is the axis whose slab was entered last; its normal faces the ray.
    normal, taken = [], np.zeros(near.shape, dtype=bool)
    for enter, component in zip(nears, direction, strict=True):
        chosen = (enter == near) & ~taken  # at an edge, the first axis wins
        normal.append(np.where(chosen, -np.sign(component), 0).astype(np.float32))
        taken |= chosen
    return t, np.stack(normal)


def _cap(origin, direction, radius, height):
    """The flat top disc of a cylinder at y = height."""
    t = (height - origin[1]) * _safe_inverse(direction[1])
    x = origin[0] + t * direction[0]
    z = origin[2] + t * direction[2]
    return np.where((t > 0) & (x * x + z * z <= radius * radius), t, INF)


def intersect_cylinder(origin: np.ndarray, direction: np.ndarray, radius: np.ndarray):
    """Capped cylinder of ``radius`` and height ``CYLINDER_HEIGHT * radius`` on the floor."""
    height = CYLINDER_HEIGHT * radius  # (M, 1)
    ox, oy, oz = origin
    dx, dy, dz = direction
    a = dx * dx + dz * dz
    half_b = ox * dx + oz * dz
    c = ox * ox + oz * oz - radius * radius
    discriminant = half_b * half_b - a * c
    hit = (discriminant >= 0) & (a > EPSILON)
    side = (-half_b - np.sqrt(np.where(hit, discriminant, 0))) / np.where(hit, a, 1)
    y = oy + side * dy
    side = np.where(hit & (side > 0) & (y >= 0) & (y <= height), side, INF)
    top = _cap(origin, direction, radius, height)
    t = np.minimum(side, top)
    on_top = top < side
    inverse = 1 / radius
    normal = np.stack([np.where(on_top, 0, (ox + t * dx) * inverse), on_top.astype(np.float32),
                       np.where(on_top, 0, (oz + t * dz) * inverse)])
    return t, normal


def intersect_cone(origin: np.ndarray, direction: np.ndarray, radius: np.ndarray):
    """Cone with base ``radius`` on the floor and apex at height ``CONE_HEIGHT * radius``."""
    height = CONE_HEIGHT * radius  # (M, 1)
    slope2 = np.float32(1 / CONE_HEIGHT**2)  # (footprint radius per unit of height)^2
    ox, oy, oz = origin
    dx, dy, dz = direction
    above = height - oy  # (M, 1): apex height above the ray origin
    # x^2 + z^2 = slope2 * (height - y)^2 along the ray gives a t^2 + 2 half_b t + c = 0.
    a = dx * dx + dz * dz - slope2 * dy * dy
    half_b = ox * dx + oz * dz + slope2 * above * dy
    c = ox * ox + oz * oz - slope2 * above * above
    discriminant = half_b * half_b - a * c
    hit = (discriminant >= 0) & (np.abs(a) > EPSILON)
    root = np.sqrt(np.where(hit, discriminant, 0))
    safe_a = np.where(hit, a, 1)
    best = np.full(a.shape, INF, dtype=np.float32)
    for t in ((-half_b - root) / safe_a, (-half_b + root) / safe_a):
        y = oy + t * dy
        best = np.where(hit & (t > 0) & (y >= 0) & (y <= height) & (t < best), t, best)
    # Gradient of x^2 + z^2 - slope2 (height - y)^2, up to a factor 2.
    x, z = ox + best * dx, oz + best * dz
    up = slope2 * (above - best * dy)
    length = np.maximum(np.sqrt(x * x + up * up + z * z), EPSILON)
    return best, np.stack([x / length, up / length, z / length])


# Indexed by shape index (see pairless.world.scenes.SHAPES).
INTERSECTORS = (intersect_sphere, intersect_cube, intersect_cylinder, intersect_cone)
