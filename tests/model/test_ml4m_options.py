"""The ml-4m compatibility options of ModelConfig: the style switch, each option's effect, and a model with
all of them trained from scratch by ``pairless train``."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pairless.batch import TokenSpec
from pairless.config import apply_overrides, validate
from pairless.model import FourM, ModelConfig, load_model, save_model
from pairless.model.architecture import OPTION_NAMES, STYLES
from pairless.training.masking import Masker, MaskingConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train_helpers import make_shards, tiny_config_data  # noqa: E402

SPECS = {"rgb": TokenSpec("rgb", "image", 16, 50, grid=(4, 4)),
         "caption": TokenSpec("caption", "sequence", 8, 30, pad_id=0, bos_id=1, eos_id=2)}


def _model(**options) -> FourM:
    torch.manual_seed(0)
    return FourM(ModelConfig(dim=32, heads=2, encoder_layers=2, decoder_layers=2, **options), SPECS)


def _batch(seed: int = 1, empty: float = 0.5):
    generator = torch.Generator().manual_seed(seed)
    tokens = {"rgb": torch.randint(0, 50, (6, 16), generator=generator),
              "caption": torch.randint(3, 30, (6, 8), generator=generator)}
    masking = MaskingConfig(input_budget=8, target_budget=8, empty_input_fraction=empty)
    return Masker(SPECS, masking)(tokens, torch.ones(6, 2, dtype=torch.bool), generator), tokens


def test_default_model_is_pairless_with_ml4m_mlp_and_context_and_old_configs_load_as_trained():
    config = ModelConfig()
    assert config.style == "pairless" and config.mlp == "swiglu" and config.context_projection is True
    assert all(getattr(config, name) is None for name in OPTION_NAMES
               if name not in ("mlp", "context_projection"))
    architecture = config.architecture()
    assert architecture.mlp == "swiglu" and architecture.context_projection
    assert architecture.norm_eps == 1e-5 and architecture.null_token and not architecture.decoder_token_table
    assert not architecture.head_bias and ModelConfig(bias=True).architecture().head_bias
    # a config saved before the ml-4m options existed names none of them: it was trained with GELU and the
    # encoder output as the decoder's context, and loads so
    before = ModelConfig(mlp="gelu", context_projection=False).model_dump(mode="json")
    for name in OPTION_NAMES:
        del before[name]
    old = ModelConfig.from_saved(json.dumps(before)).architecture()
    assert old.mlp == "gelu" and not old.context_projection and old.null_token
    # and one saved since keeps what it names
    assert ModelConfig.from_saved(ModelConfig().model_dump(mode="json")).architecture() == architecture


def test_style_switch_sets_every_option_and_an_explicit_one_wins():
    resolved = ModelConfig(style="ml4m").architecture()
    for name, value in STYLES["ml4m"].items():
        assert getattr(resolved, name) == value, name
    assert resolved.head_bias is False
    mixed = apply_overrides(ModelConfig(), ["style=ml4m", "mlp=gelu"]).architecture()
    assert mixed.mlp == "gelu" and mixed.context_projection and mixed.norm_eps == 1e-6
    with pytest.raises(ValueError, match="style"):
        validate(ModelConfig, {"style": "ml5m"})


def test_ml4m_parts_exist_only_with_their_options():
    default = _model(mlp="gelu", context_projection=False).state_dict()  # the model before 2026-12-07
    styled = _model(style="ml4m").state_dict()
    extra = {"context_projection.weight", "context_projection.bias", "decoder_token_embedding.weight",
             "encoder_positions", "decoder_positions", "decoder.0.context_norm.weight",
             "decoder.0.fc3.weight"}
    assert not extra & set(default) and extra <= set(styled)
    assert "null_token" in default and "null_token" not in styled
    assert "decoder_modality_embedding" in _model(style="ml4m", separate_decoder_modalities=True).state_dict()
    block = _model(style="ml4m").decoder[0]
    assert block.fc1.out_features == block.fc3.out_features == int(2 * int(32 * 4.0) / 3)
    assert block.norm1.eps == 1e-6


def test_ml4m_model_handles_an_empty_input_without_nan_and_the_cache_matches_the_full_decode():
    model = _model(style="ml4m", separate_decoder_modalities=True).eval()
    batch, tokens = _batch()
    assert int((batch.enc_valid.sum(1) == 0).sum()) >= 1  # some sample has no input at all
    logits = model.logits(batch)
    assert torch.isfinite(logits[batch.dec_valid][..., :30]).all()
    memory, valid = model.encode(batch)
    count = 6
    full = replace(batch, dec_modality=torch.ones(count, 8, dtype=torch.long),
                   dec_positions=torch.arange(8).expand(count, 8),
                   dec_valid=torch.ones(count, 8, dtype=torch.bool),
                   dec_tokens=tokens["caption"],
                   dec_input_tokens=torch.cat([torch.ones(count, 1, dtype=torch.long),
                                               tokens["caption"][:, :-1]], 1))
    decoded = model.decode(memory, valid, full)[..., :30]
    cache = model.start_cache(memory, valid)
    steps = [model.decode_step(cache, full.dec_input_tokens[:, i:i + 1], "caption", torch.full((count, 1), i))
             for i in range(8)]
    assert (torch.cat(steps, 1) - decoded).abs().max() < 1e-5


def test_rank_positions_make_an_input_sequence_independent_of_where_its_tokens_came_from():
    model = _model(style="ml4m").eval()
    batch, _ = _batch(empty=0.0)
    caption = (batch.enc_modality == 1) & batch.enc_valid
    ranks = model._rank_positions(batch.enc_modality, batch.enc_positions, batch.enc_valid)
    assert not torch.equal(ranks[caption], batch.enc_positions[caption])  # the masker's inputs start later
    ranked = replace(batch, enc_positions=ranks)
    assert torch.equal(model.logits(batch), model.logits(ranked))
    plain = _model(style="ml4m", sequence_rank_positions=False).eval()
    assert not torch.equal(plain.logits(batch), plain.logits(ranked))


def test_ml4m_model_saves_and_loads_with_its_stored_tables(tmp_path):
    model = _model(style="ml4m", separate_decoder_modalities=True)
    with torch.no_grad():
        model.encoder_positions.add_(0.5)  # a stored table that is no longer the sin-cos one
    save_model(tmp_path / "model.safetensors", model)
    loaded = load_model(tmp_path / "model.safetensors")
    assert torch.equal(loaded.encoder_positions, model.encoder_positions)
    batch, _ = _batch()
    assert torch.equal(loaded.eval().logits(batch), model.eval().logits(batch))


def test_ml4m_style_trains_from_scratch(tmp_path):
    from pairless.training.config import TrainConfig
    from pairless.training.train import train

    shards = make_shards(tmp_path / "shards")
    data = tiny_config_data(shards, tmp_path / "run")
    data["model"] = {**data["model"], "style": "ml4m"}
    run = train(validate(TrainConfig, data))
    values = [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert sum(values[-3:]) / 3 < sum(values[:3]) / 3 - 0.5, values
    saved = json.loads((run / "config.json").read_text())["model"]
    assert saved["style"] == "ml4m" and saved["norm_eps"] is None
    assert load_model(run / "model.safetensors").architecture.context_projection
