"""ml-4m checkpoints: imported models compute ml-4m's logits (the fixture made by ml-4m's own code,
scripts/make_ml4m_fixture.py), export and re-import are exact, and what cannot be expressed is refused by
name. Nothing here imports ml-4m."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pairless.batch import TokenSpec
from pairless.model import FourM, ModelConfig, load_model
from pairless.model.ml4m import Ml4mError, from_ml4m, parse_metadata, read_checkpoint, read_mapping, to_ml4m

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ml4m_cases import FIXTURE, fixture_record, load_cases, max_logit_difference  # noqa: E402

RECORD = fixture_record()
MAPPING = read_mapping(FIXTURE / "modalities.json")
CASES = [(flavour, case) for flavour, entry in RECORD["flavours"].items() for case in entry["cases"]]


@pytest.fixture(scope="module")
def cases():
    return load_cases()


def _import(flavour: str, **changes):
    tensors, config = read_checkpoint(FIXTURE / f"{flavour}.safetensors")
    return from_ml4m(tensors, {**config, **changes}, MAPPING), tensors, config


def _difference(imported, cases, flavour, case) -> float:
    names = {ml4m: name for name, ml4m in imported.names.items()}
    offset = RECORD["flavours"][flavour]["sequence_target_offset"]
    return max_logit_difference(imported.model, cases, flavour, case, names, offset)


def test_fixture_records_where_it_came_from():
    assert len(RECORD["ml4m_commit"]) == 40 and RECORD["torch"].startswith("2.")
    assert sum(path.stat().st_size for path in FIXTURE.iterdir()) < 4_000_000
    kinds = {case["target"] for _, case in CASES}
    assert {"tok_rgb@224", "caption", "det", "tok_dinov2_global"} <= kinds


@pytest.mark.parametrize(("flavour", "case"), CASES, ids=[f"{f}-{c['target']}" for f, c in CASES])
def test_imported_model_gives_ml4m_logits(flavour, case, cases):
    imported, _, config = _import(flavour)
    separate = imported.model.architecture.separate_decoder_modalities
    assert separate == (not config["share_modality_embeddings"])
    assert _difference(imported, cases, flavour, case) <= 1e-4


def test_a_swapped_tensor_or_a_missing_option_is_caught(cases):
    """The comparison can fail: the fixture's weights were moved away from their initial values."""
    flavour, case = "fm7", next(case for f, case in CASES if f == "fm7" and case["target"] == "caption")
    imported, _, _ = _import(flavour)
    with torch.no_grad():
        first, second = imported.model.decoder[0].fc1.weight, imported.model.decoder[1].fc1.weight
        first.copy_(second)
    assert _difference(imported, cases, flavour, case) > 1e-3
    for option in ("context_projection", "sequence_rank_positions", "finite_mask", "decoder_token_table"):
        imported, _, _ = _import(flavour)
        state = imported.model.state_dict()
        config = imported.model.config.model_copy(update={option: False})
        changed = FourM(config, imported.model.specs)
        changed.load_state_dict({key: value for key, value in state.items() if key in changed.state_dict()},
                                strict=False)
        imported.model = changed
        worst = max(_difference(imported, cases, flavour, each) for f, each in CASES if f == flavour)
        assert worst > 1e-3, option


@pytest.mark.parametrize("flavour", ["fm7", "fm21"])
def test_import_export_import_is_bit_identical(flavour):
    imported, tensors, config = _import(flavour)
    exported, metadata = to_ml4m(imported.model, imported.names, imported.config, MAPPING,
                                 imported.position_rows)
    assert set(exported) == set(tensors)
    for key, value in tensors.items():
        if key.endswith("pos_emb") and value.shape[1] == 512:  # rows past the text length: never reached
            value, exported[key] = value[:, :12], exported[key][:, :12]
        assert torch.equal(value, exported[key]), key
    assert {key: str(value) for key, value in config.items()} == metadata
    again = from_ml4m(exported, parse_metadata(metadata), MAPPING)
    first, second = imported.model.state_dict(), again.model.state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def test_tied_and_duplicate_keys_either_way(tmp_path, cases):
    """A 4M-7 file without the decoder's copy of a shared modality embedding, and one whose output head is
    tied to the decoder's token table, import like the full file."""
    reference, tensors, config = _import("fm7")
    thinned = {key: value for key, value in tensors.items()
               if not (key.startswith("decoder_embeddings.") and key.endswith(".mod_emb"))}
    same = from_ml4m(thinned, config, MAPPING).model.state_dict()
    assert same.keys() == reference.model.state_dict().keys()
    assert all(torch.equal(value, same[key]) for key, value in reference.model.state_dict().items())
    tied = dict(tensors)
    tied["decoder_embeddings.caption.token_emb.weight"] = tied["decoder_embeddings.caption.to_logits.weight"]
    save_file({key: value.clone() for key, value in tied.items()}, str(tmp_path / "tied.safetensors"),
              metadata={key: str(value) for key, value in config.items()})
    model = from_ml4m(*read_checkpoint(tmp_path / "tied.safetensors"), MAPPING).model
    assert torch.equal(model.heads[model.modalities.index("caption")].weight,
                       tied["decoder_embeddings.caption.to_logits.weight"])
    shared = copy.deepcopy(tensors)
    shared["decoder_embeddings.det.mod_emb"] = shared["decoder_embeddings.det.mod_emb"] + 1.0
    with pytest.raises(Ml4mError, match="decoder_embeddings.det.mod_emb differs"):
        from_ml4m(shared, config, MAPPING)


