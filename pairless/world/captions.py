"""Captions of world scenes: a small grammar with synonyms, its parser, and fact accuracy for scoring.

Grammar (lowercase ascii words, single spaces, "." ends a sentence, "," separates list items):

- count sentence, e.g. ``there are three objects.`` / ``the scene has one thing.`` /
  ``two objects on a checkered floor.`` / ``a picture of four objects.``
- list sentence naming every object once, identical (size, colour, shape)
  objects grouped: ``[there is|there are|i see|it shows|we see] a large red sphere,
  two small blue cubes and a big green cone.``
- 0-2 relation sentences: ``the red sphere is [left of|to the left of|right of|to the
  right of|behind|in front of] the small green cone.`` The reference names colour and
  shape, plus the size when needed to single the object out; pairs are only
  related when the relation is clear (centres at least ``LEFT_RIGHT_MARGIN`` of the
  image width apart, or ``DEPTH_MARGIN`` world units apart along the view axis).

Synonyms: sphere|ball, cube|block, large|big, small|little, objects|things.
"left"/"right" are as seen in the image; "behind" means farther from the camera.
Every caption is true of its scene by construction; :func:`fact_accuracy`
parses any text back into claims and returns the fraction that hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pairless.world.scenes import COLOUR_NAMES

LEFT_RIGHT_MARGIN = 0.12  # fraction of the image width between the two centres
DEPTH_MARGIN = 0.8  # world units between the two centres along the view axis

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SHAPE_SYNONYMS = {"sphere": ("sphere", "ball"), "cube": ("cube", "block"),
                  "cylinder": ("cylinder",), "cone": ("cone",)}
SIZE_SYNONYMS = {"small": ("small", "little"), "large": ("large", "big")}
OBJECT_NOUNS = ("objects", "things")
RELATIONS = {"left": ("left of", "to the left of"), "right": ("right of", "to the right of"),
             "behind": ("behind",), "front": ("in front of",)}
COUNT_TEMPLATES = ("there {be} {n} {noun}.", "the scene has {n} {noun}.",
                   "{n} {noun} on a checkered floor.", "a picture of {n} {noun}.")
LIST_OPENERS = ("there {be}", "i see", "it shows", "we see")

_SHAPE_OF_WORD = {word: shape for shape, words in SHAPE_SYNONYMS.items() for word in words}
_SHAPE_OF_WORD.update({word + "s": shape for word, shape in list(_SHAPE_OF_WORD.items())})
_SIZE_OF_WORD = {word: size for size, words in SIZE_SYNONYMS.items() for word in words}
_COUNT_OF_WORD = {word: index for index, word in enumerate(NUMBER_WORDS)} | {"a": 1, "an": 1}
_RELATION_PATTERN = re.compile(r"\b(?:to the )?(left of|right of)\b|\b(behind)\b|\b(in front of)\b")


@dataclass(frozen=True)
class Description:
    """A noun phrase: shape (required), colour and size when stated."""

    shape: str
    colour: str | None = None
    size: str | None = None

    def matches(self, obj: dict) -> bool:
        return (obj["shape"] == self.shape and self.colour in (None, obj["colour"])
                and self.size in (None, obj["size"]))


@dataclass(frozen=True)
class Fact:
    """One claim of a caption: ``kind`` is "count", "object" or "relation"."""

    kind: str
    count: int = 0  # count: total objects; object: at least this many match ``subject``
    subject: Description | None = None
    relation: str | None = None  # left | right | behind | front
    other: Description | None = None

    def holds(self, scene: dict) -> bool:
        objects = scene["objects"]
        if self.kind == "count":
            return len(objects) == self.count
        if self.kind == "object":
            return sum(self.subject.matches(obj) for obj in objects) >= self.count
        return any(self.subject.matches(a) and self.other.matches(b)
                   and _related(a, b, self.relation, 0.0, 0.0)
                   for i, a in enumerate(objects) for j, b in enumerate(objects) if i != j)


def _related(a: dict, b: dict, relation: str, column_margin: float, depth_margin: float) -> bool:
    """Whether object ``a`` is <relation> object ``b`` by at least the margins."""
    if relation == "left":
        return b["screen_center"][0] - a["screen_center"][0] > column_margin
    if relation == "right":
        return a["screen_center"][0] - b["screen_center"][0] > column_margin
    if relation == "behind":
        return a["center_depth"] - b["center_depth"] > depth_margin
    return b["center_depth"] - a["center_depth"] > depth_margin


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(rng, count: int, size: str, colour: str, shape: str) -> str:
    size_word = _pick(rng, SIZE_SYNONYMS[size])
    shape_word = _pick(rng, SHAPE_SYNONYMS[shape]) + ("s" if count > 1 else "")
    quantity = _article(size_word) if count == 1 else NUMBER_WORDS[count]
    return f"{quantity} {size_word} {colour} {shape_word}"


def _reference(rng, obj: dict, objects: list[dict]) -> str | None:
    """'the [size] colour shape' naming ``obj`` uniquely in ``objects``, or None if impossible."""
    for with_size in (False, True):
        description = Description(obj["shape"], obj["colour"], obj["size"] if with_size else None)
        if sum(description.matches(other) for other in objects) == 1:
            size_word = _pick(rng, SIZE_SYNONYMS[obj["size"]]) + " " if with_size else ""
            return f"the {size_word}{obj['colour']} {_pick(rng, SHAPE_SYNONYMS[obj['shape']])}"
    return None


def make_caption(scene: dict, seed: int) -> str:
    """A caption that is true of ``scene`` (a world scene dict), its wording drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    objects = scene["objects"]
    total = len(objects)
    count_sentence = _pick(rng, COUNT_TEMPLATES).format(
        be="is" if total == 1 else "are", n=NUMBER_WORDS[total],
        noun=_pick(rng, OBJECT_NOUNS)[:-1] if total == 1 else _pick(rng, OBJECT_NOUNS))
    groups: dict[tuple[str, str, str], int] = {}
    for obj in objects:
        key = (obj["size"], obj["colour"], obj["shape"])
        groups[key] = groups.get(key, 0) + 1
    keys = list(groups)
    phrases = [_noun_phrase(rng, groups[keys[i]], *keys[i]) for i in rng.permutation(len(keys))]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    plural = len(phrases) > 1 or groups[keys[0]] > 1
    opener = _pick(rng, LIST_OPENERS).format(be="are" if plural else "is")
    sentences = [count_sentence, f"{opener} {listed}." if total else ""]
    if total and rng.random() < 0.5:
        sentences.reverse()

    margin = LEFT_RIGHT_MARGIN * scene["image_size"]
    candidates = [(i, j, relation) for i in range(total) for j in range(total) if i != j
                  for relation in RELATIONS if _related(objects[i], objects[j], relation, margin,
                                                        DEPTH_MARGIN)]
    for index in rng.permutation(len(candidates))[: int(rng.integers(0, 3))]:
        i, j, relation = candidates[index]
        first, second = _reference(rng, objects[i], objects), _reference(rng, objects[j], objects)
        if first and second:
            sentences.append(f"{first} is {_pick(rng, RELATIONS[relation])} {second}.")
    return " ".join(sentence for sentence in sentences if sentence)


