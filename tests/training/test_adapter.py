"""`pairless add-modality`: a modality added to a frozen base through a light adapter.

The base is trained on rgb, depth and caption of shards that also hold normal. In these shards every
token of a sample's rgb, depth and normal carries one value per sample (train_helpers.SPECS, tokens of our
own): a one-layer model learns depth -> rgb in ~160 steps (the per-position functions of make_shards take
hundreds), so that the adapted normal -> rgb has something to reuse.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from train_helpers import SPECS

from pairless.cli import main as cli_main
from pairless.config import validate
from pairless.data.shards import ShardSplit, open_shards, write_shards
from pairless.inference.evaluate import translation_ce
from pairless.inference.translation_batch import pack_batch
from pairless.model import load_model
from pairless.training.adapter import (
    AdapterConfig,
    add_modality,
    resolve_config,
    restricted_state_dict,
    tensor_hash,
    train_adapter,
)
from pairless.training.config import TrainConfig
from pairless.training.masking import MaskingConfig
from pairless.training.train import train
from pairless.utils.storage import read_json, verify_complete

pytestmark = pytest.mark.usefixtures("one_thread")


def _split(count: int, seed: int) -> ShardSplit:
    rng = np.random.default_rng(seed)
    value = rng.integers(0, 8, (count, 1)).repeat(16, 1)  # one value per sample, every position
    caption = rng.integers(3, 12, (count, 10))
    caption[:, 7] = 2  # EOS, then padding
    caption[:, 8:] = 0
    tokens = {"rgb": value * 4, "depth": value * 3, "normal": value + 1, "caption": caption}
    return ShardSplit([f"sample{index:04d}" for index in range(count)], tokens,
                      {name: np.ones(count, dtype=bool) for name in SPECS})


def _base(shards, out, universe, steps):
    train(TrainConfig(shards=shards, out=out, batch_size=16, total_tokens=16 * 24 * steps, base_lr=0.05,
                      model=dict(dim=32, heads=2, encoder_layers=1, decoder_layers=1),
                      masking=MaskingConfig(input_budget=12, target_budget=12),
                      fragment=dict(universe=universe), precision="fp32", device="cpu", log_every=100,
                      checkpoint_every=10_000))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter")
    shards = write_shards(root / "shards", {"train": _split(96, 0), "val": _split(16, 1)}, SPECS, {})
    base = _base(shards, root / "base", ["rgb", "depth", "caption"], steps=160)
    return shards, base


def config(setup, out, **changes) -> AdapterConfig:
    shards, base = setup
    data = dict(base=str(base), shards=str(shards), out=str(out), modality="normal", anchor="rgb",
                total_tokens=3000, batch_size=16, lr=0.03, precision="fp32", device="cpu", log_every=1)
    return validate(AdapterConfig, {**data, **changes})


def whole(shards, names: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every token of ``names`` for the first 8 validation samples, as pack_batch takes them."""
    split = open_shards(shards, "val")
    tokens = {name: torch.tensor(np.asarray(split.tokens[name][:8])).long() for name in names}
    return {name: (value, torch.ones_like(value, dtype=torch.bool)) for name, value in tokens.items()}


def log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_every_base_weight_stays_bit_identical(setup, tmp_path):
    out = add_modality(config(setup, tmp_path / "out", precision="bf16"))  # bf16 autocast, like real runs
    verify_complete(out)
    merged, base = load_model(out / "model.safetensors"), load_model(setup[1] / "model.safetensors")
    # normal sits between depth and caption: caption's rows and head moved to new offsets
    assert merged.modalities == ("rgb", "depth", "normal", "caption")
    restored, original = restricted_state_dict(merged, base.modalities), base.state_dict()
    assert set(restored) == set(original)
    for name, tensor in original.items():
        assert tensor_hash({name: restored[name]}) == tensor_hash({name: tensor}), name
    record = read_json(out / "COMPLETE.json")
    assert record["frozen_hash"] == record["base_hash"] == tensor_hash(original)
    assert record["trainable_parameters"] == 2 * 24 * 32 + 32  # rows + head (no bias) + modality row
    assert record["base_parameters"] == base.num_parameters()
    assert read_json(out / "config.json")["masking"]["input_budget"] == 12  # the base run's masking
    # and the base modalities translate exactly as before: same logits for depth + caption -> rgb + caption
    inputs, targets = whole(setup[0], ["depth", "caption"]), whole(setup[0], ["rgb", "caption"])
    with torch.no_grad():
        before = base.eval().logits(pack_batch(inputs, targets, base.specs, base.modalities))
        after = merged.eval().logits(pack_batch(inputs, targets, merged.specs, merged.modalities))
    assert torch.equal(before[..., :40], after[..., :40])


def test_the_new_modality_round_trips_through_save_and_load(setup, tmp_path):
    resolved = resolve_config(config(setup, tmp_path / "out"))
    result = train_adapter(resolved, tmp_path / "out")
    loaded = load_model(tmp_path / "out" / "model.safetensors").eval()
    batch = pack_batch(whole(setup[0], ["normal"]), whole(setup[0], ["normal", "rgb"]), loaded.specs,
                       loaded.modalities)
    with torch.no_grad():
        expected, found = result.model.eval().logits(batch), loaded.logits(batch)
    assert torch.isfinite(expected[batch.dec_valid][:, :SPECS["normal"].vocab_size]).all()
    assert torch.equal(expected, found)


