"""Tests of the samplers in pairless.inference.generate on a tiny stand-in model."""

from __future__ import annotations

import math

import pytest
import torch
from toy_translator import ToyTranslator, toy_specs

from pairless.config import ConfigError
from pairless.inference.generate import (
    PRESETS,
    GenerationSchedule,
    filter_logits,
    generate,
    generate_chain,
    guidance_scales,
    guided_logits,
    sample_tokens,
    schedule_preset,
    step_values,
    token_counts,
)
from pairless.inference.translation_batch import translation_batch
from pairless.modalities import parse_chain

SPECS = toy_specs()
MODALITIES = tuple(SPECS)


def random_tokens(batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = {name: torch.randint(3, spec.vocab_size, (batch_size, spec.num_tokens), generator=generator)
              for name, spec in SPECS.items()}
    caption = tokens["caption"]
    lengths = torch.randint(2, SPECS["caption"].num_tokens, (batch_size,), generator=generator)
    for row, used in enumerate(lengths.tolist()):
        caption[row, used - 1] = SPECS["caption"].eos_id
        caption[row, used:] = SPECS["caption"].pad_id
    return tokens


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("total,steps", [(16, 1), (16, 8), (17, 5), (256, 25), (3, 8)])
def test_token_counts_sum_to_the_target_length(kind, total, steps):
    counts = token_counts(total, steps, kind)
    assert len(counts) == steps and sum(counts) == total and min(counts) >= 0
    if total >= steps:
        assert min(counts) >= 1  # no wasted step while tokens remain


def test_linear_counts_are_even_and_cosine_counts_grow():
    assert token_counts(17, 5, "linear") == [4, 4, 3, 3, 3]
    cosine = token_counts(256, 8, "cosine")
    assert cosine[0] < cosine[-1]
    # MaskGIT: after step t the unknown fraction is cos(pi/2 (t+1)/N)
    assert 256 - cosine[0] == round(256 * math.cos(math.pi / 2 / 8))


def test_value_schedules():
    assert step_values(2.0, 1.0, 3, "constant") == [2.0, 2.0, 2.0]
    assert step_values(2.0, 1.0, 3, "linear") == pytest.approx([2.0, 1.5, 1.0])
    cosine = step_values(3.0, 1.0, 5, "cosine")
    assert cosine[0] == pytest.approx(3.0) and cosine[-1] == pytest.approx(1.0)
    assert cosine[2] == pytest.approx(2.0)
    schedule = GenerationSchedule(guidance_scale=3.0, guidance_schedule="linear", guidance_scale_final=1.0)
    assert guidance_scales(schedule, 3) == pytest.approx([3.0, 2.0, 1.0])


def test_presets_follow_table_three():
    assert (PRESETS["roar1"].num_steps, PRESETS["roar1"].temperature, PRESETS["roar1"].guidance_scale,
            PRESETS["roar1"].top_p, PRESETS["roar1"].top_k) == (1, 0.01, 2.0, 0.8, 0)
    assert PRESETS["roar8"].num_steps == 8
    assert PRESETS["ar-caption"].scheme == "ar" and PRESETS["ar-caption"].temperature == 0.3
    assert PRESETS["roar25-caption"].num_steps == 25 and PRESETS["roar25-caption"].temperature == 3.0
    with pytest.raises(ConfigError, match="roar8"):
        schedule_preset("roar9")


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    # nucleus 0.8: 0.5 + 0.3 reaches it, so the rest is dropped; 0.81 needs the third token
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).sum() == 1


def test_sampling_follows_the_distribution_and_top_k_one_is_greedy():
    probabilities = torch.tensor([0.6, 0.3, 0.1])
    logits = probabilities.log().expand(20000, 3)
    ids, chosen = sample_tokens(logits, 1.0, 0, 1.0, gen(1))
    frequencies = torch.bincount(ids, minlength=3).float() / ids.numel()
    assert torch.allclose(frequencies, probabilities, atol=0.02)
    assert torch.allclose(chosen, probabilities[ids])
    noisy = torch.randn(50, 7, generator=gen(2))
    greedy_ids, _ = sample_tokens(noisy, 5.0, 1, 1.0, gen(3))
    assert torch.equal(greedy_ids, noisy.argmax(-1))


def test_guidance_formula():
    cond, uncond = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0])
    assert torch.equal(guided_logits(cond, uncond, 1.0), cond)
    assert torch.allclose(guided_logits(cond, uncond, 2.0), torch.tensor([0.0, 6.0]))


@pytest.fixture(scope="module")
def model():
    return ToyTranslator(SPECS, seed=0).eval()


