"""Alignment-probe speed: seconds to probe one pair of one run (target: 1,000 samples in <= 30 s).

    python benchmarks/probe_speed.py                               # tiny preset, rgb:depth, 1,000 samples
    python benchmarks/probe_speed.py --pair rgb:caption --threads 1 --batch-size 256

An untrained model of the preset is timed (speed does not depend on the weights) on synthetic tokens with
the tiny world's layout (see eval_speed.py). The time covers what ``pairless probe`` does after loading:
encoding both modalities alone (bf16) and every metric at every encoder layer, plus the shuffled control;
the encoding and the metrics are also timed apart. Prints figures only, with the machine's load average.
"""

from __future__ import annotations

import argparse
import time

import torch
from eval_speed import load, synthetic_shards, tiny_world_specs

from pairless.inference.evaluate import eligible_samples
from pairless.inference.generate import precision
from pairless.inference.probes import alignment_metrics, pooled_encodings, probe_model
from pairless.modalities import parse_pair
from pairless.model import FourM, ModelConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--pair", default="rgb:depth")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's count)")
    args = parser.parse_args()
    first, second = parse_pair(args.pair)
    shards = synthetic_shards(tiny_world_specs(), args.num_samples)
    torch.manual_seed(0)
    model = FourM(ModelConfig.from_preset(args.preset), shards.specs).eval()
    print(f"probe speed: preset {args.preset}, {args.pair}, {args.num_samples} samples, batch "
          f"{args.batch_size}, {args.threads or torch.get_num_threads()} threads {load()}")
    start = time.perf_counter()
    result = probe_model(model, shards, first, second, args.num_samples, args.batch_size, args.threads)
    total = time.perf_counter() - start
    indices = eligible_samples(shards, [first, second], args.num_samples)
    start = time.perf_counter()
    with torch.inference_mode(), precision(torch.device("cpu")):
        encoded = [pooled_encodings(model, shards, name, indices, args.batch_size, model.modalities)
                   for name in (first, second)]
    encoding = time.perf_counter() - start
    start = time.perf_counter()
    alignment_metrics(encoded[0][-1], encoded[1][-1])
    one_layer = time.perf_counter() - start
    print(f"  total {total:.1f} s for {result['num_samples']} samples and {len(result['layers'])} layers "
          f"(+ the shuffled control); encoding both modalities {encoding:.1f} s, the metrics of one layer "
          f"{one_layer:.2f} s {load()}")
    print("target: 1,000 samples in <= 30 s")


if __name__ == "__main__":
    main()
