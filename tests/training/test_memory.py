"""The memory model (pairless.training.memory): exact parameter counts, the prediction against the measured
peak of short CPU runs, micro_batch_size="auto", the fit check's words, and out-of-memory in words."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import make_shards, tiny_config_data

from pairless.batch import TokenSpec
from pairless.commands import train as train_command
from pairless.config import validate
from pairless.data.shards import ShardSplit, write_shards
from pairless.model import FourM, ModelConfig
from pairless.training import memory, memory_fit
from pairless.training.config import TrainConfig
from pairless.training.distributed import ProcessContext
from pairless.training.train import train

CPU = ProcessContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), initialized_here=False)
# The prediction's tolerance against a measured peak RSS (it errs high: the fit check must not pass a run
# that then gets killed).
TOLERANCE = 0.25

WIDE_SPECS = {name: TokenSpec(name, "image", num_tokens=64, vocab_size=256, grid=(8, 8))
              for name in ("rgb", "depth", "normal", "semseg")}


def _wide_shards(root: Path, count: int = 80) -> Path:
    """Shards with 256 tokens per sample, so that budgets of 128 + 128 fit."""
    def split(samples: int, seed: int) -> ShardSplit:
        rng = np.random.default_rng(seed)
        tokens = {name: rng.integers(0, 256, (samples, 64)) for name in WIDE_SPECS}
        return ShardSplit([f"s{index:04d}" for index in range(samples)], tokens,
                          {name: np.ones(samples, dtype=bool) for name in WIDE_SPECS})
    return write_shards(root, {"train": split(count, 0), "val": split(8, 1)}, WIDE_SPECS, {"note": "wide"})


@pytest.mark.parametrize("changes", [dict(preset="tiny"), dict(preset="small", bias=True),
                                     dict(preset="tiny", mlp_ratio=3.0, encoder_layers=2),
                                     dict(preset="tiny", mlp="gelu", context_projection=False, bias=True),
                                     dict(preset="tiny", style="ml4m", separate_decoder_modalities=True),
                                     dict(preset="tiny", mlp_ratio=3.3, bias=True)])
def test_parameter_count_is_exact(changes):
    specs = {"rgb": TokenSpec("rgb", "image", 64, 1000, grid=(8, 8)),
             "caption": TokenSpec("caption", "sequence", 32, 500, pad_id=0, bos_id=2, eos_id=3),
             "embed": TokenSpec("embed", "vector", 16, 300)}
    config = ModelConfig(**changes)
    assert memory.parameter_count(config, specs) == FourM(config, specs).num_parameters()


def test_checkpointing_and_sdpa_need_less_than_explicit_attention():
    config = ModelConfig(preset="large", attention="explicit")  # "auto" would be sdpa on cuda
    base = memory.Workload(config, WIDE_SPECS, input_tokens=128, target_tokens=128, micro_batch=64,
                           device_type="cuda")
    sdpa = memory.Workload(**{**base.__dict__, "model": config.model_copy(update={"attention": "sdpa"})})
    checkpointed = memory.Workload(**{**base.__dict__, "activation_checkpointing": True})
    explicit_bytes = memory.activation_bytes(base)
    assert memory.activation_bytes(sdpa) < 0.8 * explicit_bytes
    assert memory.activation_bytes(checkpointed) < 0.2 * explicit_bytes
    # twice the micro-batch: twice the activations; the training state does not change
    double = memory.Workload(**{**base.__dict__, "micro_batch": 128})
    assert memory.activation_bytes(double) == 2 * explicit_bytes
    assert memory.estimate(double).training_state == memory.estimate(base).training_state


PEAK = textwrap.dedent("""
    import resource, subprocess, sys
    subprocess.run(sys.argv[1:], check=True, capture_output=True)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