@pytest.mark.parametrize("preset", ["roar1", "roar8", "greedy"])
def test_parallel_samplers_return_valid_ids(model, preset):
    tokens = random_tokens(5)
    out = generate(model, tokens, ["rgb"], "depth", SPECS, MODALITIES, schedule_preset(preset), gen())
    assert out.shape == (5, 16) and out.dtype == torch.long
    assert out.min() >= 0 and out.max() < SPECS["depth"].vocab_size


def test_maskgit_with_cosine_schedule_returns_valid_ids(model):
    schedule = GenerationSchedule(scheme="maskgit", num_steps=4, token_schedule="cosine", temperature=1.0,
                                  guidance_scale=1.5, guidance_schedule="cosine")
    out = generate(model, random_tokens(4), ["rgb", "caption"], "depth", SPECS, MODALITIES, schedule, gen())
    assert out.shape == (4, 16) and out.min() >= 0 and out.max() < SPECS["depth"].vocab_size


def argmax_prediction(model, tokens, src, dst):
    batch = translation_batch(tokens, src, dst, SPECS, MODALITIES)
    with torch.no_grad():
        logits = model.logits(batch)[..., : SPECS[dst].vocab_size]
    return logits.argmax(-1)


def test_one_step_near_zero_temperature_is_the_argmax_prediction(model):
    tokens = random_tokens(6)
    expected = argmax_prediction(model, tokens, ["rgb"], "depth")
    schedule = GenerationSchedule(scheme="roar", num_steps=1, temperature=1e-6)
    assert torch.equal(generate(model, tokens, ["rgb"], "depth", SPECS, MODALITIES, schedule, gen()),
                       expected)


def test_guidance_scale_one_equals_no_guidance_and_other_scales_change_the_result(model):
    tokens = random_tokens(8)
    base = GenerationSchedule(scheme="roar", num_steps=4, temperature=1.0)
    unguided = generate(model, tokens, ["rgb"], "depth", SPECS, MODALITIES, base, gen(7))
    scale_one = base.model_copy(update={"guidance_scale": 1.0, "guidance_schedule": "linear",
                                        "guidance_scale_final": 1.0})
    assert torch.equal(generate(model, tokens, ["rgb"], "depth", SPECS, MODALITIES, scale_one, gen(7)),
                       unguided)
    strong = base.model_copy(update={"guidance_scale": 5.0})
    assert not torch.equal(generate(model, tokens, ["rgb"], "depth", SPECS, MODALITIES, strong, gen(7)),
                           unguided)


def test_same_generator_seed_same_result(model):
    tokens = random_tokens(4)
    schedule = schedule_preset("roar8")
    first = generate(model, tokens, ["rgb"], "depth", SPECS, MODALITIES, schedule, gen(3))
    assert torch.equal(first, generate(model, tokens, ["rgb"], "depth", SPECS, MODALITIES, schedule, gen(3)))


def check_sequence(ids, spec):
    for row in ids.tolist():
        if spec.eos_id in row:
            end = row.index(spec.eos_id)
            assert all(token == spec.pad_id for token in row[end + 1:])
            body = row[:end]
        else:
            body = row
        assert all(token not in (spec.pad_id, spec.bos_id) and 0 <= token < spec.vocab_size for token in body)


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_ar_with_cache_equals_without_cache_greedy(model, guidance):
    from pairless.inference.generate import ar_generate

    tokens = random_tokens(6)
    schedule = GenerationSchedule(scheme="ar", temperature=0.0, guidance_scale=guidance)
    with torch.no_grad():
        cached = ar_generate(model, tokens, ["rgb"], "caption", SPECS, MODALITIES, schedule, gen(),
                             use_cache=True)
        uncached = ar_generate(model, tokens, ["rgb"], "caption", SPECS, MODALITIES, schedule, gen(),
                               use_cache=False)
    assert torch.equal(cached, uncached)
    check_sequence(cached, SPECS["caption"])


def test_ar_greedy_first_token_is_the_teacher_forced_argmax(model):
    tokens = random_tokens(5)
    out = generate(model, tokens, ["rgb"], "caption", SPECS, MODALITIES, schedule_preset("greedy-ar"), gen())
    spec = SPECS["caption"]
    forced = argmax_prediction_sequence(model, tokens, out)
    # every generated token before EOS is the argmax given its own generated prefix
    for row in range(out.shape[0]):
        ids = out[row].tolist()
        end = ids.index(spec.eos_id) if spec.eos_id in ids else len(ids) - 1
        assert ids[: end + 1] == forced[row, : end + 1].tolist()


