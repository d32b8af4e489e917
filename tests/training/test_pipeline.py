"""The input pipeline and the step off the host: per-sample masking that does not depend on the number of
processes, no host sync in the forward, activation checkpointing and compiled blocks equal to eager,
asynchronous checkpoints, DDP without a search for unused parameters."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
import torch
import torch.distributed as dist
from train_helpers import SPECS, make_shards, tiny_config_data

from pairless import model as model_module
from pairless.config import validate
from pairless.model import FourM, ModelConfig
from pairless.model.transformer import with_target_rows
from pairless.training import distributed
from pairless.training.checkpoint import STATE_FILE, latest_checkpoint, read_state
from pairless.training.config import TrainConfig
from pairless.training.data import (
    MASKING_STREAM,
    BatchSource,
    derive_seed,
    seeded_generator,
    tokens_per_modality,
)
from pairless.training.loading import training_data
from pairless.training.masking import Masker, MaskingConfig
from pairless.training.run import ADDED_OPTIONS, StepHealth, StepStatistics, without_added_options
from pairless.training.train import micro_batches, train


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("pipeline") / "shards")


def _config(shards, out, **changes) -> TrainConfig:
    return validate(TrainConfig, tiny_config_data(shards, out, **changes))


def _rows(batch, start: int, stop: int) -> dict[str, torch.Tensor]:
    return {f.name: getattr(batch, f.name)[start:stop] for f in fields(batch)
            if isinstance(getattr(batch, f.name), torch.Tensor) and f.name != "target_rows"}


@pytest.mark.parametrize("micro_batch_size", [None, 2])
def test_each_process_masks_its_own_slice_and_gets_the_rows_of_one_process(shards, tmp_path,
                                                                          micro_batch_size):
    """1, 2 and 4 processes: every sample's inputs and targets are the same, and every process counts the
    tokens of the whole global batch (the budget) without masking it."""
    config = _config(shards, tmp_path / "run", batch_size=8, micro_batch_size=micro_batch_size)
    data, order = training_data(config)
    masker = Masker(data.specs, config.masking, data.modalities)
    prepared = {}
    for world_size in (1, 2, 4):
        for rank in range(world_size):
            context = distributed.ProcessContext(rank, world_size, rank, torch.device("cpu"), False)
            slices = micro_batches(config, context)
            own = (slices[0][0], slices[-1][1])
            source = BatchSource(data, order, masker, config.seed, num_workers=1, own=own,
                                 micro=[(a - own[0], b - own[0]) for a, b in slices],
                                 global_modality_tokens=False)
            prepared[world_size, rank] = [source.get(step) for step in range(5)]
            source.close()
    for step in range(5):
        one = prepared[1, 0][step]
        assert one.batch.batch_size == 8
        for world_size in (2, 4):
            share = 8 // world_size
            for rank in range(world_size):
                mine = prepared[world_size, rank][step]
                assert mine.offset == rank * share and np.array_equal(mine.indices, one.indices)
                assert mine.num_valid_tokens == one.num_valid_tokens and not mine.modality_tokens_global
                expected = _rows(one.batch, rank * share, (rank + 1) * share)
                for name, value in _rows(mine.batch, 0, share).items():
                    assert torch.equal(value, expected[name]), (world_size, rank, name)
                micro = torch.cat([part.enc_tokens for part in mine.micro_batches])
                assert torch.equal(micro, expected["enc_tokens"])
            summed = sum(prepared[world_size, rank][step].modality_tokens for rank in range(world_size))
            assert np.array_equal(summed, one.modality_tokens)  # what the loop sums over processes
        assert np.array_equal(one.modality_tokens, tokens_per_modality(one.batch))
        assert one.modality_tokens_global and one.num_valid_tokens == one.batch.num_valid_tokens()


def test_the_sample_stream_masks_like_the_batch_stream_in_distribution():
    """Budgets filled, inputs and targets disjoint, the Dirichlet's mean split, as the batch stream."""
    from pairless.training import sample_random

    specs = {name: SPECS[name] for name in ("rgb", "depth", "normal")}
    masker = Masker(specs, MaskingConfig(input_budget=12, target_budget=12, empty_input_fraction=0.0))
    tokens = {name: torch.randint(0, spec.vocab_size, (2000, spec.num_tokens),
                                  generator=torch.Generator().manual_seed(0)) for name, spec in specs.items()}
    views = torch.ones(2000, 3, dtype=torch.bool)
    keys = sample_random.sample_keys(derive_seed(0, MASKING_STREAM, 7), np.arange(2000))
    sampled = masker.mask_samples(tokens, views, keys)
    batched = masker(tokens, views, seeded_generator(0, MASKING_STREAM, 7))
    for batch in (sampled, batched):
        assert (batch.enc_valid.sum(1) == 12).all() and (batch.dec_valid.sum(1) == 12).all()
    shares = [np.bincount(batch.dec_modality[batch.dec_valid].numpy(), minlength=3) / (2000 * 12)
              for batch in (sampled, batched)]
    assert np.allclose(shares[0], 1 / 3, atol=0.02) and np.allclose(shares[1], 1 / 3, atol=0.02)
    assert not torch.equal(sampled.enc_positions, batched.enc_positions)  # two different streams


