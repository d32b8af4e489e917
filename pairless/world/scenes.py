"""Scene sampling for the built-in world: floor, 1-4 objects, camera and light, as arrays.

A :class:`SceneBatch` holds ``N`` scenes as flat numpy arrays with ``MAX_OBJECTS``
object slots per scene (``valid`` marks the used ones), so the renderer can
work on all scenes of a batch at once. :func:`sample_scenes` draws them,
vectorised, from ``np.random.Generator`` s seeded with ``seed``; rendering is then a
pure function of the arrays, which is why the output is independent of the
batch size used for rendering; scene i depends only on (seed, i).

World frame: y is up, the floor is the plane y = 0 (a disc of radius
``FLOOR_RADIUS`` with a checker texture of ``TILE_SIZE`` tiles), objects
stand on it inside a disc of radius ``PLACEMENT_RADIUS`` around the origin
and never overlap (their bounding circles on the floor stay ``GAP`` apart).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pairless.modalities import SEMSEG_CLASSES

# Shapes in semseg-class order: shape index s has semseg class id s + 2.
SHAPES: tuple[str, ...] = SEMSEG_CLASSES[2:]  # sphere, cube, cylinder, cone
SHAPE_CLASS_OFFSET = 2
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.14, 0.12),
    "green": (0.18, 0.72, 0.22),
    "blue": (0.16, 0.32, 0.92),
    "yellow": (0.95, 0.86, 0.16),
    "purple": (0.56, 0.22, 0.80),
    "cyan": (0.15, 0.82, 0.86),
    "orange": (0.98, 0.52, 0.10),
    "pink": (0.98, 0.52, 0.74),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZES: tuple[str, ...] = ("small", "large")
# Footprint radius of each size (sphere radius, cylinder/cone base radius).
SIZE_RADIUS: tuple[float, float] = (0.45, 0.75)
# Per shape: half-width of the footprint and height, as multiples of the size radius.
CUBE_HALF_EXTENT = 0.8  # a cube of half-edge 0.8 r looks as big as a sphere of radius r
CYLINDER_HEIGHT = 1.6
CONE_HEIGHT = 2.2

MAX_OBJECTS = 4
PLACEMENT_RADIUS = 1.9
GAP = 0.15
PLACEMENT_TRIES = 24
SAMPLING_CHUNK = 1024  # scenes drawn per generator (see sample_scenes)
FLOOR_RADIUS = 9.0
TILE_SIZE = 1.0

# Camera: looks at LOOK_AT from a random azimuth (full circle), elevation and distance.
LOOK_AT = (0.0, 0.45, 0.0)
AZIMUTH_RANGE = (0.0, 360.0)
ELEVATION_RANGE = (18.0, 45.0)  # degrees above the floor
DISTANCE_RANGE = (5.8, 7.0)
FIELD_OF_VIEW = 42.0  # degrees, full vertical (= horizontal) angle
# Light: a directional light coming from a random azimuth and this elevation range.
LIGHT_ELEVATION_RANGE = (30.0, 75.0)


def shape_height(shape: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Height of objects of shape index ``shape`` and footprint radius ``radius``."""
    factor = np.array([2.0, 2.0 * CUBE_HALF_EXTENT, CYLINDER_HEIGHT, CONE_HEIGHT], dtype=np.float32)
    return factor[shape] * radius


def bounding_radius(shape: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Radius of the floor circle that contains the object's footprint (cubes rotate)."""
    factor = np.array([1.0, CUBE_HALF_EXTENT * np.sqrt(2.0), 1.0, 1.0], dtype=np.float32)
    return factor[shape] * radius


@dataclass
class SceneBatch:
    """``N`` scenes as arrays; object arrays have ``MAX_OBJECTS`` slots (see ``valid``)."""

    valid: np.ndarray  # (N, K) bool, slot holds an object
    shape: np.ndarray  # (N, K) int64, index into SHAPES
    colour: np.ndarray  # (N, K) int64, index into COLOUR_NAMES
    size: np.ndarray  # (N, K) int64, index into SIZES
    position: np.ndarray  # (N, K, 2) float32, (x, z) of the footprint centre on the floor
    yaw: np.ndarray  # (N, K) float32, rotation about the vertical axis in radians (cubes)
    azimuth: np.ndarray  # (N,) float32, camera azimuth in degrees
    elevation: np.ndarray  # (N,) float32, camera elevation in degrees
    distance: np.ndarray  # (N,) float32, camera distance to LOOK_AT
    light: np.ndarray  # (N, 3) float32, unit vector pointing towards the light
    text_seed: np.ndarray  # (N,) int64, seeds the wording of this scene's caption

    def __len__(self) -> int:
        return len(self.azimuth)

    def slice(self, start: int, stop: int) -> SceneBatch:
        """Scenes ``start:stop`` as a new batch (views, no copies)."""
        return SceneBatch(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})

    @property
    def radius(self) -> np.ndarray:
        """(N, K) float32 footprint radius of every slot."""
        return np.asarray(SIZE_RADIUS, dtype=np.float32)[self.size]

    @property
    def height(self) -> np.ndarray:
        """(N, K) float32 height of every slot."""
        return shape_height(self.shape, self.radius)