def argmax_prediction_sequence(model, tokens, generated):
    spec = SPECS["caption"]
    teacher = dict(tokens, caption=generated.masked_fill(generated == spec.pad_id, spec.eos_id))
    batch = translation_batch(teacher, ["rgb"], "caption", SPECS, MODALITIES)
    with torch.no_grad():
        logits = model.logits(batch)[..., : spec.vocab_size]
    logits[..., [spec.pad_id, spec.bos_id]] = float("-inf")
    return logits.argmax(-1)


def test_ar_sampling_returns_valid_sequences(model):
    out = generate(model, random_tokens(8), ["rgb"], "caption", SPECS, MODALITIES,
                   schedule_preset("ar-caption"),
                   gen(5))
    assert out.shape == (8, SPECS["caption"].num_tokens)
    check_sequence(out, SPECS["caption"])


def test_schemes_refuse_the_wrong_kind(model):
    with pytest.raises(ValueError, match="sequence"):
        generate(model, random_tokens(2), ["rgb"], "caption", SPECS, MODALITIES, schedule_preset("roar1"),
                 gen())
    with pytest.raises(ValueError, match="'depth' is a image"):
        generate(model, random_tokens(2), ["rgb"], "depth", SPECS, MODALITIES, schedule_preset("greedy-ar"),
                 gen())


@pytest.mark.parametrize("condition", ["all", "last"])
def test_chained_generation_conditions_as_documented(model, condition):
    tokens = random_tokens(3)
    schedules = {"depth": GenerationSchedule(scheme="roar", num_steps=2, temperature=0.0,
                                             chain_condition=condition),
                 "caption": GenerationSchedule(scheme="ar", temperature=0.0)}
    chain = parse_chain("rgb:depth:caption")
    out = generate_chain(model, {"rgb": tokens["rgb"]}, chain, SPECS, MODALITIES, schedules, gen())
    assert set(out) == {"depth", "caption"}
    src = ["rgb", "depth"] if condition == "all" else ["depth"]
    direct = generate(model, {"rgb": tokens["rgb"], "depth": out["depth"]}, src, "caption", SPECS, MODALITIES,
                      schedules["caption"], gen())
    assert torch.equal(out["caption"], direct)


def test_parse_chain_errors():
    assert parse_chain("rgb+normal:depth") == [["rgb", "normal"], ["depth"]]
    with pytest.raises(ValueError, match="chain"):
        parse_chain("rgb")


def test_ar_cache_equals_no_cache_with_the_real_model():
    from pairless.inference.generate import ar_generate
    from pairless.model import FourM, ModelConfig

    torch.manual_seed(0)
    # float64: autocast leaves it alone, so both paths compute the same numbers
    model = FourM(ModelConfig(dim=32, encoder_layers=1, decoder_layers=2, heads=2), SPECS).double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)  # large weights: a varied greedy sequence instead of one repeated id
    tokens = random_tokens(6)
    schedule = GenerationSchedule(scheme="ar", temperature=0.0, guidance_scale=2.0)
    with torch.no_grad():
        cached = ar_generate(model, tokens, ["rgb"], "caption", SPECS, model.modalities, schedule, gen())
        uncached = ar_generate(model, tokens, ["rgb"], "caption", SPECS, model.modalities, schedule, gen(),
                               use_cache=False)
    assert torch.equal(cached, uncached)
    check_sequence(cached, SPECS["caption"])
    assert len(set(cached[:, 0].tolist())) > 1 or len(set(cached[0].tolist())) > 2


def test_roar_with_the_real_model_returns_valid_ids():
    from pairless.model import FourM, ModelConfig

    torch.manual_seed(0)
    model = FourM(ModelConfig(dim=32, encoder_layers=1, decoder_layers=1, heads=2), SPECS).eval()
    for preset in ("roar1", "roar8"):
        out = generate(model, random_tokens(3), ["rgb", "caption"], "depth", SPECS, model.modalities,
                       schedule_preset(preset), gen())
        assert out.shape == (3, 16) and 0 <= out.min() and out.max() < SPECS["depth"].vocab_size


def test_generation_runs_with_the_callers_thread_count_and_restores_it(monkeypatch):
    from pairless.utils import threads

    monkeypatch.setattr(threads, "choose_threads", lambda *args: pytest.fail("the library chose by load"))
    seen = []
    model = ToyTranslator(SPECS, seed=0)
    original = model.logits
    model.logits = lambda batch: seen.append(torch.get_num_threads()) or original(batch)
    before = torch.get_num_threads()
    generate(model, random_tokens(2), ["rgb"], "depth", SPECS, MODALITIES, schedule_preset("greedy"), gen(),
             threads=1)
    assert set(seen) == {1} and torch.get_num_threads() == before
    seen.clear()
    generate(model, random_tokens(2), ["rgb"], "depth", SPECS, MODALITIES, schedule_preset("greedy"), gen())
    assert set(seen) == {before}  # no count given: the caller's own