def test_the_masking_stream_is_part_of_a_run_key():
    """Runs cached with the batch stream keep their key; the sample stream (the default) gets new ones."""
    assert ADDED_OPTIONS["masking_stream"] == "batch"
    assert "masking_stream" not in without_added_options({"masking_stream": "batch"})
    assert without_added_options({"masking_stream": "sample"}) == {"masking_stream": "sample"}


def test_the_batch_stream_trains_as_before(shards, tmp_path):
    """masking_stream=batch masks every step's global batch with one generator of (seed, step)."""
    config = _config(shards, tmp_path / "run", masking_stream="batch", batch_size=8)
    data, order = training_data(config)
    masker = Masker(data.specs, config.masking, data.modalities)
    prepared = BatchSource(data, order, masker, config.seed, 0, own=(4, 8), stream="batch").get(2)
    whole = masker(*data.gather(order.indices(2)), seeded_generator(config.seed, MASKING_STREAM, 2))
    assert torch.equal(prepared.batch.dec_tokens, whole.dec_tokens[4:])
    assert np.array_equal(prepared.modality_tokens, tokens_per_modality(whole))


def _tiny_model(**changes) -> tuple[FourM, object]:
    torch.manual_seed(0)
    model = FourM(ModelConfig(dim=32, heads=2, encoder_layers=2, decoder_layers=2, **changes), SPECS)
    masker = Masker(SPECS, MaskingConfig(input_budget=12, target_budget=12))
    generator = torch.Generator().manual_seed(1)
    tokens = {name: torch.randint(3, min(spec.vocab_size, 12), (6, spec.num_tokens), generator=generator)
              for name, spec in SPECS.items()}
    return model, masker(tokens, torch.ones(6, len(SPECS), dtype=torch.bool), generator)


def test_the_forward_and_backward_never_read_a_device_value():
    """On the meta device every read of a value (.item(), bool(), nonzero) raises: with the target rows found
    on the host, the training forward, its backward and the step's health record need none."""
    model, plain = _tiny_model()
    batch = with_target_rows(plain)
    meta = FourM(model.config, SPECS).to("meta")
    loss, losses = meta(batch.to("meta"))
    loss.backward()
    stats = StepStatistics.zeros(len(SPECS), torch.device("meta"))
    stats.add(loss, losses, list(SPECS))
    StepHealth(len(SPECS), torch.device("meta")).record(stats, loss.detach(), 0, np.arange(6))
    with pytest.raises((RuntimeError, NotImplementedError)):
        meta(plain.to("meta"))  # without the rows the forward finds them with nonzero: it needs the values


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    model, batch = _tiny_model(dropout=0.1)
    results = []
    for checkpointed in (False, True):
        model.zero_grad()
        torch.manual_seed(5)  # dropout: the recompute replays the same masks
        loss, _ = model(batch, checkpoint_blocks=checkpointed)
        loss.backward()
        results.append((loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    assert torch.equal(results[0][0], results[1][0])
    for name, gradient in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], gradient, rtol=0, atol=0, msg=name)


def test_compiled_blocks_give_the_outputs_of_eager_ones():
    model, batch = _tiny_model()
    model.eval()
    with torch.no_grad():
        eager = model.logits(batch)
    for block in [*model.encoder, *model.decoder]:
        block.compile()
    with torch.no_grad():
        compiled = model.logits(batch)
    finite = torch.isfinite(eager)
    assert torch.equal(finite, torch.isfinite(compiled))
    torch.testing.assert_close(compiled[finite], eager[finite], rtol=1e-4, atol=1e-5)
    assert set(model.state_dict()) == set(FourM(model.config, SPECS).state_dict())  # checkpoints unchanged


