"""The plan (``pairless run RECIPE --dry-run``): per run its model, batch, budget, memory and checkpoint disk;
per stage a time from executed FLOPs over a device profile; the FLOP count against torch's own counter."""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pairless.batch import TokenSpec
from pairless.commands.run import main
from pairless.model import FourM, ModelConfig
from pairless.training.compute import GPU_PROFILES, forward_flops, training_flops
from pairless.training.masking import Masker, MaskingConfig

SPECS = {**{name: TokenSpec(name, "image", 64, 256, grid=(8, 8)) for name in ("rgb", "depth", "normal")},
         "caption": TokenSpec("caption", "sequence", 32, 500, pad_id=0, bos_id=1, eos_id=2)}


@pytest.mark.parametrize(("attention", "tolerance"), [("explicit", 0.03), ("sdpa", 0.10)])
@pytest.mark.parametrize(("batch", "inputs", "targets"), [(32, 64, 64), (8, 48, 96)])
def test_flop_count_matches_torch_counter(attention, tolerance, batch, inputs, targets):
    config = ModelConfig(preset="tiny", attention=attention)
    model = FourM(config, SPECS)
    generator = torch.Generator().manual_seed(0)
    tokens = {name: torch.randint(0, spec.vocab_size, (batch, spec.num_tokens), generator=generator)
              for name, spec in SPECS.items()}
    masked = Masker(SPECS, MaskingConfig(input_budget=inputs, target_budget=targets))(
        tokens, torch.ones(batch, len(SPECS), dtype=torch.bool), generator)
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(masked)
        loss.backward()
    counted = counter.get_total_flops() / batch
    predicted = training_flops(config, SPECS, inputs, targets, batch)
    assert abs(predicted / counted - 1) <= tolerance, (predicted, counted)
    assert forward_flops(config, SPECS, inputs, targets, batch) == pytest.approx(predicted / 3)


def test_dry_run_prints_model_batch_budget_memory_and_disk_per_run(tmp_path, capsys):
    assert main(["demo", "--preset", "micro", "--out", str(tmp_path), "--dry-run", "--device-profile",
                 "h100"]) == 0
    printed = capsys.readouterr().out
    assert "device: NVIDIA H100 SXM: 989 TFLOP/s dense bf16 (stated) x assumed MFU 0.40" in printed
    assert re.search(r"train zs-rgb-depth \(zero-shot\)\s+GPU\s+~\d+ s", printed)
    assert re.search(r"model tiny, 0\.\dM parameters, explicit attention; images 32x32; batch 16 "
                     r"\(micro-batch 16\), 40,000 tokens \(96 per sample, ~417 samples\)", printed)
    assert re.search(r"memory: host \d+ MiB, device \d+ MiB; checkpoints \d+ MiB x 2 kept = \d+ MiB", printed)
    for stage in ("world ", "tokenizers ", "shards (tokenize)", "evaluation (CE, regions, probes)",
                  "generation (figures, decoded)", "estimated time for what is not cached"):
        assert stage in printed, stage
    assert not tmp_path.joinpath("demo").exists()  # a plan writes nothing


def test_dry_run_on_this_cpu_measures_its_throughput(tmp_path, capsys):
    assert main(["demo", "--preset", "micro", "--out", str(tmp_path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "this CPU: throughput measured" in printed
    assert re.search(r"train many-shot \(many-shot\)\s+CPU\s+~\d", printed)
    assert "device -;" in printed


def test_paper_preset_fits_one_h100_and_says_when_a_run_does_not(tmp_path, capsys):
    assert main(["visual-pairs", "--preset", "paper", "--out", str(tmp_path), "--dry-run",
                 "--device-profile", "h100"]) == 0
    printed = capsys.readouterr().out
    larger = printed[printed.index("train larger"):]
    assert "model large, 723" in larger and "batch 256 (micro-batch 128)" in larger
    assert "DOES NOT FIT" not in printed
    # the same run in one pass of 256 does not fit, and the plan says what to change
    assert main(["visual-pairs", "--preset", "paper", "--out", str(tmp_path), "--dry-run", "--device-profile",
                 "h100", "--set", "runs.4.train.micro_batch_size=null"]) == 0
    printed = capsys.readouterr().out
    assert "DOES NOT FIT: needs" in printed and "micro_batch_size=128" in printed
    assert GPU_PROFILES["h100"].memory_gb == 80.0