def test_pixel_and_t5_inputs_are_refused_by_name_unless_skipped(cases):
    _, tensors, config = _import("fm7")
    with_pixels = {**tensors, "encoder_embeddings.rgb@224.proj.weight": torch.zeros(32, 768),
                   "encoder_embeddings.rgb@224.mod_emb": torch.zeros(1, 1, 32),
                   "encoder_embeddings.t5_caption.emb_proj.weight": torch.zeros(32, 4096)}
    config = {**config, "domains_in": ["rgb@224", "t5_caption", *config["domains_in"]]}
    with pytest.raises(Ml4mError, match=r"rgb@224, t5_caption .*raw pixels.*--skip rgb@224.*T5"):
        from_ml4m(with_pixels, config, MAPPING)
    skipped = from_ml4m(with_pixels, config, MAPPING, skip=("rgb@224", "t5_caption"))
    assert skipped.skipped == ["rgb@224", "t5_caption"] and "rgb" in skipped.model.modalities
    case = next(case for f, case in CASES if f == "fm7" and case["target"] == "tok_depth@224")
    assert _difference(skipped, cases, "fm7", case) <= 1e-4
    with pytest.raises(Ml4mError, match="--skip caption: it is a target"):
        from_ml4m(with_pixels, config, MAPPING, skip=("caption",))


@pytest.mark.parametrize(("change", "message"), [
    ({"qk_norm": True}, "qk_norm=True"), ({"num_register_tokens": 4}, "register tokens"),
    ({"decoder_causal_mask": True}, "decoder_causal_mask"), ({"mlp_bias": True}, "biases"),
    ({"act_layer": "GELU"}, "act_layer='GELU'"),
    ({"domains_out": ["caption"]}, "only inputs or only targets"),
])
def test_configs_pairless_cannot_compute_are_refused(change, message):
    _, tensors, config = _import("fm7")
    with pytest.raises(Ml4mError, match=message):
        from_ml4m(tensors, {**config, **change}, MAPPING)


def test_unknown_names_and_grids_are_refused_by_name():
    _, tensors, config = _import("fm7")
    with pytest.raises(Ml4mError, match=r"tok_depth@224.*16 position rows.*\[14, 14\]"):
        from_ml4m(tensors, config, read_mapping())  # the shipped mapping: ml-4m's 14 x 14 grids
    renamed = {key.replace("tok_depth@224", "tok_thermal@224"): value for key, value in tensors.items()}
    domains = [name.replace("tok_depth@224", "tok_thermal@224") for name in config["domains_in"]]
    with pytest.raises(Ml4mError, match="tok_thermal@224 are not in the modality mapping"):
        from_ml4m(renamed, {**config, "domains_in": domains, "domains_out": domains}, MAPPING)


def test_export_refuses_a_model_without_the_ml4m_options():
    specs = {"rgb": TokenSpec("rgb", "image", 16, 64, grid=(4, 4))}
    with pytest.raises(Ml4mError, match=r"null_token=True .*decoder_token_table=False.*style=ml4m"):
        plain = FourM(ModelConfig(dim=32, heads=2, encoder_layers=1, decoder_layers=1), specs)
        to_ml4m(plain, mapping=MAPPING)
    styled = FourM(ModelConfig(dim=32, heads=2, encoder_layers=1, decoder_layers=1, style="ml4m"),
                   {"thermal": TokenSpec("thermal", "image", 16, 64, grid=(4, 4))})
    with pytest.raises(Ml4mError, match="thermal have no ml-4m name"):
        to_ml4m(styled, mapping=MAPPING)
    tensors, metadata = to_ml4m(styled, {"thermal": "tok_thermal@224"}, mapping=MAPPING)
    assert "encoder_embeddings.tok_thermal@224.token_emb.weight" in tensors
    assert parse_metadata(metadata)["domains_out"] == ["tok_thermal@224"]


