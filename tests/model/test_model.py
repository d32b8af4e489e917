"""Tests for pairless.model: loss, logits masking, KV-cache decoding, empty inputs, save/load, learning."""

from __future__ import annotations

import dataclasses
import json

import pytest
import safetensors.torch
import torch
from translation_oracle import full_translation_batch

from pairless.batch import TokenSpec
from pairless.config import ConfigError, validate
from pairless.model import PRESETS, FourM, ModelConfig, load_model, save_model
from pairless.training.masking import Masker, MaskingConfig

SPECS = {
    "rgb": TokenSpec("rgb", "image", 16, 50, grid=(4, 4)),
    "caption": TokenSpec("caption", "sequence", 8, 40, pad_id=0, bos_id=1, eos_id=2),
    "embed": TokenSpec("embed", "vector", 4, 30),
}
TINY = dict(dim=32, heads=2, encoder_layers=2, decoder_layers=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_tokens(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = {name: torch.randint(3, spec.vocab_size, (batch, spec.num_tokens), generator=generator)
              for name, spec in SPECS.items()}
    tokens["caption"][:, 6] = 2
    tokens["caption"][:, 7] = 0
    return tokens


def masked_batch(batch: int = 8, seed: int = 0):
    masker = Masker(SPECS, MaskingConfig(input_budget=10, target_budget=10, empty_input_fraction=0.2))
    views = torch.ones(batch, 3, dtype=torch.bool)
    return masker(make_tokens(batch, seed), views, torch.Generator().manual_seed(seed))


@pytest.fixture(params=["explicit", "sdpa"])
def model(request):
    torch.manual_seed(0)
    return FourM(ModelConfig(**TINY, attention=request.param), SPECS).eval()


def test_forward_loss_is_finite_and_backpropagates(model):
    loss, per_modality = model(masked_batch())
    assert torch.isfinite(loss)
    assert set(per_modality) == set(SPECS)
    assert torch.isclose(loss, torch.stack(list(per_modality.values())).mean())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.mask_token.grad.abs().sum() > 0


def test_loss_weights_make_the_loss_a_weighted_mean_of_the_modalities(model):
    batch = masked_batch()
    _, plain = model(batch)
    loss, per_modality = model(batch, loss_weights={"rgb": 3.0, "embed": 0.5})  # caption keeps weight 1
    expected = (3.0 * plain["rgb"] + plain["caption"] + 0.5 * plain["embed"]) / 4.5
    assert torch.allclose(loss, expected)
    assert all(torch.equal(per_modality[name], plain[name]) for name in plain)


def test_logits_are_minus_inf_outside_the_slot_vocabulary(model):
    batch = masked_batch()
    logits = model.logits(batch)
    assert logits.shape == (8, 10, 50)
    vocab = torch.tensor([50, 40, 30])[batch.dec_modality]
    inside = torch.arange(50) < vocab.unsqueeze(-1)
    assert torch.isfinite(logits[inside]).all()
    assert (logits[~inside] == float("-inf")).all()


def test_explicit_and_sdpa_attention_agree():
    torch.manual_seed(0)
    explicit = FourM(ModelConfig(**TINY, attention="explicit"), SPECS).eval()
    sdpa = FourM(ModelConfig(**TINY, attention="sdpa"), SPECS).eval()
    sdpa.load_state_dict(explicit.state_dict())
    batch = masked_batch()
    assert torch.allclose(explicit(batch)[0], sdpa(batch)[0], atol=1e-5)


def test_decode_step_equals_the_full_causal_decode(model):
    tokens = make_tokens(4)
    batch = full_translation_batch(tokens, None, ["rgb", "embed"], "caption", SPECS)
    with torch.no_grad():
        memory, memory_valid = model.encode(batch)
        full = model.decode(memory, memory_valid, batch)[:, :, :40]
        cache = model.start_cache(memory, memory_valid)
        previous = torch.full((4, 1), SPECS["caption"].bos_id)
        steps = []
        for position in range(7):
            steps.append(model.decode_step(cache, previous, "caption", torch.full((4, 1), position)))
            previous = tokens["caption"][:, position:position + 1]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_empty_input_works_and_input_changes_predictions(model):
    tokens = make_tokens(3)
    unconditional = full_translation_batch(tokens, None, [], "rgb", SPECS)
    conditional = full_translation_batch(tokens, None, ["embed"], "rgb", SPECS)
    with torch.no_grad():
        empty_logits = model.logits(unconditional)
        loss, _ = model(unconditional)
        assert torch.isfinite(empty_logits).all() and torch.isfinite(loss)
        assert not torch.allclose(empty_logits, model.logits(conditional))


def test_save_load_round_trip(tmp_path, model):
    path = tmp_path / "model.safetensors"
    save_model(path, model)
    loaded = load_model(path).eval()
    assert loaded.config == model.config and loaded.specs == model.specs
    batch = masked_batch()
    with torch.no_grad():
        assert torch.equal(loaded.logits(batch), model.logits(batch))
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_model(tmp_path / "bad.safetensors")


def test_weights_with_the_removed_flat_output_head_are_refused_naming_the_file(tmp_path, model):
    # Early files held one ``output`` projection over the concatenated vocabularies; that loader is gone.
    tensors = {name: tensor.clone() for name, tensor in model.state_dict().items()
               if not name.startswith("heads.")}
    tensors["output.weight"] = torch.cat([head.weight.detach() for head in model.heads])
    metadata = {"format": "pairless.FourM", "config": model.config.model_dump_json(),
                "specs": json.dumps([dataclasses.asdict(spec) for spec in model.specs.values()])}
    path = tmp_path / "old.safetensors"
    path.write_bytes(safetensors.torch.save(tensors, metadata=metadata))
    with pytest.raises(ValueError, match=r"(?s)old\.safetensors: the weights do not fit.*output\.weight"):
        load_model(path)


def test_a_step_touches_only_the_heads_it_predicts(model):
    # Samples that expose rgb and caption only: the embed head gets no gradient at all (not a zero one).
    masker = Masker(SPECS, MaskingConfig(input_budget=10, target_budget=10))
    views = torch.tensor([[True, True, False]]).repeat(8, 1)
    batch = masker(make_tokens(8), views, torch.Generator().manual_seed(0))
    model.zero_grad(set_to_none=True)
    loss, per_modality = model(batch)
    loss.backward()
    assert set(per_modality) == {"rgb", "caption"}
    assert [head.weight.grad is not None for head in model.heads] == [True, True, False]


def structured_tokens(batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Every modality a function of one hidden class per sample, so predictions can be learned."""
    hidden = torch.randint(0, 5, (batch, 1), generator=torch.Generator().manual_seed(seed))
    tokens = {
        "rgb": (hidden * 7 + torch.arange(16)) % 47 + 3,
        "caption": (hidden + 3).repeat(1, 8),
        "embed": hidden * 2 + torch.arange(4) + 3,
    }
    tokens["caption"][:, 4] = 2
    tokens["caption"][:, 5:] = 0
    return tokens


def test_loss_falls_on_a_tiny_problem():
    torch.manual_seed(0)
    model = FourM(ModelConfig(**TINY), SPECS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    masker = Masker(SPECS, MaskingConfig(input_budget=8, target_budget=8))
    generator = torch.Generator().manual_seed(0)
    losses = []
    for step in range(30):
        tokens = structured_tokens(16, seed=step)
        loss, _ = model(masker(tokens, torch.ones(16, 3, dtype=torch.bool), generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5, losses


def test_bf16_autocast_forward_is_close_to_fp32(model):
    batch = masked_batch()
    with torch.no_grad():
        reference = model(batch)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(batch)[0]
    assert abs(low.item() - reference.item()) < 0.05


def test_mismatched_batch_and_bad_config_raise():
    model = FourM(ModelConfig(**TINY), SPECS)
    batch = masked_batch()
    batch.modalities = ("caption", "rgb", "embed")
    with pytest.raises(ValueError, match="model.modalities"):
        model(batch)
    with pytest.raises(ConfigError, match="heads"):
        validate(ModelConfig, {"dim": 30, "heads": 4}, prefix="model")
    with pytest.raises(ValueError, match="model.preset"):
        ModelConfig.from_preset("huge")


def test_modality_init_std_sets_only_the_modality_embedding_scale():
    torch.manual_seed(0)
    default = FourM(ModelConfig(**TINY), SPECS)
    torch.manual_seed(0)
    wide = FourM(ModelConfig(**TINY, modality_init_std=1.0), SPECS)
    assert default.modality_embedding.std() < 0.05 < 0.5 < wide.modality_embedding.std()
    assert torch.allclose(wide.modality_embedding, default.modality_embedding * 50)  # same draw, scaled
    assert torch.equal(wide.null_token, default.null_token)
    assert torch.equal(wide.mask_token, default.mask_token)


def test_tiny_preset_size():
    specs = {f"image{i}": TokenSpec(f"image{i}", "image", 64, 1024, grid=(8, 8)) for i in range(4)}
    specs["caption"] = TokenSpec("caption", "sequence", 32, 3000, pad_id=0, bos_id=1, eos_id=2)
    model = FourM(ModelConfig.from_preset("tiny"), specs)
    body = sum(p.numel() for blocks in (model.encoder, model.decoder) for p in blocks.parameters())
    assert 3e6 < body < 5e6  # plus 2 x vocabulary x dim for the token table and the output rows
    assert set(PRESETS) >= {"tiny", "small", "anchor", "base", "large"}


def test_gradients_are_bit_identical_run_to_run_with_two_threads():
    # With two threads, the backward of tensor indexing accumulated repeated rows (the position/modality
    # table) in a varying order, so training was not reproducible between processes; gathers now go through
    # F.embedding. Two identical steps must give identical gradients, bit for bit.
    specs = {f"image{i}": TokenSpec(f"image{i}", "image", 64, 256, grid=(8, 8)) for i in range(3)}
    specs["caption"] = TokenSpec("caption", "sequence", 16, 300, pad_id=0, bos_id=1, eos_id=2)
    generator = torch.Generator().manual_seed(0)
    tokens = {name: torch.randint(3, spec.vocab_size, (32, spec.num_tokens), generator=generator)
              for name, spec in specs.items()}
    tokens["caption"][:, 12:] = 0
    tokens["caption"][:, 11] = 2
    masker = Masker(specs, MaskingConfig(input_budget=64, target_budget=64, empty_input_fraction=0.0))
    batch = masker(tokens, torch.ones(32, len(specs), dtype=torch.bool), generator)
    torch.manual_seed(0)
    model = FourM(ModelConfig(dim=96, heads=2, encoder_layers=1, decoder_layers=1), specs)

    def gradients():
        model.zero_grad(set_to_none=True)
        model(batch)[0].backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        reference = gradients()
        for _ in range(5):
            again = gradients()
            assert [n for n in reference if not torch.equal(reference[n], again[n])] == []
    finally:
        torch.set_num_threads(before)


def test_encode_layers_returns_every_layer_and_ends_with_the_encoder_output(model):
    batch = masked_batch()
    with torch.no_grad():
        memory, valid = model.encode(batch)
        states, layer_valid = model.encode_layers(batch)
    assert len(states) == TINY["encoder_layers"] + 1  # the embedded input, then one entry per block
    # the decoder reads the last state projected, plus the inputs' position and modality embeddings
    _, _, _, embedded = model._encoder_input(batch)
    with torch.no_grad():
        assert torch.equal(model._context(states[-1], embedded), memory)
    assert torch.equal(layer_valid, valid)
    assert all(state.shape == memory.shape for state in states)
    assert not torch.equal(states[0], states[1])