def test_low_rank_factors_count_and_merge_exactly(setup, tmp_path):
    rank, vocab, dim = 3, SPECS["normal"].vocab_size, 32
    resolved = resolve_config(config(setup, tmp_path / "out", rank=rank))
    result = train_adapter(resolved, tmp_path / "out")
    adapter, merged = result.adapter, load_model(tmp_path / "out" / "model.safetensors")
    assert adapter.num_parameters() == 2 * (vocab * rank + rank * dim) + dim
    assert result.summary["trainable_parameters"] == adapter.num_parameters()
    rows = slice(int(merged.vocab_offset[2]), int(merged.vocab_offset[2]) + vocab)
    with torch.no_grad():
        assert torch.equal(merged.token_embedding.weight[rows], adapter.token_left @ adapter.token_right)
        assert torch.equal(merged.heads[2].weight, adapter.head_left @ adapter.head_right)
        assert torch.equal(merged.modality_embedding[2], adapter.modality_row)
    assert result.summary["frozen_hash"] == result.summary["base_hash"]


def test_structure_term_is_trained_and_logged(setup, tmp_path):
    out = add_modality(config(setup, tmp_path / "out", structure_weight=1.0))
    values = [entry["structure_loss"] for entry in log(out)]
    assert all(value is not None and np.isfinite(value) and value >= 0 for value in values)
    again = add_modality(config(setup, tmp_path / "again", structure_weight=1.0))  # deterministic
    assert tensor_hash(load_model(out / "model.safetensors").state_dict()) == \
        tensor_hash(load_model(again / "model.safetensors").state_dict())
    assert log(again)[-1]["loss"] == log(out)[-1]["loss"]


def test_loss_falls_and_normal_input_helps_predict_rgb(setup, tmp_path):
    out = add_modality(config(setup, tmp_path / "out", total_tokens=24_000))
    losses = [entry["loss"] for entry in log(out)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses
    result = translation_ce(load_model(out / "model.safetensors"), open_shards(setup[0], "train"),
                            ["normal"], "rgb", threads=1)
    assert result["ce"] < 0.8 * result["ce_unconditional"], result


def test_cli_end_to_end_and_errors_name_the_bad_modality(setup, tmp_path, capsys):
    shards, base = setup
    out = tmp_path / "out"
    common = ["--out", str(out), "--set", "total_tokens=2000", "--set", "batch_size=16", "--set",
              "precision=fp32", "--set", "masking.target_budget=8"]
    # no --shards: the base run's own
    assert cli_main(["add-modality", str(base), "--modality", "normal", "--anchor", "rgb", *common]) == 0
    printed = capsys.readouterr().out
    assert "1,568 parameters" in printed and "trainable parameters" in printed and str(out) in printed
    saved = read_json(out / "config.json")
    assert saved["shards"] == str(shards.resolve())
    assert (saved["masking"]["input_budget"], saved["masking"]["target_budget"]) == (12, 8)
    assert cli_main(["add-modality", str(base), "--modality", "normal", "--anchor", "rgb", *common]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli_main(["add-modality", str(base), "--modality", "normal", "--anchor", "rgb", *common,
                     "--set", "lr=0.5"]) == 1
    assert "lr=" in capsys.readouterr().err
    narrow = _base(shards, tmp_path / "narrow", ["rgb", "depth"], steps=1)
    for base_run, modality, anchor, named in [(base, "nope", "rgb", "'nope'"),
                                              (base, "normal", "semseg", "'semseg'"),
                                              (base, "depth", "rgb", "'depth' is in the base model"),
                                              (narrow, "normal", "caption", "'caption' is not a modality")]:
        code = cli_main(["add-modality", str(base_run), "--shards", str(shards), "--modality", modality,
                         "--anchor", anchor, "--out", str(tmp_path / "bad")])
        assert code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_declared_modality_is_added_and_translates_to_what_it_never_saw(tmp_path):
    """A user's own modality (declared next to the data, unknown to the package) added to a frozen model
    through rgb alone, then translated to depth, a pair the adapter never saw."""
    from pairless import modalities as registry
    from pairless.batch import TokenSpec
    from pairless.data.declared import declare

    (tmp_path / "modalities.yaml").write_text("modalities:\n  thermal:\n    kind: image\n    dtype: float32\n"
                                             "    extensions: [.npy]\n")
    declare(tmp_path / "modalities.yaml")
    try:
        specs = {**SPECS, "thermal": TokenSpec("thermal", "image", num_tokens=16, vocab_size=24, grid=(4, 4))}

        def split(count: int, seed: int) -> ShardSplit:
            plain = _split(count, seed)
            plain.tokens["thermal"] = plain.tokens["normal"] * 2  # another view of the same value
            plain.present["thermal"] = np.ones(count, dtype=bool)
            return plain

        shards = write_shards(tmp_path / "shards", {"train": split(96, 0), "val": split(16, 1)}, specs, {})
        base = _base(shards, tmp_path / "base", ["rgb", "depth", "caption"], steps=160)
        out = add_modality(validate(AdapterConfig, dict(
            base=str(base), shards=str(shards), out=str(tmp_path / "out"), modality="thermal", anchor="rgb",
            total_tokens=24_000, batch_size=16, lr=0.03, precision="fp32", device="cpu")))
        model = load_model(out / "model.safetensors")
        assert model.modalities == ("rgb", "depth", "caption", "thermal")  # a user's modality comes last
        summary = read_json(out / "COMPLETE.json")
        assert summary["frozen_hash"] == summary["base_hash"]
        result = translation_ce(model, open_shards(shards, "val"), ["thermal"], "depth", threads=1)
        assert result["ce"] < 0.8 * result["ce_unconditional"], result
    finally:
        registry.unregister("thermal")
