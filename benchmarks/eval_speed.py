"""Translation cross-entropy speed: seconds for N held-out samples of one direction
(target: 2,500 in <= 60 s).

    python benchmarks/eval_speed.py                          # tiny preset, rgb:depth, 2,500 samples
    python benchmarks/eval_speed.py --batch-sizes 64 128 256 --repeats 3 --threads 1 2
    python benchmarks/eval_speed.py --shards SHARDS   # real token specs (and tokens), not synthetic

An untrained model of the preset is timed (speed does not depend on the
weights). Without ``--shards`` the token layout mirrors the tiny world
(32x32 images as 8x8 tokens over a 1,000-entry FSQ codebook, text up to 56
wordpieces of a 2,000 vocabulary). Prints figures only; the machine's load
average is printed alongside, since the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

from pairless.batch import TokenSpec
from pairless.inference.evaluate import parse_direction, translation_ce
from pairless.model import FourM, ModelConfig


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"(load average {one:.1f} / 5 min {five:.1f}, {os.cpu_count()} cores)"


def tiny_world_specs() -> dict[str, TokenSpec]:
    image = {name: TokenSpec(name, "image", 64, 1000, grid=(8, 8))
             for name in ("rgb", "depth", "normal", "semseg")}
    text = {name: TokenSpec(name, "sequence", length, 2000, pad_id=0, bos_id=2, eos_id=3)
            for name, length in (("det", 40), ("caption", 56))}
    return {**image, **text, "embed": TokenSpec("embed", "vector", 16, 1000)}


def synthetic_shards(specs: dict[str, TokenSpec], num: int, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    tokens = {}
    for name, spec in specs.items():
        values = rng.integers(4, spec.vocab_size, (num, spec.num_tokens)).astype(np.int32)
        if spec.kind == "sequence":
            lengths = rng.integers(spec.num_tokens // 2, spec.num_tokens, num)
            for row, used in enumerate(lengths):
                values[row, used - 1] = spec.eos_id
                values[row, used:] = spec.pad_id
        tokens[name] = values
    present = {name: np.ones(num, dtype=bool) for name in specs}
    return SimpleNamespace(specs=specs, tokens=tokens, present=present, ids=[str(i) for i in range(num)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--direction", default="rgb:depth")
    parser.add_argument("--num-samples", type=int, default=2500)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[0],
                        help="torch CPU threads to compare, interleaved (0 = the automatic choice)")
    parser.add_argument("--shards", default=None)
    args = parser.parse_args()
    if args.shards:
        from pairless.data.shards import open_shards

        shards = open_shards(args.shards, "val")
    else:
        shards = synthetic_shards(tiny_world_specs(), args.num_samples)
    torch.manual_seed(0)
    model = FourM(ModelConfig.from_preset(args.preset), shards.specs).eval()
    src, dst = parse_direction(args.direction)
    print(f"eval speed: preset {args.preset}, {args.direction}, {args.num_samples} samples, "
          f"torch default {torch.get_num_threads()} threads {load()}")
    translation_ce(model, shards, src, dst, 64, 64)  # warm-up
    for batch_size in args.batch_sizes:
        seconds: dict[int, list[float]] = {threads: [] for threads in args.threads}
        for _ in range(args.repeats):
            for threads in args.threads:  # interleaved, so that every setting sees the same machine load
                start = time.perf_counter()
                result = translation_ce(model, shards, src, dst, args.num_samples, batch_size,
                                        threads=threads or None)
                seconds[threads].append(time.perf_counter() - start)
        for threads, runs in seconds.items():
            median = statistics.median(runs)
            print(f"  batch {batch_size:>4}, threads {threads or 'auto'}: median {median:6.1f} s over "
                  f"{args.repeats} "
                  f"(runs {', '.join(f'{s:.1f}' for s in runs)}); {result['num_samples'] / median:,.0f} "
                  "samples/s; "
                  f"conditional + unconditional passes, {result['num_tokens']:,} target tokens {load()}")
    print("target: 2,500 samples in <= 60 s")


if __name__ == "__main__":
    main()
