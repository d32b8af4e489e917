"""Outside models in a recipe's report: ``pairless run RECIPE --reference NAME=RUN``.

The study's Table I has a column for the released 4M-L, a model trained elsewhere, scored on the same
held-out samples. A reference is any run folder (an imported ml-4m checkpoint, a run trained in another
results root): it is evaluated on the recipe's shards, for the recipe's directions, and printed as a column
of its own, labelled as an outside model. Its cross-entropies mean something only over the same tokens, so
its tokenizers must be the recipe's: for every modality of the directions the reference's tokenizer folder
(recorded by the shards it was trained on) must hold the same tokenizer (same content hash), or the run is
refused naming the modality.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pairless.inference.evaluate import evaluate_directions, load_run_model, run_shards_path
from pairless.inference.translations import tokenizers_of
from pairless.modalities import parse_direction
from pairless.utils.storage import read_json


def parse_reference(text: str) -> tuple[str, Path]:
    """``"4M-L=runs/4m-l"`` -> ("4M-L", Path("runs/4m-l"))."""
    name, separator, path = text.partition("=")
    if not separator or not name.strip() or not path.strip():
        raise ValueError(f"--reference {text!r}: expected NAME=RUN, e.g. 4M-L=runs/4m-l")
    return name.strip(), Path(path.strip())


def _tokenizer_hash(folder: Path, modality: str) -> str | None:
    marker = Path(folder) / modality / "COMPLETE.json"
    return read_json(marker).get("content_hash") if marker.is_file() else None


def check_tokenizers(name: str, run: Path, tokenizers: Path, modalities: list[str]) -> None:
    """Raise ValueError naming the first modality whose tokenizer differs from the recipe's."""
    try:
        theirs = tokenizers_of(run_shards_path(run))
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"--reference {name}={run}: its tokenizers are unknown ({error}); a reference must "
                         "be tokenized with the recipe's tokenizers") from error
    for modality in modalities:
        ours, found = _tokenizer_hash(tokenizers, modality), _tokenizer_hash(theirs, modality)
        if ours is None or ours != found:
            raise ValueError(f"--reference {name}={run}: modality {modality!r} was tokenized with another "
                             f"tokenizer ({theirs / modality}) than the recipe's "
                             f"({Path(tokenizers) / modality}); its cross-entropies would not be comparable")


def _involved(direction: str) -> set[str]:
    sources, destination = parse_direction(direction)
    return {*sources, destination}


def reference_directions(references: dict[str, Path], directions: list[str],
                         tokenizers: Path) -> dict[str, list[str]]:
    """{name: the directions its model knows (others are left out, not refused)}, after checking that every
    modality of those directions has the recipe's tokenizer (before anything is trained)."""
    chosen = {}
    for name, run in references.items():
        known = set(load_run_model(run).specs)
        chosen[name] = [direction for direction in directions if _involved(direction) <= known]
        check_tokenizers(name, run, tokenizers, sorted(set().union(*map(_involved, chosen[name]))))
    return chosen


def evaluate_references(references: dict[str, Path], chosen: dict[str, list[str]], shards: Path,
                        num_samples: int, batch_size: int, threads: int | None = None,
                        device: str | torch.device = "cpu") -> dict[str, dict]:
    """{name: {"path", "outside": True, "evals": {direction: result}}}."""
    results = {}
    for name, run in references.items():
        evals = evaluate_directions(run, chosen[name], num_samples, batch_size, shards_path=shards,
                                    threads=threads, device=device) if chosen[name] else {}
        results[name] = {"path": str(run), "outside": True, "evals": evals}
    return results
