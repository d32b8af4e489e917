"""What a training run starts from: its data in the order it is read (``data_order``), and the weights of
another run (``init_from``). Used by :mod:`pairless.training.train`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairless import model as model_module
from pairless.config import ConfigError
from pairless.data.streamed_shards import is_streamed
from pairless.training.checkpoint import MODEL_FILE
from pairless.training.data import SampleOrder, load_training_data
from pairless.training.order import ShardOrder, shard_members
from pairless.training.streamed_data import load_streamed_training_data


def training_data(config):
    """The training data (packed or streamed shards) and the order of its samples (``data_order``)."""
    streamed = is_streamed(config.shards)
    if streamed:
        data = load_streamed_training_data(config.shards, config.split, config.fragment)
    else:
        data = load_training_data(config.shards, config.split, config.fragment)
    if config.batch_size > len(data):
        # every step draws a full batch of distinct samples; a small folder needs a smaller batch
        raise ConfigError(f"batch_size: {config.batch_size} is larger than the {len(data)} training samples "
                          f"in {Path(config.shards) / config.split}: set --batch-size {len(data)} or less "
                          f"(--set batch_size={len(data)}), or add samples")
    if config.data_order == "global":
        if streamed:
            raise ConfigError(f"data_order: {config.shards} holds streamed (webdataset) shards, which are "
                              "read shard by shard; set data_order=shards")
        return data, SampleOrder(len(data), config.batch_size, config.seed)
    shard_samples = config.shard_samples or 1000
    if streamed:
        if config.shard_samples not in (None, data.shard_samples):
            raise ConfigError(f"shard_samples: {config.shard_samples}, but {config.shards} was written with "
                              f"{data.shard_samples} samples per shard")
        shard_samples = data.shard_samples
    rows = data.rows if data.rows is not None else np.arange(len(data))
    return data, ShardOrder(shard_members(rows, shard_samples), config.batch_size, config.seed,
                            config.stream_groups)


def initialise_from(model: model_module.FourM, source: Path) -> None:
    """Copy the weights of ``source`` (a run folder or its model.safetensors) into ``model``; both must have
    the same shape and the same modalities with the same token specs (``init_from``)."""
    path = source / MODEL_FILE if source.is_dir() else source
    if not path.is_file():
        raise ConfigError(f"init_from: {source} holds no {MODEL_FILE} (a finished run folder or the file)")
    weights = model_module.load_model(path)
    if list(weights.specs.items()) != list(model.specs.items()):
        raise ConfigError(f"init_from: {path} was trained on modalities {', '.join(weights.specs)} with "
                          f"other token specs than these data ({', '.join(model.specs)}); it cannot start "
                          "this run")
    shape = ("dim", "encoder_layers", "decoder_layers", "heads", "mlp_ratio", "bias")
    for name in shape:
        if getattr(weights.config, name) != getattr(model.config, name):
            raise ConfigError(f"init_from: {path} has model.{name}={getattr(weights.config, name)!r}, this "
                              f"run model.{name}={getattr(model.config, name)!r}")
    model.load_state_dict(weights.state_dict())
