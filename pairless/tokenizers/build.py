"""A tokenizer folder ``TOKDIR``: train the tokenizer of every modality in a dataset, then report.

:func:`build_tokenizers` is what ``pairless tokenizers train`` runs.

Each modality is trained on the training samples that have it (fragmented
data is normal) and published on its own as ``TOKDIR/<modality>/`` through a
staged folder, so an interrupted run resumes with the modalities still
missing. The sequence modalities share one WordPiece vocabulary
(``TOKDIR/text/``). At the end the reconstruction report (``report.json``,
``report.md``) is written on the val split when there is one, and ``TOKDIR``
itself is marked complete.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from pairless import modalities as registry
from pairless.data.dataset import BAD_SAMPLES_FILE, report_bad_samples
from pairless.data.declared import record_declared
from pairless.tokenizers import text as text_tokenizers
from pairless.tokenizers.neural_training import (
    TokenizerTrainConfig,
    build_spatial,
    build_vector,
    train_neural,
)
from pairless.utils.storage import (
    TIMINGS_FILE,
    FolderLock,
    atomic_write_json,
    config_hash,
    is_complete,
    mark_complete,
    read_json,
    reusable_output,
    staged_dir,
)


def _training_values(dataset, modality: str, limit: int | None):
    """The values of the samples that have ``modality`` (capped at ``limit``, first ones kept)."""
    values, present = dataset.column(modality)
    indices = np.flatnonzero(present)
    if limit is not None:
        indices = indices[:limit]
    if registry.get(modality).is_text:
        return [values[i] for i in indices]
    return np.asarray(values[indices])


def _modality_hash(config: TokenizerTrainConfig, modality: str, data: Path) -> str:
    """What a trained tokenizer depends on: the config (sections that matter) and the data folder."""
    kind = registry.get(modality).kind
    sections = {"image": ["spatial", "normalization"], "vector": ["vector"], "sequence": ["text"]}[kind]
    dumped = config.model_dump(mode="json")
    relevant = {key: dumped[key] for key in sections + ["seed", "bf16", "max_train_samples"]}
    relevant["steps"] = config.steps_for(modality,
                                         getattr(config, sections[0])) if kind != "sequence" else None
    return config_hash({"modality": modality, "config": relevant, "data": str(Path(data).resolve())})


def _already_done(folder: Path, expected_hash: str) -> bool:
    if not is_complete(folder):
        return False
    found = read_json(folder / "COMPLETE.json").get("config_hash")
    if found != expected_hash:
        raise FileExistsError(f"{folder}: a tokenizer trained with a different config or data is already "
                              "here "
                              f"(config hash {found}, this run {expected_hash}); use another --out or delete "
                              "it")
    return True


def train_all(data: Path, out: Path, config: TokenizerTrainConfig, modalities: list[str] | None = None,
              threads: int | None = None, on_bad_sample: str = "error",
              device: str | torch.device = "cpu") -> dict:
    """Train every requested modality's tokenizer (skipping complete ones); returns per-modality info.

    ``threads``: torch threads (None: ``config.threads``, else the current count); ``device``: where the
    neural tokenizers train. Both are recorded per modality (``threads``, ``device``).
    """
    from pairless.data import open_dataset

    dataset = open_dataset(data, "train", on_bad_sample=on_bad_sample)
    wanted = registry.check_names(modalities, field_name="--modalities") if modalities else dataset.modalities
    missing = [name for name in wanted if name not in dataset.modalities]
    if missing:
        raise ValueError(f"--modalities: {', '.join(missing)} not present in any training sample of {data}; "
                         f"present: {', '.join(dataset.modalities)}")
    if is_complete(out):
        raise FileExistsError(f"{out} is a complete tokenizer folder; train into another folder")
    out.mkdir(parents=True, exist_ok=True)
    report_bad_samples(dataset.bad_samples, "train", "pairless tokenizers", out / BAD_SAMPLES_FILE)
    info: dict[str, dict] = {}
    text_modalities = [name for name in dataset.modalities if registry.get(name).is_text]
    for modality in wanted:
        entry = registry.get(modality)
        folder = out / modality
        expected_hash = _modality_hash(config, modality, data)
        if _already_done(folder, expected_hash):
            info[modality] = {key: value for key, value in read_json(folder / "COMPLETE.json").items()
                              if key != "content_hash"}
            continue
        started = time.perf_counter()
        values = _training_values(dataset, modality, config.max_train_samples)
        record = {"config_hash": expected_hash, "num_train_samples": len(values)}
        if entry.is_text:
            vocabulary = _train_vocabulary(dataset, out, config, text_modalities, data)
            length = text_tokenizers.padded_length(vocabulary, values, config.text.length_margin)
            tokenizer = text_tokenizers.TextTokenizer(
                text_tokenizers.TextConfig(modality=modality, num_tokens=length,
                                           truncate=config.text.truncate),
                vocabulary)
            with staged_dir(folder, {**record, "train_seconds": time.perf_counter() - started}) as staging:
                tokenizer.save(staging)
        else:
            if entry.kind == "image":
                tokenizer = build_spatial(modality, values, config)
                settings = config.spatial
            else:
                tokenizer = build_vector(modality, values, config)
                settings = config.vector
            steps = config.steps_for(modality, settings)
            if len(values) < settings.batch_size:  # the loop draws what there is (train_neural)
                print(f"tokenizer {modality}: {len(values)} training samples, fewer than the batch of "
                      f"{settings.batch_size}: each step uses all {len(values)}", file=sys.stderr)
            result = train_neural(tokenizer, values, settings, steps=steps, seed=config.seed,
                                  bf16=config.bf16,
                                  description=f"tokenizer {modality}",
                                  threads=config.threads if threads is None else threads, device=device)
            record.update(train_seconds=time.perf_counter() - started, steps=steps, threads=result["threads"],
                          device=result["device"],
                          first_loss=float(np.mean(result["losses"][:10])),
                          final_loss=float(np.mean(result["losses"][-10:])))
            with staged_dir(folder, record) as staging:
                tokenizer.save(staging)
        info[modality] = record
        print(f"tokenizer {modality}: trained in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    # Written once every modality is there, so that a call refused above leaves the folder as it was.
    atomic_write_json(out / "config.json", config.model_dump(mode="json"))
    return info


def _train_vocabulary(dataset, out: Path, config: TokenizerTrainConfig, text_modalities: list[str],
                      data: Path):
    """Train (once) the WordPiece vocabulary shared by all sequence modalities present in the data."""
    folder = out / text_tokenizers.VOCABULARY_FOLDER
    expected_hash = config_hash({"text": config.text.model_dump(mode="json"), "modalities": text_modalities,
                                 "max_train_samples": config.max_train_samples,
                                 "data": str(Path(data).resolve())})
    if not _already_done(folder, expected_hash):
        texts = [text for name in text_modalities
                 for text in _training_values(dataset, name, config.max_train_samples)]
        vocabulary = text_tokenizers.train_vocabulary(texts, config.text.vocab_size)
        with staged_dir(folder, {"config_hash": expected_hash}) as staging:
            text_tokenizers.save_vocabulary(vocabulary, staging, {"modalities": text_modalities})
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def build_tokenizers(data: Path, out: Path, config: TokenizerTrainConfig, modalities: list[str] | None = None,
                     report: bool = True, threads: int | None = None,
                     on_bad_sample: str = "error", device: str | torch.device = "cpu") -> dict | None:
    """Train every modality's tokenizer into ``out``, write the reconstruction report, mark ``out`` complete.

    Returns the per-modality training info, or None when ``out`` is already complete with this very request
    (made from other data or settings, it raises FileExistsError naming the first difference).
    ``threads``: torch threads (None: ``config.threads``, else the current count); ``device``: where the
    neural tokenizers train and the report runs (results recorded in ``training.json``).
    ``on_bad_sample``: "error" stops at the first bad file, naming it; "skip" leaves bad files out (each
    sample keeps its other modalities), prints how many and lists them in ``out/bad_samples.json``.
    """
    out = Path(out)
    # What this call would make: a complete out is reused only when it was made from the same request.
    request = {"data": str(Path(data).resolve()), "modalities": sorted(modalities or []) or None,
               "config": config.model_dump(mode="json"), "report": report}
    with FolderLock(out):
        found = read_json(out / "COMPLETE.json").get("request") if is_complete(out) else None
        if reusable_output(out, request, found, what="tokenizers",
                           remedy="choose another --out or remove it"):
            return None
        started = time.perf_counter()
        if report:  # the report reads val after hours of training: a bad val file stops the call now instead
            from pairless.data import list_splits, open_dataset

            if "val" in list_splits(data):
                open_dataset(data, "val", on_bad_sample=on_bad_sample)
        info = train_all(data, out, config, modalities, threads, on_bad_sample, device)
        if report:
            from pairless.tokenizers.reconstruction import write_report

            write_report(out, data, "val", max_samples=config.report_samples,
                         threads=config.threads if threads is None else threads, on_bad_sample=on_bad_sample,
                         device=device)
        atomic_write_json(out / "training.json", {"modalities": {
            name: {key: value for key, value in record.items() if key != "train_seconds"}
            for name, record in info.items()}})
        # Wall-clock times live in timings.json, outside the content hash: the same request makes the same
        # hash.
        atomic_write_json(out / TIMINGS_FILE, {"total_seconds": time.perf_counter() - started,
                                               "modalities": {name: record.get("train_seconds")
                                                              for name, record in info.items()}})
        record_declared(info, out)  # modalities declared with the data travel with their tokenizers
        mark_complete(out, {"kind": "tokenizers", "modalities": sorted(info), "request": request})
    return info
