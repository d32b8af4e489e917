"""The world's text and vector modalities: det text, captions and their scoring, the embed expert."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairless.world import det_to_text, fact_accuracy, parse_caption, parse_det_text, render_world
from pairless.world.captions import make_caption
from pairless.world.embed import embed_scenes
from pairless.world.scenes import COLOUR_NAMES, sample_scenes

SIZE = 32


@pytest.fixture(scope="module")
def world():
    return render_world(160, SIZE, seed=21, batch_size=64, progress=False)


def test_det_text_round_trips_to_the_scene_boxes(world):
    columns, scenes = world
    for text, scene in zip(columns["det"], scenes, strict=True):
        expected = sorted((obj["shape"], tuple(obj["box"])) for obj in scene["objects"])
        assert sorted(parse_det_text(text, SIZE)) == expected
        assert det_to_text(parse_det_text(text, SIZE), SIZE) == text
        assert re.fullmatch(r"(v0 \d+ v1 \d+ v2 \d+ v3 \d+ [a-z]+)( v0 \d+ v1 \d+ v2 \d+ v3 \d+ [a-z]+)*",
                            text)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(8, 63), data=st.data())
def test_any_pixel_boxes_round_trip_through_det_text(size, data):
    """For sizes up to 63 the 64 bins are finer than a pixel, so integer boxes come back exactly."""
    coordinate = st.integers(0, size)
    boxes = data.draw(st.lists(st.tuples(st.sampled_from(["sphere", "cube", "cylinder", "cone"]),
                                         st.tuples(coordinate, coordinate, coordinate,
                                                   coordinate)), max_size=5))
    parsed = parse_det_text(det_to_text(boxes, size), size)
    assert sorted(parsed) == sorted(boxes)


def test_det_parser_is_tolerant_of_broken_text():
    assert parse_det_text("", SIZE) == []
    assert parse_det_text("a red ball . v0 v1", SIZE) == []
    text = ("v0=0 v1=63 v2=31, v3=63 cone v0 1 v1 2 cube v0 63 v1 0 v2 63 v3 0 sphere "
            "v0 70 v1 0 v2 1 v3 1 cube")
    # The second object lacks coordinates, the last has a bin out of range: both are skipped.
    assert parse_det_text(text, SIZE) == [("cone", (0, 32, 16, 32)), ("sphere", (32, 0, 32, 0))]
    with pytest.raises(ValueError, match="4 coordinates"):
        det_to_text([("cube", (1, 2, 3))], SIZE)


def test_captions_are_clean_lowercase_text(world):
    columns, _ = world
    for caption in columns["caption"]:
        assert re.fullmatch(r"[a-z]+(,? [a-z]+)*\.( [a-z]+(,? [a-z]+)*\.)*", caption), caption
    assert len(set(columns["caption"])) == len(columns["caption"])  # wording varies


def test_every_caption_is_true_of_its_scene(world):
    columns, scenes = world
    relations = 0
    for caption, scene in zip(columns["caption"], scenes, strict=True):
        facts = parse_caption(caption)
        assert fact_accuracy(caption, scene) == 1.0, caption
        # The list sentence names every object once: shapes, colours and sizes all stated.
        listed = [fact for fact in facts if fact.kind == "object"]
        assert sum(fact.count for fact in listed) == len(scene["objects"]), caption
        assert all(fact.subject.colour and fact.subject.size for fact in listed)
        assert sorted((f.subject.shape, f.subject.colour) for f in listed for _ in range(f.count)) == sorted(
            (obj["shape"], obj["colour"]) for obj in scene["objects"])
        counts = [fact.count for fact in facts if fact.kind == "count"]
        assert counts == [len(scene["objects"])]
        relations += sum(fact.kind == "relation" for fact in facts)
    assert relations >= 20


def _corrupt_colour(caption: str, scene: dict) -> str:
    present = {obj["colour"] for obj in scene["objects"]}
    absent = next(colour for colour in COLOUR_NAMES if colour not in present)
    return re.sub(r"\b(" + "|".join(present) + r")\b", absent, caption, count=1)


def test_fact_accuracy_drops_for_corrupted_captions(world):
    columns, scenes = world
    swaps = {"left": "right", "right": "left", "behind": "in front of", "in front of": "behind"}
    relation_checked = 0
    for caption, scene in list(zip(columns["caption"], scenes, strict=True))[:60]:
        assert fact_accuracy(_corrupt_colour(caption, scene), scene) < 1.0
        total = len(scene["objects"])
        numbers = ("one", "two", "three", "four", "five")
        wrong_count = re.sub(rf"\b{numbers[total - 1]} (object|thing)", rf"{numbers[total]} \1", caption)
        assert fact_accuracy(wrong_count, scene) < 1.0
        match = re.search(r" is (?:to the )?(left|right|behind|in front of)\b", caption)
        if match:
            flipped = caption[: match.start(1)] + swaps[match.group(1)] + caption[match.end(1):]
            assert fact_accuracy(flipped, scene) < 1.0, flipped
            relation_checked += 1
    assert relation_checked >= 5
    assert fact_accuracy("hello world, nothing to see.", scenes[0]) == 0.0
    assert fact_accuracy("", scenes[0]) == 0.0


def test_caption_wording_depends_only_on_the_seed(world):
    _, scenes = world
    assert make_caption(scenes[0], 5) == make_caption(scenes[0], 5)
    assert len({make_caption(scenes[0], seed) for seed in range(20)}) > 5


def test_embed_carries_colour_ignores_slot_order_and_describes_visible_objects():
    scenes = sample_scenes(8, seed=2)
    visible = scenes.valid
    base = embed_scenes(scenes.shape, scenes.colour, scenes.size, visible)
    recoloured = scenes.colour.copy()
    recoloured[:, 0] = (recoloured[:, 0] + 1) % len(COLOUR_NAMES)
    changed = embed_scenes(scenes.shape, recoloured, scenes.size, visible)
    assert np.linalg.norm(base - changed, axis=1).min() > 0.05
    # The same objects listed in another slot order give the same vector.
    order = np.array([3, 2, 1, 0])
    permuted = embed_scenes(scenes.shape[:, order], scenes.colour[:, order], scenes.size[:, order],
                            visible[:, order])
    np.testing.assert_allclose(permuted, base, atol=1e-6)
    # Rendered: the embed is the expert applied to exactly the objects that are visible.
    columns, dicts = render_world(8, SIZE, seed=2, progress=False)
    again = embed_scenes(scenes.shape, scenes.colour, scenes.size, visible & _visible_in(dicts, scenes))
    np.testing.assert_allclose(columns["embed"], again, atol=1e-6)


def _visible_in(dicts: list[dict], scenes) -> np.ndarray:
    """Which slots of ``scenes`` appear in the rendered scene dicts (matched by footprint position)."""
    out = np.zeros(scenes.valid.shape, dtype=bool)
    for index, scene in enumerate(dicts):
        for obj in scene["objects"]:
            distance = np.hypot(scenes.position[index, :, 0] - obj["position"][0],
                                scenes.position[index, :, 1] - obj["position"][2])
            out[index, int(distance.argmin())] = True
    return out


def test_fact_accuracy_is_the_fraction_of_true_claims():
    scene = {"image_size": 32, "objects": [
        {"shape": "sphere", "colour": "red", "size": "large", "screen_center": [8.0, 16.0],
         "center_depth": 6.0},
        {"shape": "cube", "colour": "blue", "size": "small", "screen_center": [24.0, 16.0],
         "center_depth": 7.5},
    ]}
    true = ("there are two objects. a large red ball and a little blue block. "
            "the red sphere is left of the blue cube.")
    assert [fact.kind for fact in parse_caption(true)] == ["count", "object", "object", "relation"]
    assert fact_accuracy(true, scene) == 1.0
    # A green cube does not exist: its list claim and the relation that names it fail (2 of 4).
    assert fact_accuracy(true.replace("blue", "green"), scene) == 0.5
    assert fact_accuracy(true.replace("two objects", "three objects"), scene) == 0.75
    assert fact_accuracy("the blue cube is behind the red sphere.", scene) == 1.0
    assert fact_accuracy("the blue cube is in front of the red sphere.", scene) == 0.0
    assert fact_accuracy("two spheres.", scene) == 0.0  # a bare plural claims at least two


def test_attribute_accuracy_tells_captions_of_their_own_scene_from_mismatched_ones(world):
    from pairless.inference.decoded_metrics import caption_metrics
    from pairless.world.captions import attribute_accuracy

    columns, scenes = world
    captions = list(columns["caption"])
    own = attribute_accuracy(captions, scenes)
    assert own["colour_claims_true"] == own["shape_claims_true"] == own["count_claims_true"] == 1.0
    assert own["colour_claims_true_mismatched"] < 0.8
    assert own["count_claims_true_mismatched"] < 0.6
    # a caption that names a colour no object has is a false colour claim, on any scene
    absent = [_corrupt_colour(caption, scene) for caption, scene in zip(captions, scenes, strict=True)]
    assert attribute_accuracy(absent, scenes)["colour_claims_true"] < 1.0
    scored = caption_metrics(captions, captions, scenes)
    assert scored["fact_accuracy"] == 1.0 and scored["colour_claims_true"] == 1.0
    assert attribute_accuracy(captions[:1], scenes[:1]) == {}
