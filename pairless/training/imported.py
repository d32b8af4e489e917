"""Run folders of models that were not trained here: an ml-4m checkpoint imported as a pairless run, and a
run exported back to an ml-4m checkpoint (``pairless import-4m`` / ``export-4m``, docs/ml4m.md).

An imported run folder is a run like any other to every command that reads one (eval, generate, probe,
add-modality, explore)::

    RUN/model.safetensors  the converted FourM (pairless.model.load_model reads it)
    RUN/config.json        {"source": "ml-4m", "checkpoint", "shards" (if given), "model": ModelConfig}
    RUN/ml4m.json          what export needs: ml-4m's config, the modality names, position-table rows
    RUN/COMPLETE.json      written last: the checkpoint's size and SHA-256, the content hash

``shards``: token shards made by the same tokenizers as the checkpoint's (ml-4m's): the commands evaluate
on them by default, as they do on a trained run's own shards.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pairless.model import load_model, save_model
from pairless.model.ml4m import Ml4mError, from_ml4m, read_checkpoint, read_mapping, to_ml4m
from pairless.utils.storage import atomic_write_json, read_json, staged_dir
from pairless.utils.tensor_files import atomic_write_safetensors

MODEL_FILE, RECORD_FILE = "model.safetensors", "ml4m.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def import_checkpoint(checkpoint: Path, out: Path, mapping_file: Path | None = None,
                      skip: tuple[str, ...] = (), shards: Path | None = None,
                      overwrite: bool = False) -> dict:
    """Convert an ml-4m checkpoint into the run folder ``out``; returns the COMPLETE.json record."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint file")
    if shards is not None and not Path(shards).is_dir():
        raise FileNotFoundError(f"--shards {shards}: no such token-shard folder")
    tensors, config = read_checkpoint(checkpoint)
    imported = from_ml4m(tensors, config, read_mapping(mapping_file), skip)
    model = imported.model
    record = {"source": "ml-4m", "checkpoint": str(checkpoint.resolve()), "bytes": checkpoint.stat().st_size,
              "sha256": _sha256(checkpoint), "modalities": dict(imported.names), "skipped": imported.skipped,
              "parameters": model.num_parameters()}
    with staged_dir(out, record, overwrite=overwrite) as folder:
        save_model(folder / MODEL_FILE, model)
        atomic_write_json(folder / "config.json", {
            "source": "ml-4m", "checkpoint": str(checkpoint.resolve()),
            "shards": str(Path(shards).resolve()) if shards is not None else None,
            "model": json.loads(model.config.model_dump_json())})
        atomic_write_json(folder / RECORD_FILE, {"config": imported.config, "modalities": imported.names,
                                                 "skipped": imported.skipped,
                                                 "position_rows": imported.position_rows})
    return record


def _import_record(folder: Path) -> dict:
    """RUN/ml4m.json of an imported run, or of the base run an added modality was trained on ({} if none)."""
    if (folder / RECORD_FILE).is_file():
        return read_json(folder / RECORD_FILE)
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    base = Path(config["base"]) if isinstance(config.get("base"), str) else None
    if base is not None:
        base = base if base.is_dir() else base.parent
        if (base / RECORD_FILE).is_file():
            return read_json(base / RECORD_FILE)
    return {}


def export_run(run: Path, out: Path, mapping_file: Path | None = None) -> dict:
    """Write the ml-4m checkpoint of a run (its model.safetensors) to ``out``; returns a summary."""
    run = Path(run)
    weights = run / MODEL_FILE if run.is_dir() else run
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no model weights (a run folder holds model.safetensors)")
    model = load_model(weights)
    record = _import_record(weights.parent)
    names = {name: ml4m for name, ml4m in (record.get("modalities") or {}).items() if name in model.specs}
    tensors, metadata = to_ml4m(model, names, record.get("config"), read_mapping(mapping_file),
                                record.get("position_rows"))
    out = Path(out)
    if out.is_dir():
        raise Ml4mError(f"--out {out}: is a folder; give the checkpoint file to write "
                        "(e.g. model.safetensors)")
    atomic_write_safetensors(out, tensors, metadata)  # tensor by tensor, header sorted (as train saves)
    return {"tensors": len(tensors), "modalities": [names.get(name) or name for name in model.modalities],
            "bytes": out.stat().st_size}