def _shards(root: Path, model: FourM, count: int = 24) -> Path:
    from pairless.data.shards import ShardSplit, write_shards

    names = ["rgb", "depth", "caption"]
    specs = {name: model.specs[name] for name in names}
    rng = np.random.default_rng(0)

    def split(size):
        tokens = {name: rng.integers(0, specs[name].vocab_size, (size, specs[name].num_tokens))
                  for name in names}
        caption = rng.integers(20, specs["caption"].vocab_size, (size, 12))
        caption[:, 7], caption[:, 8:] = specs["caption"].eos_id, specs["caption"].pad_id
        tokens["caption"] = caption
        present = {name: np.ones(size, dtype=bool) for name in names}
        return ShardSplit([f"s{index}" for index in range(size)], tokens, present)

    return write_shards(root, {"train": split(count), "val": split(8)}, specs, {"note": "ml-4m test"})


def test_imported_run_evaluates_with_pairless_eval(tmp_path, capsys):
    from pairless.cli import main as cli

    checkpoint = FIXTURE / "fm21.safetensors"
    first = tmp_path / "probe-run"
    assert cli(["import-4m", str(checkpoint), "--out", str(first), "--modalities",
                str(FIXTURE / "modalities.json")]) == 0
    shards = _shards(tmp_path / "shards", load_model(first / "model.safetensors"))
    run = tmp_path / "fm21"
    assert cli(["import-4m", str(checkpoint), "--out", str(run), "--modalities",
                str(FIXTURE / "modalities.json"), "--shards", str(shards)]) == 0
    capsys.readouterr()
    assert cli(["eval", str(run), "--directions", "rgb:depth,rgb+depth:caption", "--num-samples", "8"]) == 0
    printed = capsys.readouterr().out
    assert "rgb:depth" in printed and "rgb+depth:caption" in printed
    assert cli(["export-4m", str(run), "--out", str(tmp_path / "back.safetensors"), "--modalities",
                str(FIXTURE / "modalities.json")]) == 0
    assert load_file(str(tmp_path / "back.safetensors")).keys() == load_file(str(checkpoint)).keys()
    assert cli(["import-4m", str(checkpoint), "--out", str(tmp_path / "x")]) == 2
    assert "14, 14" in capsys.readouterr().err


@pytest.mark.slow
def test_base_size_checkpoint_imports(tmp_path):
    """A checkpoint of the released 4M-7-B shape (random weights): import time printed (target <= 30 s on 2
    cores; the figure depends on what else runs, so it is printed, not asserted)."""
    dim, depth, hidden = 768, 12, int(2 * 768 * 4 / 3)
    vocab = {"tok_rgb@224": 16384, "tok_depth@224": 8192, "tok_normal@224": 8192, "tok_semseg@224": 4096,
             "tok_clip@224": 8192, "caption": 30000, "det": 30000}
    generator = torch.Generator().manual_seed(0)

    def draw(*shape):
        return torch.randn(*shape, generator=generator) * 0.02

    tensors = {"mask_token": draw(1, 1, dim), "decoder_proj_context.weight": draw(dim, dim),
               "decoder_proj_context.bias": draw(dim)}
    for name, size in vocab.items():
        rows = 512 if name in ("caption", "det") else 196
        for side in ("encoder", "decoder"):
            tensors[f"{side}_embeddings.{name}.token_emb.weight"] = draw(size, dim)
            tensors[f"{side}_embeddings.{name}.pos_emb"] = draw(1, rows, dim)
            tensors[f"{side}_embeddings.{name}.mod_emb"] = torch.full((1, 1, dim), 0.01)
        tensors[f"decoder_embeddings.{name}.to_logits.weight"] = draw(size, dim)
    for side, attention in (("encoder", "attn"), ("decoder", "self_attn")):
        parts = {f"{attention}.qkv": (3 * dim, dim), f"{attention}.proj": (dim, dim),
                 "mlp.fc1": (hidden, dim), "mlp.fc2": (dim, hidden), "mlp.fc3": (hidden, dim)}
        if side == "decoder":
            parts.update({"cross_attn.q": (dim, dim), "cross_attn.kv": (2 * dim, dim),
                          "cross_attn.proj": (dim, dim)})
        norms = ["norm1", "norm2"] + (["query_norm", "context_norm"] if side == "decoder" else [])
        for index in range(depth):
            for part, shape in parts.items():
                tensors[f"{side}.{index}.{part}.weight"] = draw(*shape)
            for norm in norms:
                tensors[f"{side}.{index}.{norm}.weight"] = torch.ones(dim)
                tensors[f"{side}.{index}.{norm}.bias"] = torch.zeros(dim)
        tensors[f"{side}_norm.weight"], tensors[f"{side}_norm.bias"] = torch.ones(dim), torch.zeros(dim)
    config = {"domains_in": ["rgb@224", *vocab], "domains_out": list(vocab), "image_size": 224,
              "patch_size": 16, "dim": dim, "encoder_depth": depth, "decoder_depth": depth, "num_heads": 12,
              "mlp_ratio": 4.0, "qkv_bias": False, "proj_bias": False, "mlp_bias": False, "norm_bias": False,
              "act_layer": "SiLU", "gated_mlp": True, "qk_norm": False, "decoder_causal_mask": False,
              "decoder_sep_mask": True, "num_register_tokens": 0, "share_modality_embeddings": True}
    tensors["encoder_embeddings.rgb@224.proj.weight"] = draw(dim, 768)
    path = tmp_path / "4m-7-b.safetensors"
    save_file(tensors, str(path), metadata={key: str(value) for key, value in config.items()})
    del tensors
    from pairless.training.imported import import_checkpoint

    start = time.perf_counter()
    record = import_checkpoint(path, tmp_path / "run", skip=("rgb@224",))
    seconds = time.perf_counter() - start
    print(f"\nimport of a 4M-7-B-shaped checkpoint ({path.stat().st_size / 1e6:.0f} MB, "
          f"{record['parameters']:,} parameters): {seconds:.1f} s")
    model = load_model(tmp_path / "run" / "model.safetensors")
    assert model.config.preset == "base" and model.specs["caption"].num_tokens == 256
    assert model.specs["rgb"].grid == (14, 14) and model.specs["caption"].bos_id == 5


