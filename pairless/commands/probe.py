"""``pairless probe RUN --pair rgb:depth``: alignment of the encoder's Ma-only and Mb-only encodings.

Writes ``RUN/probes.json`` (merged with pairs probed before) and prints one table per pair (encoder layer x
metric: retrieval recall@1/@10, FOSCTTM, mutual kNN, linear CKA). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.commands.runtime import add_runtime_arguments, resolve_runtime
from pairless.inference.known import know_modalities
from pairless.inference.probes import format_table, probe_run, record_probes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path,
                        help="training run folder (holds config.json and model.safetensors)")
    parser.add_argument("--pair", required=True,
                        help="comma-separated A:B pairs to probe, e.g. rgb:depth or rgb:depth,rgb:normal")
    parser.add_argument("--num-samples", type=int, default=1000,
                        help="held-out samples with both modalities (the first ones, in shard order)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--split", default="val")
    parser.add_argument("--shards", type=Path, default=None, help="token shards (default: the run's own)")
    add_runtime_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pairs = [text.strip() for text in args.pair.split(",") if text.strip()]
    results = {}
    try:
        runtime = resolve_runtime(args)
        know_modalities(args.run, shards=args.shards)
        for pair in pairs:
            result = probe_run(args.run, pair, args.num_samples, args.batch_size, runtime.threads, args.split,
                               args.shards, device=runtime.device)
            results[result["pair"]] = result
    except (ValueError, FileNotFoundError) as error:
        print(f"pairless probe: {error}", file=sys.stderr)
        return 2
    output = record_probes(args.run, results)
    print("\n\n".join(format_table(result) for result in results.values()))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
