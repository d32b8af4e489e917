"""The built-in world's renderer: determinism, the natural forms of every modality, geometry checks."""

from __future__ import annotations

import numpy as np
import pytest

from pairless.modalities import EMBED_DIM, SEMSEG_CLASSES, WORLD_MODALITIES
from pairless.modalities import get as get_modality
from pairless.world import render_world
from pairless.world.geometry import INTERSECTORS
from pairless.world.render import SKY_DEPTH, render_batch
from pairless.world.scenes import FIELD_OF_VIEW, MAX_OBJECTS, SHAPES, SIZE_RADIUS, sample_scenes

SIZE = 32


@pytest.fixture(scope="module")
def world():
    return render_world(48, SIZE, seed=7, batch_size=16, progress=False)


def _decode_normals(normal: np.ndarray) -> np.ndarray:
    """uint8 -> unit vectors (renormalised: 8-bit rounding changes the length by up to ~0.5%)."""
    vectors = normal.astype(np.float32) / 255 * 2 - 1
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-6)


def test_same_seed_is_byte_identical_whatever_the_batch_size_or_count(world):
    columns, scenes = world
    again, again_scenes = render_world(48, SIZE, seed=7, batch_size=5, progress=False)
    for name in WORLD_MODALITIES:
        if isinstance(columns[name], list):
            assert columns[name] == again[name], name
        else:
            assert columns[name].tobytes() == again[name].tobytes(), name
    assert scenes == again_scenes
    # A smaller world with the same seed is a prefix of a bigger one.
    prefix, prefix_scenes = render_world(10, SIZE, seed=7, progress=False)
    assert prefix["rgb"].tobytes() == columns["rgb"][:10].tobytes()
    assert prefix["caption"] == columns["caption"][:10] and prefix_scenes == scenes[:10]
    big, small = sample_scenes(1100, seed=7), sample_scenes(30, seed=7)
    assert np.array_equal(big.position[:30], small.position) and np.array_equal(big.text_seed[:30],
                                                                                small.text_seed)
    other, _ = render_world(48, SIZE, seed=8, batch_size=16, progress=False)
    assert other["rgb"].tobytes() != columns["rgb"].tobytes()
    assert other["caption"] != columns["caption"]


def test_every_modality_has_its_natural_form(world):
    columns, scenes = world
    count = len(scenes)
    for name in WORLD_MODALITIES:
        modality = get_modality(name)
        if modality.is_text:
            assert len(columns[name]) == count and all(isinstance(text, str) and text
                                                       for text in columns[name])
        else:
            assert columns[name].shape == (count, *modality.natural_shape(SIZE)), name
            assert columns[name].dtype == np.dtype(modality.dtype), name
    semseg, depth = columns["semseg"], columns["depth"]
    assert semseg.max() < len(SEMSEG_CLASSES)
    assert np.all(depth > 0) and np.all(np.isfinite(depth))
    sky = semseg == 0
    assert sky.any() and (~sky).any()
    assert np.all(depth[sky] == SKY_DEPTH) and depth[~sky].max() < SKY_DEPTH
    assert np.all(columns["normal"][sky] == 128)
    stored = columns["normal"].astype(np.float32) / 255 * 2 - 1
    lengths = np.linalg.norm(stored[~sky], axis=-1)
    assert np.abs(lengths - 1).max() < 0.02
    # Visible surfaces face the camera: the normal points against the pixel's viewing ray.
    towards_camera = -_camera_points(np.ones((SIZE, SIZE)))
    towards_camera /= np.linalg.norm(towards_camera, axis=-1, keepdims=True)
    facing = np.sum(_decode_normals(columns["normal"]) * towards_camera, axis=-1)
    assert facing[~sky].min() > -0.02
    norms = np.linalg.norm(columns["embed"], axis=1)
    assert columns["embed"].shape[1] == EMBED_DIM and np.allclose(norms, 1, atol=1e-5)
    # Objects are reasonably large at 32x32: the median scene has >= 40 object pixels.
    assert np.median((semseg >= 2).sum(axis=(1, 2))) >= 40
    # Every scene keeps at least one visible object, and the rgb is not flat.
    assert all(scene["objects"] for scene in scenes)
    assert columns["rgb"].std() > 20


def _camera_points(depth: np.ndarray) -> np.ndarray:
    """Back-project a depth map to camera-space points (x right, y up, z towards the camera)."""
    size = depth.shape[-1]
    tan = np.tan(np.radians(FIELD_OF_VIEW / 2))
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    v, u = np.meshgrid(-coords, coords, indexing="ij")
    return np.stack([depth * u * tan, depth * v * tan, -depth], axis=-1)


def _depth_normals(depth: np.ndarray) -> np.ndarray:
    """Normals from central differences of back-projected depth, (S-2, S-2, 3) for interior pixels."""
    points = _camera_points(depth.astype(np.float64))
    along_x = points[1:-1, 2:] - points[1:-1, :-2]
    along_up = points[:-2, 1:-1] - points[2:, 1:-1]
    normal = np.cross(along_x, along_up)
    return normal / np.linalg.norm(normal, axis=-1, keepdims=True)


