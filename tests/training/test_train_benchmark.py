"""The training benchmark's FLOP accounting and its output line (benchmarks/train_throughput.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pairless.model import FourM, ModelConfig

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("preset", ["tiny", "anchor"])
def test_executed_flops_match_torchs_own_count_of_a_training_step(bench, preset):
    torch.manual_seed(0)
    batch = bench.make_batches(bench.anchor_specs(), 8, 1)[0][0]
    model = FourM(ModelConfig.from_preset(preset, attention="explicit"), bench.anchor_specs())
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(batch)
        loss.backward()
    counted = counter.get_total_flops()
    executed = bench.step_flops(model, batch)
    # torch also counts the output-head rows padded up to a bucket and the first layer's input gradients,
    # which the benchmark leaves out: a little more, never less
    assert 0.9 * counted < executed <= counted
    # the 6 x parameters x tokens convention counts every parameter for every token: over twice as much here
    assert bench.model_flops(model, batch) == 6.0 * model.num_parameters() * batch.num_valid_tokens()
    assert bench.model_flops(model, batch) > 2 * executed


def test_prints_one_line_per_configuration_in_the_issues_format(bench, capsys):
    code = bench.main(["--configs", "tiny", "--dtypes", "bf16", "--attention", "explicit", "--batch-size",
                       "4",
                       "--warmup", "1", "--steps", "1", "--threads", "1"])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(lines) == 1
    assert re.match(r"^tiny/explicit bf16 tokens/s=\d+ mfu=\d+\.\d\d mfu_executed=\d+\.\d\d ",
                    lines[0]), lines[0]
