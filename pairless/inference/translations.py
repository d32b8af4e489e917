"""Generate with one or more trained runs, decode, score, and draw the study's grid (``pairless generate``).

For the first ``num`` held-out samples that have the source and destination
modalities, each run generates the destination from the source tokens with
one schedule; generations and the tokenized ground truth are decoded by the
tokenizers and scored with the destination's natural metrics
(:mod:`pairless.inference.decoded_metrics`, against the *decoded tokenized* ground
truth, so that tokenizer error is not charged to the model). The figure is
laid out as the study's Figures 4-9: rows are samples, columns are the
decoded tokenized input | one prediction per run | the decoded ground truth.

A pair that no sample of the split holds (never recorded together) is still
translated, from the first ``num`` samples with the source: nothing is
scored, ``metrics.json`` says why under ``_no_ground_truth``, and the
figure's last column reads "no ground truth".

Output folder (published atomically with ``COMPLETE.json``; an identical
request reuses it)::

    OUT/request.json               what was asked (runs, src, dst, schedule, seed, ...)
    OUT/metrics.json               {run: {metric: value}}
    OUT/figure.png                 the grid
    OUT/input/<src>.npy|.txt       decoded tokenized inputs
    OUT/ground_truth/<dst>.npy|.txt   (absent when no sample of the split holds both: see below)
    OUT/<run>/<dst>.npy|.txt, <dst>.tokens.npy, <dst>_<i>.png (uint8 images)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pairless.data.shards import open_shards
from pairless.inference.decoded_metrics import score
from pairless.inference.evaluate import NoSamplesError, eligible_samples, load_run_model, model_modalities
from pairless.inference.figures import draw_grid
from pairless.inference.generate import (
    GenerationSchedule,
    default_schedule,
    generate,
    generate_chain,
    schedule_preset,
)
from pairless.modalities import parse_chain
from pairless.utils.paths import find_recorded
from pairless.utils.runtime import resolve_device
from pairless.utils.storage import (
    FolderLock,
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    config_hash,
    is_complete,
    read_json,
    staged_dir,
)
from pairless.utils.tensor_files import weights_digest
from pairless.utils.threads import torch_threads


def _schedule_for(kind: str, schedule: GenerationSchedule) -> GenerationSchedule:
    """The requested schedule where its scheme fits the modality kind, else the study's default for it."""
    fits = (schedule.scheme == "ar") == (kind == "sequence")
    return schedule if fits else default_schedule(kind)


def generate_run(model, shards, rows: np.ndarray, chain: list[list[str]], schedule: GenerationSchedule,
                  seed: int, batch_size: int, label: str, threads: int | None) -> dict[str, np.ndarray]:
    """Token ids of every generated link (numpy, [num, L]) for the selected shard rows."""
    specs = {name: model.specs[name] for name in model.specs}
    model_modalities(model, shards.specs, [name for link in chain for name in link])  # same tokenizers?
    schedules = {link[0]: _schedule_for(specs[link[0]].kind, schedule) for link in chain[1:]}
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {link[0]: [] for link in chain[1:]}
    model.eval()
    with torch_threads(threads):
        for start in tqdm(range(0, len(rows), batch_size), desc=f"generate {label}", disable=None,
                          leave=False):
            chunk = rows[start : start + batch_size]
            source = {name: torch.from_numpy(np.asarray(shards.tokens[name][chunk])).long()
                      for name in chain[0]}
            generated = generate_chain(model, source, chain, specs, model.modalities, schedules, generator)
            for name, ids in generated.items():
                parts[name].append(ids)
    return {name: torch.cat(chunks).cpu().numpy() for name, chunks in parts.items()}


def _save_values(folder: Path, modality: str, values) -> None:
    if isinstance(values, list):
        atomic_write_text(folder / f"{modality}.txt",
                          "".join(text.replace("\n", " ") + "\n" for text in values))
        return
    values = np.asarray(values)
    atomic_save_npy(folder / f"{modality}.npy", values)
    if values.dtype == np.uint8 and values.ndim in (3, 4):
        from io import BytesIO

        from PIL import Image

        for index, image in enumerate(values):
            buffer = BytesIO()
            # a declared 1-channel image is (S, S, 1); PIL takes a grey image as (S, S)
            Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image).save(
                buffer, format="PNG")
            atomic_write_bytes(folder / f"{modality}_{index}.png", buffer.getvalue())


