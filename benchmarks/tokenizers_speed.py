"""Tokenizer speed: training time per tokenizer and in total, bf16 vs fp32, tokenizing throughput.

    python benchmarks/tokenizers_speed.py --data /tmp/w20k            # world of >= 20k scenes at 32x32
    python benchmarks/tokenizers_speed.py --scenes 22000               # render the world first
    python benchmarks/tokenizers_speed.py --data /tmp/w20k --tokenizers /tmp/tok20k   # reuse trained ones

Prints figures only (never fails a test run). The machine's load average is
printed next to every figure, since shared machines distort timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"(load average {one:.1f} / 5 min {five:.1f}, {os.cpu_count()} cores)"


def bf16_ratio(data: Path, repeats: int = 3, steps: int = 5) -> None:
    """Median seconds per training step and per encode, bf16 autocast vs fp32, interleaved in one run."""
    from pairless.data import open_dataset
    from pairless.tokenizers.neural_training import build_spatial, preset_config, train_neural

    values = np.asarray(open_dataset(data, "train").column("rgb")[0][:2048])
    config = preset_config("tiny")
    timings: dict[str, list[float]] = {"train bf16": [], "train fp32": [], "encode bf16": [],
                                       "encode fp32": []}
    for _ in range(repeats):
        for bf16 in (True, False):
            name = "bf16" if bf16 else "fp32"
            tokenizer = build_spatial("rgb", values, config)
            result = train_neural(tokenizer, values, config.spatial, steps=steps, seed=0, bf16=bf16,
                                  threads=torch.get_num_threads())
            timings[f"train {name}"].append(result["seconds"] / steps)
            started = time.perf_counter()
            tokenizer.encode(values, autocast=bf16)
            timings[f"encode {name}"].append(time.perf_counter() - started)
    medians = {key: statistics.median(value) for key, value in timings.items()}
    print(f"rgb tokenizer, batch {config.spatial.batch_size}: train step bf16 "
          f"{medians['train bf16'] * 1e3:.0f} ms, "
          f"fp32 {medians['train fp32'] * 1e3:.0f} ms "
          f"(x{medians['train fp32'] / medians['train bf16']:.2f}); "
          f"encode {len(values)} images bf16 {medians['encode bf16']:.2f} s, fp32 "
          f"{medians['encode fp32']:.2f} s "
          f"(x{medians['encode fp32'] / medians['encode bf16']:.2f}) {load()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="world dataset (default: render one with --scenes)")
    parser.add_argument("--scenes", type=int, default=22000)
    parser.add_argument("--tokenizers", type=Path, help="trained tokenizers to reuse (skips training)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: by load)")
    args = parser.parse_args(argv)
    from pairless.config import apply_overrides
    from pairless.tokenizers.build import train_all
    from pairless.tokenizers.encode_dataset import tokenize_dataset
    from pairless.tokenizers.neural_training import preset_config
    from pairless.utils.storage import read_json
    from pairless.utils.threads import choose_threads

    scratch = Path(tempfile.mkdtemp(prefix="tokenizers-speed-"))
    data = args.data
    if data is None:
        from pairless.world.write import main as world_main

        data = scratch / "world"
        world_main(["--out", str(data), "--num-scenes", str(args.scenes), "--size", "32"])
    torch.set_num_threads(choose_threads(args.threads))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads {load()}")
    if not args.skip_bf16:
        bf16_ratio(data)
    tokenizers = args.tokenizers
    if tokenizers is None:
        tokenizers = scratch / "tokenizers"
        config = apply_overrides(preset_config(args.preset),
                                 [*args.overrides, f"threads={torch.get_num_threads()}"])
        started = time.perf_counter()
        info = train_all(data, tokenizers, config)
        total = time.perf_counter() - started
        for modality, record in info.items():
            print(f"train {modality:8s} {record['train_seconds']:7.1f} s  ({record['num_train_samples']} "
                  f"samples) {load()}")
        print(f"train total    {total:7.1f} s  preset {args.preset}")
        from pairless.tokenizers.reconstruction import write_report

        print(write_report(tokenizers, data, "val"))
    else:
        for marker in sorted(tokenizers.glob("*/COMPLETE.json")):
            record = read_json(marker)
            if "train_seconds" in record:
                print(f"train {marker.parent.name:8s} {record['train_seconds']:7.1f} s, "
                      f"{record.get('threads')} thread(s) (recorded in {marker})")
    from pairless.data import list_splits, open_dataset

    num_scenes = sum(len(open_dataset(data, split)) for split in list_splits(data))
    started = time.perf_counter()
    tokenize_dataset(data, tokenizers, scratch / "shards")
    seconds = time.perf_counter() - started
    print(f"tokenize {num_scenes} scenes (all modalities, incl. reading and writing): {seconds:.1f} s = "
          f"{num_scenes / seconds:.0f} scenes/s {load()}")
    print(f"scratch folder: {scratch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
