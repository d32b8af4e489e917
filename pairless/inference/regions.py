"""How much of an image modality is predictable: the translation CE on object tokens and on background.

An rgb token of the procedural world's checkered floor or sky says nothing about depth or normals, so a
translation *into* rgb can at best predict its object tokens; the mean CE over all tokens mixes the two.
:func:`region_ce` splits it: each destination token is an *object* token when any pixel of its patch
belongs to an object class of ``semseg`` (every class but ``sky`` and ``floor``), else *background*, and
the conditional and no-input CE are averaged over each group separately. The object mask comes from the
sample's own semseg tokens decoded by the semseg tokenizer (the shards hold tokens only; its mIoU ceiling
is the mask's accuracy), so the measure needs semseg in the shards and its tokenizer, and works for any
image destination whose tokens tile the image in a square grid (row-major, as the spatial tokenizers
write them).

``pairless eval RUN --directions depth:rgb --regions`` prints it; the runner records it for every
direction into an image modality (``regions`` in results.json) and the report shows the ratios.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pairless.data.shards import open_shards
from pairless.inference.evaluate import (
    eligible_samples,
    load_run_model,
    model_modalities,
    run_shards_path,
    scoring_specs,
    token_nll,
)
from pairless.inference.generate import model_device, precision
from pairless.inference.translation_batch import content_mask
from pairless.inference.translations import tokenizers_of
from pairless.modalities import SEMSEG_CLASSES, Direction
from pairless.tokenizers import load_tokenizer
from pairless.utils.threads import torch_threads

MASK_MODALITY = "semseg"
BACKGROUND_CLASSES = ("sky", "floor")


def object_patches(classes: np.ndarray, side: int) -> np.ndarray:
    """(B, side*side) bool: patches of a (B, S, S) class map holding any object pixel (row-major)."""
    if classes.ndim != 3 or classes.shape[1] != classes.shape[2] or classes.shape[1] % side:
        raise ValueError(f"object_patches: class maps must be (B, S, S) with S divisible by {side}, got "
                         f"{list(classes.shape)}")
    background = [SEMSEG_CLASSES.index(name) for name in BACKGROUND_CLASSES]
    is_object = ~np.isin(classes, background)
    patch = classes.shape[1] // side
    grid = is_object.reshape(len(classes), side, patch, side, patch).any(axis=(2, 4))
    return grid.reshape(len(classes), side * side)


def _grid_side(num_tokens: int, modality: str) -> int:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{modality}: region CE needs an image modality whose tokens form a square grid; "
                         f"it has {num_tokens} tokens")
    return side


class ObjectSplit:
    """Image destination tokens: ``objects`` (the patch holds an object pixel of the sample's decoded
    semseg) and ``background``."""

    groups = ("objects", "background")

    def __init__(self, semseg_tokenizer, dst_spec):
        self.tokenizer, self.side = semseg_tokenizer, _grid_side(dst_spec.num_tokens, dst_spec.name)
        self.needs = [MASK_MODALITY]

    def __call__(self, shards, rows, dst_tokens: torch.Tensor) -> torch.Tensor:
        classes = self.tokenizer.decode(np.asarray(shards.tokens[MASK_MODALITY][rows]))
        return torch.from_numpy(object_patches(np.asarray(classes), self.side))


class ContentWordSplit:
    """Caption tokens: ``content`` (the world's colour, shape, size and number words: what an image can
    tell) and ``template`` (every other real token, EOS included; padding is not scored)."""

    groups = ("content", "template")

    def __init__(self, text_tokenizer):
        from pairless.world.captions import NUMBER_WORDS, SHAPE_SYNONYMS, SIZE_SYNONYMS
        from pairless.world.scenes import COLOUR_NAMES

        words = set(COLOUR_NAMES) | set(NUMBER_WORDS) | {w for ws in SHAPE_SYNONYMS.values() for w in ws}
        words |= {w for ws in SIZE_SYNONYMS.values() for w in ws}
        vocabulary = text_tokenizer.tokenizer.get_vocab()
        # whole words carry the word-start marker "▁" (continuation pieces "##" are not words)
        ids = sorted(index for token, index in vocabulary.items() if token.removeprefix("▁") in words)
        self.content_ids = torch.tensor(ids, dtype=torch.long)
        self.needs = []

    def __call__(self, shards, rows, dst_tokens: torch.Tensor) -> torch.Tensor:
        return torch.isin(dst_tokens, self.content_ids)


def region_ce(model, shards, split, src: list[str], dst: str, num_samples: int = 2500,
              batch_size: int = 64, threads: int | None = None) -> dict:
    """Conditional and no-input CE of ``dst`` given ``src`` over two groups of destination tokens.

    ``split``: an :class:`ObjectSplit` (image destinations) or :class:`ContentWordSplit` (captions), or a
    semseg tokenizer (an ObjectSplit is made from it). Returns ``{"groups": [focus, rest], focus: {ce,
    ce_unconditional, ratio, num_tokens}, rest: {...}, "focus_fraction", "num_samples"}``.
    """
    specs = scoring_specs(model, shards.specs)
    if not isinstance(split, ObjectSplit | ContentWordSplit):
        if MASK_MODALITY not in specs:
            raise ValueError(f"region CE needs {MASK_MODALITY!r} tokens for its object mask; the shards "
                             f"hold {', '.join(specs)}")
        if specs[dst].kind != "image":
            raise ValueError(f"region CE: destination {dst!r} is a {specs[dst].kind} modality, not an "
                             "image")
        split = ObjectSplit(split, specs[dst])
    focus, rest = split.groups
    modalities = model_modalities(model, specs, [*src, dst])
    indices = eligible_samples(shards, sorted({*src, dst, *split.needs}), num_samples)
    sums = {group: {"ce": 0.0, "ce_unconditional": 0.0, "num_tokens": 0} for group in split.groups}
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.inference_mode(), precision(model_device(model)), torch_threads(threads):
            chunks, label = range(0, len(indices), batch_size), Direction(tuple(src), dst)
            for start in tqdm(chunks, desc=f"regions {label}", disable=None, leave=False):
                rows = indices[start : start + batch_size]
                tokens = {name: torch.from_numpy(np.asarray(shards.tokens[name][rows])).long()
                          for name in {*src, dst}}
                in_focus = split(shards, rows, tokens[dst])
                scored = content_mask(tokens[dst], specs[dst])
                conditional = token_nll(model, tokens, src, dst, specs, modalities)
                unconditional = token_nll(model, tokens, [], dst, specs, modalities)
                for group, mask in ((focus, in_focus & scored), (rest, ~in_focus & scored)):
                    sums[group]["ce"] += float(conditional[mask].sum())
                    sums[group]["ce_unconditional"] += float(unconditional[mask].sum())
                    sums[group]["num_tokens"] += int(mask.sum())
    finally:
        model.train(was_training)
    out: dict = {"num_samples": len(indices), "groups": [focus, rest]}
    total = sum(group["num_tokens"] for group in sums.values())
    out["focus_fraction"] = sums[focus]["num_tokens"] / total if total else 0.0
    for group, values in sums.items():
        count = values["num_tokens"]
        if count == 0:
            out[group] = {"num_tokens": 0}
            continue
        ce, ce_unconditional = values["ce"] / count, values["ce_unconditional"] / count
        out[group] = {"ce": ce, "ce_unconditional": ce_unconditional, "num_tokens": count,
                      "ratio": ce / ce_unconditional if ce_unconditional > 0 else float("nan")}
    return out


CAPTION = "caption"


def region_directions(directions: list[str], specs) -> list[str]:
    """The directions a split applies to: an image destination with semseg in the shards, or the world's
    caption."""
    out = []
    for direction in directions:
        destination = Direction.parse(direction).destination
        if destination not in specs:
            continue
        if (specs[destination].kind == "image" and MASK_MODALITY in specs) or destination == CAPTION:
            out.append(direction)
    return out


def evaluate_regions(run: Path, directions: list[str], tokenizers: Path | None = None,
                     num_samples: int = 2500, batch_size: int = 64, split: str = "val",
                     shards_path: Path | None = None,
                     threads: int | None = None, device: str | torch.device = "cpu") -> dict[str, dict]:
    """:func:`region_ce` of a trained run for each applicable direction; {direction: result}.

    ``tokenizers``: the tokenizer folder (default: the one the shards were made with); ``device``: where the
    model runs.
    """
    run = Path(run)
    shards_path = Path(shards_path or run_shards_path(run))
    shards = open_shards(shards_path, split)
    wanted = region_directions(directions, shards.specs)
    if not wanted:
        return {}
    model = load_run_model(run, device)
    root = tokenizers or tokenizers_of(shards_path)
    results = {}
    for text in wanted:
        direction = Direction.parse(text)
        src, dst = list(direction.sources), direction.destination
        if dst == CAPTION:
            splitter = ContentWordSplit(load_tokenizer(root, CAPTION))
        else:
            splitter = ObjectSplit(load_tokenizer(root, MASK_MODALITY), shards.specs[dst])
        results[str(direction)] = {**region_ce(model, shards, splitter, src, dst, num_samples, batch_size,
                                               threads), "split": split}
    return results


def format_regions(results: dict[str, dict]) -> str:
    """A plain-text table: per direction, the CE ratio (conditional / no input) on the two token groups."""
    def cell(group: dict, key: str, width: int, digits: int) -> str:
        return f"{group.get(key, float('nan')):>{width}.{digits}f}"

    header = ["focus".ljust(10), "CE".rjust(8), "ratio".rjust(6), "rest".ljust(10), "CE".rjust(8),
              "ratio".rjust(6), "focus share"]
    lines = [f"{'direction':<24} " + " ".join(header)]
    for direction, row in results.items():
        focus, rest = row["groups"]
        focus_cells = f"{cell(row[focus], 'ce', 8, 3)} {cell(row[focus], 'ratio', 6, 2)}"
        rest_cells = f"{cell(row[rest], 'ce', 8, 3)} {cell(row[rest], 'ratio', 6, 2)}"
        lines.append(f"{direction:<24} {focus:<10} {focus_cells} {rest:<10} {rest_cells} "
                     f"{row['focus_fraction']:>11.2f}")
    return "\n".join(lines)