def _uniform(rng: np.random.Generator, low_high: tuple[float, float], shape) -> np.ndarray:
    return rng.uniform(low_high[0], low_high[1], size=shape).astype(np.float32)


def sample_scenes(num_scenes: int, seed: int) -> SceneBatch:
    """Draw ``num_scenes`` scenes from the world distribution; scene ``i`` depends only on ``(seed, i)``.

    Scenes are drawn in chunks of ``SAMPLING_CHUNK``, chunk ``c`` from
    ``np.random.default_rng([seed, c])``, so a bigger world starts with the
    scenes of a smaller one with the same seed.
    """
    if num_scenes < 0:
        raise ValueError(f"num_scenes must be >= 0, got {num_scenes}")
    chunks = [_sample_chunk(np.random.default_rng([seed, chunk]), SAMPLING_CHUNK)
              for chunk in range(-(-num_scenes // SAMPLING_CHUNK))]
    if not chunks:
        return _sample_chunk(np.random.default_rng([seed, 0]), 0)
    joined = SceneBatch(**{f.name: np.concatenate([getattr(chunk, f.name) for chunk in chunks])
                           for f in fields(SceneBatch)})
    return joined.slice(0, num_scenes)


def _sample_chunk(rng: np.random.Generator, count: int) -> SceneBatch:
    """``count`` scenes drawn with ``rng``, all at once.

    Each scene asks for 1-4 objects (uniform); every object gets a uniform shape,
    colour, size and yaw, and a position drawn by rejection (up to
    ``PLACEMENT_TRIES`` candidates in the placement disc, the first one clear
    of the objects already placed). An object whose candidates all collide is
    left out, so a few crowded scenes hold one object less than asked.
    """
    slots = MAX_OBJECTS
    requested = rng.integers(1, slots + 1, size=count)
    shape = rng.integers(0, len(SHAPES), size=(count, slots))
    colour = rng.integers(0, len(COLOUR_NAMES), size=(count, slots))
    size = rng.integers(0, len(SIZES), size=(count, slots))
    yaw = _uniform(rng, (0.0, np.pi / 2), (count, slots))  # a cube's yaw repeats every 90 degrees
    # Candidates uniform over the placement disc: radius ~ sqrt(uniform).
    candidate_radius = PLACEMENT_RADIUS * np.sqrt(rng.uniform(0.0, 1.0, size=(count, slots, PLACEMENT_TRIES)))
    candidate_angle = rng.uniform(0.0, 2 * np.pi, size=(count, slots, PLACEMENT_TRIES))
    candidates = np.stack([candidate_radius * np.cos(candidate_angle),
                           candidate_radius * np.sin(candidate_angle)], axis=-1).astype(np.float32)

    reach = bounding_radius(shape, np.asarray(SIZE_RADIUS, dtype=np.float32)[size])  # (N, K)
    position = np.zeros((count, slots, 2), dtype=np.float32)
    valid = np.zeros((count, slots), dtype=bool)
    rows = np.arange(count)
    for slot in range(slots):
        wanted = slot < requested
        # (N, T, k): distance of each candidate to each object already placed.
        gaps = np.linalg.norm(candidates[:, slot, :, None, :] - position[:, None, :slot, :], axis=-1)
        needed = reach[:, None, slot, None] + reach[:, None, :slot] + GAP
        clear = np.all((gaps >= needed) | ~valid[:, None, :slot], axis=-1)  # (N, T)
        found = clear.any(axis=1)
        first = np.argmax(clear, axis=1)
        valid[:, slot] = wanted & found
        position[:, slot] = np.where(valid[:, slot, None], candidates[rows, slot, first], 0.0)

    azimuth = _uniform(rng, AZIMUTH_RANGE, count)
    elevation = _uniform(rng, ELEVATION_RANGE, count)
    distance = _uniform(rng, DISTANCE_RANGE, count)
    light_azimuth = np.radians(_uniform(rng, (0.0, 360.0), count))
    light_elevation = np.radians(_uniform(rng, LIGHT_ELEVATION_RANGE, count))
    light = np.stack([np.cos(light_elevation) * np.cos(light_azimuth), np.sin(light_elevation),
                      np.cos(light_elevation) * np.sin(light_azimuth)], axis=-1).astype(np.float32)
    text_seed = rng.integers(0, 2**62, size=count)
    return SceneBatch(valid=valid, shape=shape, colour=colour, size=size, position=position, yaw=yaw,
                      azimuth=azimuth, elevation=elevation, distance=distance, light=light,
                      text_seed=text_seed)