def _interior(mask: np.ndarray) -> np.ndarray:
    """Interior pixels (S-2, S-2) whose 3x3 neighbourhood is entirely inside ``mask``."""
    out = np.ones(mask[1:-1, 1:-1].shape, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            out &= mask[dy:dy + mask.shape[0] - 2, dx:dx + mask.shape[1] - 2]
    return out


def test_floor_normals_agree_with_depth_gradients(world):
    """On floor pixels away from edges, stored normals match depth-derived ones within 2 degrees."""
    columns, _ = world
    angles = []
    for depth, normal, semseg in zip(columns["depth"], columns["normal"], columns["semseg"], strict=True):
        inside = _interior(semseg == 1)
        cosine = np.sum(_depth_normals(depth) * _decode_normals(normal)[1:-1, 1:-1], axis=-1)
        angles.append(np.degrees(np.arccos(np.clip(cosine[inside], -1, 1))))
    angles = np.concatenate(angles)
    assert len(angles) > 1000
    assert angles.max() < 2.0


def test_object_normals_agree_with_depth_gradients():
    """Per shape, at 64x64, the median angle between stored and depth-derived normals is small."""
    scenes = sample_scenes(24, seed=3)
    rendered = render_batch(scenes, 64)
    per_shape = {shape: [] for shape in SHAPES}
    for index in range(len(scenes)):
        derived = _depth_normals(rendered.depth[index])
        stored = _decode_normals(rendered.normal[index])[1:-1, 1:-1]
        for slot in range(MAX_OBJECTS):
            inside = _interior(rendered.instance[index] == slot + 1)
            if scenes.valid[index, slot] and inside.any():
                cosine = np.sum(derived * stored, axis=-1)[inside]
                per_shape[SHAPES[scenes.shape[index,
                                              slot]]].append(np.degrees(np.arccos(np.clip(cosine, -1, 1))))
    for shape, angles in per_shape.items():
        assert angles, f"no {shape} in the sample"
        assert np.median(np.concatenate(angles)) < 4.0, shape


def test_object_pixels_lie_in_their_tight_box():
    scenes = sample_scenes(32, seed=11)
    rendered = render_batch(scenes, SIZE)
    checked = 0
    for index in range(len(scenes)):
        for slot in range(MAX_OBJECTS):
            rows, cols = np.nonzero(rendered.instance[index] == slot + 1)
            if len(rows) == 0:
                assert rendered.pixels[index, slot] == 0
                continue
            assert scenes.valid[index, slot]
            x0, y0, x1, y1 = rendered.box[index, slot]
            assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            shape_class = scenes.shape[index, slot] + 2
            assert np.all(rendered.semseg[index][rows, cols] == shape_class)
            checked += 1
    assert checked > 40


def test_semseg_pixels_of_each_class_lie_in_that_class_boxes(world):
    columns, scenes = world
    for semseg, scene in zip(columns["semseg"], scenes, strict=True):
        covered = np.zeros(semseg.shape, dtype=bool)
        for obj in scene["objects"]:
            x0, y0, x1, y1 = obj["box"]
            inside = np.zeros(semseg.shape, dtype=bool)
            inside[y0:y1, x0:x1] = True
            covered |= inside & (semseg == SEMSEG_CLASSES.index(obj["shape"]))
        assert np.array_equal(covered, semseg >= 2)


def test_intersections_of_a_vertical_ray():
    """A ray straight down at x = 0.3 hits each shape at its analytic surface height and normal."""
    r, x = SIZE_RADIUS[1], 0.3
    radius = np.array([[r]], dtype=np.float32)
    origin = np.array([x, 10.0, 0.0], dtype=np.float32).reshape(3, 1, 1)  # channel-first (3, M, 1)
    direction = np.array([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32).T.reshape(3, 1, 2)
    sphere_height = np.sqrt(r * r - x * x)
    cone_slope = 1 / 2.2  # footprint radius per unit of height
    expected = {  # shape: (surface height at x, outward normal there)
        "sphere": (r + sphere_height, np.array([x, sphere_height, 0]) / r),
        "cube": (2 * 0.8 * r, np.array([0, 1, 0])),
        "cylinder": (1.6 * r, np.array([0, 1, 0])),
        "cone": (2.2 * r - x * 2.2, np.array([1, cone_slope, 0]) / np.hypot(1, cone_slope)),
    }
    for shape, intersect in zip(SHAPES, INTERSECTORS, strict=True):
        with np.errstate(invalid="ignore", divide="ignore"):
            t, normal = intersect(origin, direction, radius)
        height, unit_normal = expected[shape]
        assert t[0, 0] == pytest.approx(10 - height, abs=1e-4), shape
        assert np.allclose(normal[:, 0, 0], unit_normal, atol=1e-4), shape
        assert t[0, 1] == np.inf, shape  # pointing away: no hit