""")


@pytest.mark.slow
@pytest.mark.parametrize("sets", [
    # weights and AdamW state dominate (70M parameters)
    ["model.preset=base", "model.encoder_layers=4", "model.decoder_layers=4", "batch_size=16"],
    # activations dominate: explicit attention probabilities of 16 heads over 129 keys
    ["model.dim=64", "model.heads=16", "batch_size=64", "masking.input_budget=128",
     "masking.target_budget=128"],
], ids=["state", "activations"])
def test_prediction_is_within_tolerance_of_the_measured_peak(tmp_path, sets):
    shards = _wide_shards(tmp_path / "shards")
    out = tmp_path / "run"
    preset = [item.split("=")[1] for item in sets if item.startswith("model.preset=")] or ["tiny"]
    rest = [item for item in sets if not item.startswith("model.preset=")]
    args = ["train", "--shards", str(shards), "--out", str(out), "--preset", preset[0], "--set",
            "stop_after_steps=2", "--set", "checkpoint_every=1", "--set", "keep_checkpoints=1", "--set",
            "num_threads=1", "--set",
            "device=cpu", *[part for item in rest for part in ("--set", item)]]
    config = train_command.config_from_args(train_command.build_parser().parse_args(args[1:]))
    from pairless.data.shards import read_manifest, specs_from_manifest

    specs = specs_from_manifest(read_manifest(shards), shards)
    predicted = memory.estimate(memory.workload_of(config, specs)).host
    done = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "pairless", *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = int(done.stdout.split()[-1])
    print(f"{sets}: predicted {predicted / memory.GIB:.2f} GiB, measured peak RSS "
          f"{measured / memory.GIB:.2f} GiB")
    assert abs(predicted / measured - 1) <= TOLERANCE, (predicted, measured)


def _large_config(tmp_path, **changes) -> TrainConfig:
    data = tiny_config_data(tmp_path / "shards", tmp_path / "run", batch_size=256, precision="bf16",
                            model={"preset": "large"}, masking={"input_budget": 128, "target_budget": 128})
    data.update(changes)
    return validate(TrainConfig, data)


def test_fit_check_names_the_preset_the_batch_and_what_to_change(tmp_path):
    config = _large_config(tmp_path, device_memory_gb=20)
    with pytest.raises(memory_fit.DoesNotFit) as caught:
        memory_fit.check_fit(config, WIDE_SPECS, CPU)
    message = str(caught.value)
    assert "the large model" in message and "batch 256" in message and "micro-batch 256" in message
    assert "host RAM" in message and "stated (device_memory_gb) is 20.0 GiB" in message
    for advice in ("micro_batch_size=", "model.attention=sdpa", "distributed=fsdp"):
        assert advice in message, advice
    # activation checkpointing is offered wherever this version's config has the option
    key = memory_fit.checkpointing_key(config)
    assert (key is None) or f"--set {key}=true" in message


def test_auto_micro_batch_is_the_largest_divisor_that_fits(tmp_path):
    config = _large_config(tmp_path, device_memory_gb=20, micro_batch_size="auto")
    chosen = memory_fit.check_fit(config, WIDE_SPECS, CPU)
    assert 256 % chosen == 0 and chosen < 256
    available = 20 * memory.GIB
    fits = memory.needed(memory.estimate(memory.workload_of(config, WIDE_SPECS, micro_batch=chosen)))[0]
    assert fits <= available
    larger = [size for size in memory_fit.divisors(256) if size > chosen]
    assert all(memory.needed(memory.estimate(memory.workload_of(config, WIDE_SPECS, micro_batch=size)))[0]
               > available for size in larger)
    with pytest.raises(memory_fit.DoesNotFit, match="does not fit even at micro-batch 1"):
        memory_fit.check_fit(_large_config(tmp_path, device_memory_gb=5, micro_batch_size="auto"), WIDE_SPECS,
                         CPU)


def test_paper_preset_fits_an_80_gb_gpu_with_the_options_it_needs(tmp_path):
    """The paper preset's larger run (large, batch 256, 128 + 128 tokens) on one 80 GB GPU."""
    specs = {**{name: TokenSpec(name, "image", 256, 1000, grid=(16, 16))
                for name in ("rgb", "depth", "normal", "semseg")},
             "embed": TokenSpec("embed", "vector", 16, 1000),
             "caption": TokenSpec("caption", "sequence", 64, 2000, pad_id=0, bos_id=2, eos_id=3),
             "det": TokenSpec("det", "sequence", 64, 2000, pad_id=0, bos_id=2, eos_id=3)}
    config = _large_config(tmp_path)
    gpu = 80 * 10**9
    whole = memory.estimate(memory.workload_of(config, specs, device_type="cuda"))
    assert whole.device > gpu  # explicit attention, one micro-batch of 256: too much
    sdpa = config.model_copy(update={"model": config.model.model_copy(update={"attention": "sdpa"})})
    fits = memory.estimate(memory.workload_of(sdpa, specs, device_type="cuda", micro_batch=128))
    assert fits.device < gpu


def test_out_of_memory_in_a_step_is_reported_in_words(tmp_path, monkeypatch, capsys):
    shards = make_shards(tmp_path / "shards")
    calls = {"count": 0}
    original = FourM.forward

    def failing(self, batch, **loss_settings):
        calls["count"] += 1
        if calls["count"] == 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 33554432 "
                               "bytes. Error code 12 (Cannot allocate memory)")
        return original(self, batch, **loss_settings)

    monkeypatch.setattr(FourM, "forward", failing)
    config = validate(TrainConfig, tiny_config_data(shards, tmp_path / "run"))
    with pytest.raises(memory_fit.DoesNotFit) as caught:
        train(config)
    message = str(caught.value)
    assert "ran out of memory during step 2" in message and "can't allocate memory" in message
    assert "micro-batch 16" in message and "a smaller model preset" in message


def test_out_of_memory_in_a_save_is_reported_by_the_command(tmp_path, monkeypatch, capsys):
    shards = make_shards(tmp_path / "shards")

    def failing(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("pairless.model.weights.atomic_write_safetensors", failing)
    code = train_command.main(["--shards", str(shards), "--out", str(tmp_path / "run"), "--set",
                               "model.dim=32", "--set", "model.heads=2", "--set", "checkpoint_every=2",
                               "--set", "masking.input_budget=12", "--set", "masking.target_budget=12",
                               "--set", "device=cpu"])
    error = capsys.readouterr().err
    assert code == 1
    assert "ran out of memory during the checkpoint save after step 2 (MemoryError)" in error
    assert "Traceback" not in error
    assert not list((tmp_path / "run" / "checkpoints").glob(".step-*"))  # the staging folder went too
