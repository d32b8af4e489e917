"""Input pipeline throughput at the ``paper`` preset's shape, next to the GPU step time it must feed.

What one process prepares per step, on one CPU core (torch and numpy on one thread): gather the global
batch's tokens from memory, mask its own rows (the ``sample`` stream: a rank of R masks 256 / R samples),
count the whole batch's tokens for the budget, cut its micro-batch and find its target rows on the host.
Pinning is left out (no GPU here). The older ``batch`` stream, where every rank masks the whole global
batch, is timed beside it.

The paper shape: batch 256, 128 input + 128 target tokens per sample (``pairless.experiments.scale``), the
world at 64 px through the ``base`` tokenizers: rgb, depth, normal and semseg as 16 x 16 = 256 tokens
(vocabulary 1,000), a caption of 40 and det of 64 tokens (vocabulary 2,000), embed as 16 tokens (1,000);
rgb and depth withheld (each sample sees all but one of them), Dirichlet alpha 0.5.

The step it feeds: the executed training FLOPs of one global batch on the ``base`` model (counted as
``benchmarks/train_throughput.py`` counts them, on the masked batch), divided by an assumed GPU throughput
(default: an H100's dense bf16 peak of 989 TFLOP/s at an MFU of 0.40, the issue's target), split over the
ranks. The pipeline keeps up when its batches/s per core exceed the steps/s it feeds (target: 3x).

Run: .venv/bin/python benchmarks/input_pipeline.py [--ranks 1,8] [--steps 20] [--peak-tflops 989] [--mfu 0.4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pairless.batch import TokenSpec
from pairless.model import FourM, ModelConfig
from pairless.training.data import BatchSource, SampleOrder, TrainingData
from pairless.training.masking import Masker, MaskingConfig

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import model_flops, step_flops  # noqa: E402

BATCH = 256


def paper_specs() -> dict[str, TokenSpec]:
    specs = {name: TokenSpec(name, "image", 256, 1000, grid=(16, 16))
             for name in ("rgb", "depth", "normal", "semseg")}
    specs["caption"] = TokenSpec("caption", "sequence", 40, 2000, pad_id=0, bos_id=2, eos_id=3)
    specs["det"] = TokenSpec("det", "sequence", 64, 2000, pad_id=0, bos_id=2, eos_id=3)
    specs["embed"] = TokenSpec("embed", "vector", 16, 1000)
    return specs


def paper_data(samples: int, seed: int = 0) -> TrainingData:
    """Random tokens of the paper shape; texts of random lengths; rgb and depth never together."""
    generator = np.random.default_rng(seed)
    specs = paper_specs()
    tokens = {}
    for name, spec in specs.items():
        values = generator.integers(4, spec.vocab_size, (samples, spec.num_tokens))
        if spec.kind == "sequence":
            lengths = generator.integers(spec.num_tokens // 4, spec.num_tokens, samples)
            position = np.arange(spec.num_tokens)[None, :]
            values = np.where(position < lengths[:, None], values, np.where(position == lengths[:, None],
                                                                             spec.eos_id, spec.pad_id))
        tokens[name] = values.astype(np.int64)
    views = np.ones((samples, len(specs)), dtype=bool)
    without_depth = generator.random(samples) < 0.5
    views[without_depth, 1] = False
    views[~without_depth, 0] = False
    return TrainingData(specs, tokens, views, [f"s{index}" for index in range(samples)])


def time_pipeline(data: TrainingData, ranks: int, stream: str, steps: int) -> tuple[float, float, object]:
    """Median seconds one rank of ``ranks`` takes to prepare a step, per wall clock and per CPU time of
    this process (which another process's load on the core distorts less); and a prepared batch."""
    masker = Masker(data.specs, MaskingConfig(input_budget=128, target_budget=128, alphas=[0.5]))
    share = BATCH // ranks
    source = BatchSource(data, SampleOrder(len(data), BATCH, seed=0), masker, 0, num_workers=0,
                         own=(0, share), stream=stream, micro=[(0, share)],
                         global_modality_tokens=False)  # as training does without budget_modalities
    source.get(0)
    walls, cpus = [], []
    for step in range(1, steps + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        prepared = source.get(step)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), prepared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,8", help="processes the global batch of 256 is split over")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=4096, help="samples held in memory")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100 SXM)")
    parser.add_argument("--mfu", type=float, default=0.40, help="fraction of the peak a step achieves")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core: the figure is per core
    print(f"# one core (torch threads 1), load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}; "
          "on a shared machine the rates err low")
    data = paper_data(args.samples)
    with torch.device("meta"):  # only the shapes are needed to count FLOPs
        model = FourM(ModelConfig.from_preset("base"), data.specs)
    _, _, whole = time_pipeline(data, 1, "sample", 1)
    flops = step_flops(model, whole.batch)
    throughput = args.peak_tflops * 1e12 * args.mfu
    print(f"# step to feed: base model ({model.num_parameters() / 1e6:.0f}M parameters), batch {BATCH}, "
          f"{whole.num_valid_tokens:,} valid tokens; executed {flops / 1e12:.1f} TFLOP per step "
          f"(6N: {model_flops(model, whole.batch) / 1e12:.1f}); assumed GPU throughput "
          f"{args.peak_tflops:.0f} TFLOP/s bf16 peak x MFU {args.mfu:.2f} = {throughput / 1e12:.0f} TFLOP/s")
    for ranks in (int(value) for value in args.ranks.split(",")):
        step_seconds = flops / ranks / throughput
        for stream in ("sample", "batch"):
            wall, cpu = time_pipeline(data, ranks, stream, args.steps)[:2]
            masks = BATCH // ranks if stream == "sample" else BATCH
            print(f"ranks={ranks} stream={stream} (masks {masks} samples per rank): pipeline "
                  f"{1 / cpu:.1f} batches/s per CPU second ({1e3 * cpu:.1f} ms; wall {1e3 * wall:.1f} ms); "
                  f"GPU step {1e3 * step_seconds:.1f} ms = {1 / step_seconds:.1f} steps/s; "
                  f"ratio {step_seconds / cpu:.1f}x (wall {step_seconds / wall:.1f}x; target >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