def test_ddp_skips_the_unused_parameter_search_and_every_head_gets_a_gradient(tmp_path):
    """One gloo process is enough for DDP to check that every parameter got its gradient in the step before
    (it raises otherwise); the micro-batch here predicts one modality only."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model, batch = _tiny_model()
        context = distributed.ProcessContext(0, 2, 0, torch.device("cpu"), False)
        network = distributed.wrap_model(model, context)
        assert not network.find_unused_parameters
        only_rgb = with_target_rows(batch.__class__(**{
            **{f.name: getattr(batch, f.name) for f in fields(batch)},
            "dec_valid": batch.dec_valid & (batch.dec_modality == 0)}))
        for _ in range(3):
            loss, losses = network(only_rgb, touch_unused_heads=True)  # as the training step calls it
            loss.backward()
            assert list(losses) == ["rgb"]
        assert all(parameter.grad is not None for parameter in model.parameters())
        # without the zero term the unused heads get no gradient and DDP refuses the next step
        bare = distributed.wrap_model(_tiny_model()[0], context)
        bare(only_rgb)[0].backward()
        with pytest.raises(RuntimeError, match="reduction"):
            bare(only_rgb)[0].backward()
    finally:
        dist.destroy_process_group()


def test_asynchronous_checkpoints_resume_exactly(shards, tmp_path):
    common = dict(checkpoint_every=3, log_every=1, checkpoint_writes="async")
    reference = train(_config(shards, tmp_path / "reference", checkpoint_writes="sync"))
    run = tmp_path / "run"
    train(_config(shards, run, stop_after_steps=5, **common))
    assert read_state(latest_checkpoint(run / "checkpoints") / STATE_FILE).step == 5
    train(_config(shards, run, **common), resume=True)
    losses = [[json.loads(line)["loss"] for line in (folder / "log.jsonl").read_text().splitlines()]
              for folder in (reference, run)]
    assert losses[0] == losses[1]
    final = [model_module.load_model(folder / "model.safetensors").state_dict()
             for folder in (reference, run)]
    assert all(torch.equal(final[0][name], final[1][name]) for name in final[0])


def test_checks_happen_only_at_the_steps_that_log_save_or_stop(shards, tmp_path, monkeypatch):
    steps = []
    original = StepHealth.check

    def counted(self, stats, stop_request, progress, session):
        steps.append(progress.step)
        return original(self, stats, stop_request, progress, session)

    monkeypatch.setattr(StepHealth, "check", counted)
    train(_config(shards, tmp_path / "run", log_every=4, checkpoint_every=6, stop_after_steps=9))
    assert steps == [4, 6, 8, 9]


def test_per_sample_gamma_draws_have_the_gamma_moments_and_do_not_depend_on_the_batching():
    from pairless.training import sample_random

    keys = sample_random.sample_keys(11, np.arange(20000))
    concentration = np.array([[0.3, 0.5, 1.0, 2.5]] * 20000)
    draws = sample_random.gamma(keys, concentration)
    assert np.allclose(draws.mean(0), [0.3, 0.5, 1.0, 2.5], rtol=0.05)  # Gamma(a, 1): mean a, variance a
    assert np.allclose(draws.var(0), [0.3, 0.5, 1.0, 2.5], rtol=0.1)
    assert np.array_equal(draws, sample_random.gamma(keys, concentration, first_candidates=1))
    assert np.array_equal(draws[5:9], sample_random.gamma(keys[5:9], concentration[5:9]))


def test_the_totals_without_the_split_are_the_totals_of_the_split():
    """A process counts the whole batch's tokens (the budget) without splitting the other processes' budgets
    across modalities: small views, text lengths, empty inputs and all, the totals agree."""
    from pairless.training import sample_random

    masker = Masker(SPECS, MaskingConfig(input_budget=20, target_budget=14, empty_input_fraction=0.2,
                                         alphas=[0.2, 1.0]))
    generator = torch.Generator().manual_seed(3)
    views = torch.rand(3000, len(SPECS), generator=generator) < 0.5
    lengths = {"caption": torch.randint(0, 11, (3000,), generator=generator).numpy()}
    keys = sample_random.sample_keys(99, np.arange(3000))
    inputs, targets = masker.sample_counts_from_lengths(lengths, views, keys)
    totals = masker.sample_totals_from_lengths(lengths, views, keys)
    assert np.array_equal(totals, (inputs + targets).sum(1).numpy())