def _describe(words: list[str]) -> tuple[int | None, Description] | None:
    """Parse the noun phrase ending ``words`` (count? size? colour? shape) or None."""
    if not words or words[-1] not in _SHAPE_OF_WORD:
        return None
    shape_word = words[-1]
    colour = size = count = None
    for word in reversed(words[:-1]):
        if word in COLOUR_NAMES and colour is None and size is None:
            colour = word
        elif word in _SIZE_OF_WORD and size is None:
            size = _SIZE_OF_WORD[word]
        elif word in _COUNT_OF_WORD:
            count = _COUNT_OF_WORD[word]
            break
        else:
            break
    if count is None and shape_word.endswith("s") and shape_word[:-1] in _SHAPE_OF_WORD:
        count = 2  # a bare plural claims at least two
    return count, Description(_SHAPE_OF_WORD[shape_word], colour, size)


def parse_caption(text: str) -> list[Fact]:
    """The claims of a caption, in order: counts, objects (with attributes) and relations.

    Unknown words are ignored, so generated text with errors still yields the
    claims it does make; text with no recognisable claim gives [].
    """
    facts = []
    for sentence in re.split(r"[.!?]", text.lower()):
        sentence = " ".join(re.findall(r"[a-z]+|,", sentence))
        match = _RELATION_PATTERN.search(sentence)
        if match:
            relation = {"left of": "left", "right of": "right", "behind": "behind", "in front of": "front"}[
                next(group for group in match.groups() if group)]
            left = _describe(sentence[: match.start()].replace(" is ", " ").split())
            right = _describe(sentence[match.end():].split())
            if left and right:
                facts.append(Fact("relation", subject=left[1], relation=relation, other=right[1]))
            continue
        words = sentence.split()
        for index, word in enumerate(words):
            if word in _SHAPE_OF_WORD:
                parsed = _describe(words[: index + 1])
                facts.append(Fact("object", count=parsed[0] or 1, subject=parsed[1]))
            elif word in OBJECT_NOUNS + tuple(noun[:-1] for noun in OBJECT_NOUNS) and index > 0 \
                    and words[index - 1] in NUMBER_WORDS:
                facts.append(Fact("count", count=NUMBER_WORDS.index(words[index - 1])))
    return facts


def fact_accuracy(text: str, scene: dict) -> float:
    """Fraction of the claims of ``text`` that are true of ``scene``; 0.0 when it makes no claim."""
    facts = parse_caption(text)
    if not facts:
        return 0.0
    return sum(fact.holds(scene) for fact in facts) / len(facts)


def attribute_accuracy(texts: list[str], scenes: list[dict]) -> dict[str, float]:
    """Which parts of the captions come from their scenes: the fraction of claimed object colours present
    in the scene, of claimed shapes present, and of count claims right; each also against a mismatched
    scene (every caption scored on the next sample's scene), the level a caption that ignores its image
    reaches. A kind no caption claims is left out."""
    if len(texts) < 2:
        return {}
    claims = [parse_caption(text) for text in texts]  # parsed once, scored on both pairings
    out = {}
    for suffix, paired in (("", list(scenes)), ("_mismatched", [*scenes[1:], scenes[0]])):
        found: dict[str, list[bool]] = {"colour": [], "shape": [], "count": []}
        for facts, scene in zip(claims, paired, strict=True):
            objects = scene["objects"]
            for fact in facts:
                if fact.kind == "count":
                    found["count"].append(fact.holds(scene))
                elif fact.kind == "object":
                    found["shape"].append(any(obj["shape"] == fact.subject.shape for obj in objects))
                    if fact.subject.colour is not None:
                        found["colour"].append(any(obj["colour"] == fact.subject.colour for obj in objects))
        out.update({f"{kind}_claims_true{suffix}": float(np.mean(hits))
                    for kind, hits in found.items() if hits})
    return out