def generate_unconditional(model, count: int, dst: str, schedule: GenerationSchedule, seed: int,
                           batch_size: int, threads: int | None) -> np.ndarray:
    """``count`` generations of ``dst`` from no input (ids, numpy [count, L]): the floor a translation's
    decoded metric has to beat, as the no-input CE is the floor of its CE."""
    specs = {name: model.specs[name] for name in model.specs}
    schedule = _schedule_for(specs[dst].kind, schedule)
    generator = torch.Generator().manual_seed(seed)
    parts = []
    model.eval()
    for start in range(0, count, batch_size):
        rows = min(batch_size, count - start)
        # the samplers take the batch size from the source tokens: an empty one of the destination's shape
        placeholder = {dst: torch.zeros((rows, specs[dst].num_tokens), dtype=torch.long)}
        parts.append(generate(model, placeholder, [], dst, specs, model.modalities, schedule, generator,
                              threads=threads))
    return torch.cat(parts).numpy()


def make_decoder(tokenizers: Path):
    from pairless.tokenizers import load_tokenizer

    loaded = {}

    def decode(modality: str, ids: np.ndarray):
        if modality not in loaded:
            loaded[modality] = load_tokenizer(tokenizers, modality)
        decoded = loaded[modality].decode(torch.as_tensor(np.asarray(ids)).long())
        return list(decoded) if not isinstance(decoded, np.ndarray) else decoded

    return decode


def generate_and_score(runs: dict[str, Path], src, dst: str, schedule, num: int, tokenizers: Path,
                       shards: Path, out: Path, figure_rows: int | None = None, split: str = "val",
                       seed: int = 0, batch_size: int = 64, threads: int | None = None,
                       device: str | torch.device = "cpu", no_input: bool = False) -> dict:
    """Generate ``dst`` from ``src`` with every run, decode, score, draw; returns what the report needs.

    ``src``: a modality, ``"a+b"`` or a list; ``dst`` may be a chain
    ``"normal:depth"`` (generate normal, then depth; metrics and figure are
    for the last link). ``schedule``: a preset name or a GenerationSchedule;
    links whose kind it does not fit (e.g. text in a chain of images) use the
    study's default for their kind. ``threads``: torch threads (None: the current count); ``device``: where
    the models run (both are recorded in ``request.json``, outside its hash: a cached output is reused
    whatever they are).
    ``no_input``: also generate the destination from no input with each run and score it the same way
    (``metrics["_no_input"][run]``): what the decoded metric of a translation has to beat.
    Returns ``{"out", "figure", "metrics":
    {run: {metric: value}}, "num_samples"}``.
    """
    device = resolve_device(device)
    chain = _chain(src, dst)
    sources = chain[0]
    final = chain[-1][0]
    schedule = schedule_preset(schedule) if isinstance(schedule, str) else schedule
    runs = {name: Path(path) for name, path in runs.items()}
    out = Path(out)
    request = generation_request(runs, src, dst, schedule, num, tokenizers, shards, figure_rows, split, seed,
                                 no_input)
    if generation_cached(out, request):
        return {"out": out, "figure": out / "figure.png", "metrics": read_json(out / "metrics.json"),
                "num_samples": read_json(out / "metrics.json").get("_num_samples")}
    data = open_shards(shards, split)
    try:
        rows = eligible_samples(data, [*sources, final], num)
        no_truth = None
    except NoSamplesError as error:  # a pair never recorded together: translate it anyway, score nothing
        rows = eligible_samples(data, sources, num)
        no_truth = f"{error}: no ground truth, nothing scored"
    decode = make_decoder(Path(tokenizers))
    scenes = [data.scenes[row] for row in rows] if data.scenes else None
    inputs = {name: decode(name, data.tokens[name][rows]) for name in sources}
    truth = decode(final, data.tokens[final][rows]) if no_truth is None else None
    predictions, results, unconditional = {}, {}, {}
    for name, path in runs.items():
        model = load_run_model(path, device)
        generated = generate_run(model, data, rows, chain, schedule, seed, batch_size, name, threads)
        predictions[name] = {link: (ids, decode(link, ids)) for link, ids in generated.items()}
        results[name] = score(final, predictions[name][final][1], truth, scenes) if truth is not None else {}
        if no_input and truth is not None:
            ids = generate_unconditional(model, len(rows), final, schedule, seed, batch_size, threads)
            unconditional[name] = score(final, decode(final, ids), truth, scenes)
    metrics = {**results, "_num_samples": len(rows), **({"_no_ground_truth": no_truth} if no_truth else {}),
               **({"_no_input": unconditional} if unconditional else {})}
    with FolderLock(out), staged_dir(out, overwrite=True) as staging:
        used = {"threads": torch.get_num_threads() if threads is None else threads, "device": str(device)}
        atomic_write_json(staging / "request.json", {**request, **used})
        atomic_write_json(staging / "metrics.json", metrics)
        for name, values in inputs.items():
            _save_values(staging / "input", name, values)
        if truth is not None:
            _save_values(staging / "ground_truth", final, truth)
        for name, links in predictions.items():
            for link, (ids, values) in links.items():
                atomic_save_npy(staging / name / f"{link}.tokens.npy", ids)
                _save_values(staging / name, link, values)
        shown = min(figure_rows or num, len(rows))
        columns = [(f"input ({sources[0]}, tokenized)", sources[0], inputs[sources[0]])]
        columns += [(f"{name}", final, predictions[name][final][1]) for name in runs]
        columns += [(f"ground truth ({final}, tokenized)", final, truth) if truth is not None else
                    ("no ground truth", final, [None] * len(rows))]
        draw_grid(staging / "figure.png", columns, shown, f"{'+'.join(sources)} → {dst} ({_label(schedule)})")
    return {"out": out, "figure": out / "figure.png", "metrics": metrics, "num_samples": len(rows)}