def test_imported_model_generates_tokens_with_pairless_samplers():
    """ROAR for an image, AR with guidance for a caption (the no-input rows run with an empty encoder):
    the KV cache gives what re-decoding the prefix gives."""
    from pairless.inference.generate import default_schedule, generate

    model = _import("fm21")[0].model.eval()
    rng = torch.Generator().manual_seed(0)
    source = {"rgb": torch.randint(0, 64, (2, 16), generator=rng),
              "depth": torch.randint(0, 48, (2, 16), generator=rng)}
    image = generate(model, source, ["rgb"], "normal", model.specs, model.modalities,
                     default_schedule("image"), torch.Generator().manual_seed(1))
    assert image.shape == (2, 8) and int(image.max()) < 40
    schedule = default_schedule("sequence").model_copy(update={"guidance_scale": 2.0})
    cached, plain = (generate(model, source, ["rgb", "depth"], "caption", model.specs, model.modalities,
                              schedule, torch.Generator().manual_seed(2), use_cache=use)
                     for use in (True, False))
    assert torch.equal(cached, plain) and cached.shape == (2, 12)
    assert not bool((cached == model.specs["caption"].bos_id).any())  # [S_1] starts, it is never produced


def test_missing_sincos_buffers_are_rebuilt_as_ml4m_builds_them():
    from pairless.model.blocks import sincos_1d
    from pairless.model.ml4m import ml4m_sincos_2d

    _, tensors, config = _import("fm7")
    dropped = {key: value for key, value in tensors.items()
               if not key.endswith(("tok_normal@224.pos_emb", "caption.pos_emb"))}
    model = from_ml4m(dropped, config, MAPPING).model
    normal, caption = model.modalities.index("normal"), model.modalities.index("caption")
    rows = slice(int(model.slot_offset[normal]), int(model.slot_offset[normal]) + 8)
    assert torch.equal(model.encoder_positions[rows], ml4m_sincos_2d(2, 4, 32))
    assert not torch.equal(ml4m_sincos_2d(2, 4, 32), ml4m_sincos_2d(4, 2, 32))  # the axes matter off-square
    rows = slice(int(model.slot_offset[caption]), int(model.slot_offset[caption]) + 12)
    assert torch.equal(model.decoder_positions[rows], sincos_1d(torch.arange(12), 32))
    learned = {key: value for key, value in _import("fm21")[1].items()
               if key != "encoder_embeddings.tok_dinov2_global.pos_emb"}
    with pytest.raises(Ml4mError, match="tok_dinov2_global.pos_emb is missing"):
        from_ml4m(learned, _import("fm21")[2], MAPPING)