def _chain(src, dst: str) -> list[list[str]]:
    """The generation chain of ``src`` (a modality, ``"a+b"`` or a list) to ``dst`` (a modality, or a chain
    ``"b:c"``): ``[[sources], [link], ..., [destination]]``, parsed in one place."""
    return parse_chain(f"{src if isinstance(src, str) else '+'.join(src)}:{dst}")


def generation_request(runs: dict[str, Path], src, dst: str, schedule, num: int, tokenizers: Path,
                       shards: Path, figure_rows: int | None = None, split: str = "val", seed: int = 0,
                       no_input: bool = False) -> dict:
    """What :func:`generate_and_score` computes, with its hash: the key of its cached output (the runs'
    weights included, so retrained runs generate anew; the plan asks it too, to leave cached figures out)."""
    schedule = schedule_preset(schedule) if isinstance(schedule, str) else schedule
    request = {"runs": {name: _weights_stamp(Path(path)) for name, path in runs.items()},
               "chain": _chain(src, dst), "split": split,
               "schedule": schedule.model_dump(mode="json"), "num": num, "seed": seed,
               "tokenizers": str(tokenizers), "shards": str(shards), "figure_rows": figure_rows,
               # absent when off: the requests made before the option keep their hash
               **({"no_input": True} if no_input else {})}
    request["hash"] = config_hash(request)
    return request


def generation_cached(out: Path, request: dict) -> bool:
    """Whether ``out`` holds the complete output of ``request`` (:func:`generation_request`)."""
    out = Path(out)
    return is_complete(out) and read_json(out / "request.json").get("hash") == request["hash"]


def _weights_stamp(run: Path) -> str:
    """A run's path plus a hash of its weights, so that retrained weights are not reused (and the same
    weights give the same request, whenever and by whichever process they were written)."""
    digest = weights_digest(run)
    return str(run) if digest is None else f"{run} (weights sha256 {digest})"


def _label(schedule: GenerationSchedule) -> str:
    plural = "s" if schedule.num_steps > 1 else ""
    steps = "" if schedule.scheme == "ar" else f" {schedule.num_steps} step{plural}"
    return f"{schedule.scheme.upper()}{steps}, T={schedule.temperature:g}, CFG {schedule.guidance_scale:g}"


def tokenizers_of(shards: Path) -> Path:
    """The tokenizer folder the shards were made with (their manifest records it)."""
    manifest = read_json(Path(shards) / "manifest.json")
    for key in ("tokenizers", "tokenizer_root", "tokenizer_dir"):
        if isinstance(manifest.get(key), str):
            # as recorded, or relocated beside the shards when the project was moved (pairless.utils.paths)
            found = find_recorded(manifest[key], Path(shards), "config.json")
            return found if found is not None else Path(manifest[key])
    raise ValueError(f"{shards}/manifest.json records no tokenizer folder; pass --tokenizers")
