"""The dry run's time estimate against the measured times of the tiny study on this CPU.

For every run recorded in ``docs/results/*/results.json`` with a training time (``train_seconds``, from the
run's COMPLETE.json), rebuilds its TrainConfig from the recorded experiment config, estimates its time the
way ``pairless run RECIPE --dry-run --device-profile cpu`` does (executed FLOPs over the throughput of a few
real training steps of that model, measured now: pairless.training.compute), and prints both with their
ratio; then the median ratio and the share of runs within 30%.

The recorded times were made on another day, at another load: identical configs differ by up to 2.6x
between seeds there (pairs-curve pairs-k64: 730 and 253 s). ``--now STEPS`` also trains a tiny run of the
study's shape on random tokens at this moment and compares the estimate with its measured wall time, which
checks the method itself, whatever the machine's load.

Timings depend on the machine's load: run it on an idle machine (``flock /tmp/pairless-cpu.lock``) with the
thread count the study ran with (2 on the 2-core machine the results were made on).

    python benchmarks/plan_estimate.py [--results docs/results] [--seconds 3] [--now 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from pairless.experiments import stages
from pairless.experiments.estimate import Throughput, estimate_run, planned_specs
from pairless.experiments.experiment import ExperimentConfig
from pairless.experiments.plan import WORLD_MODALITIES
from pairless.tokenizers.train import preset_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("docs/results"))
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent measuring each run shape")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--now", type=int, default=0, metavar="STEPS",
                        help="also train a tiny run of STEPS steps now and compare (0: no)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    throughput = Throughput(None, args.seconds)
    ratios = []
    print(f"{'results':<28} {'run':<28} {'model':<6} {'measured s':>10} {'estimated s':>11} {'ratio':>6}")
    for path in sorted(args.results.glob("*/results.json")):
        results = json.loads(path.read_text())
        config = ExperimentConfig.model_validate(results["config"])
        if config.data is not None:
            continue  # own data: its shards are not here
        settings = preset_config(config.tokenizers.preset, seed=config.tokenizers.seed)
        modalities = config.tokenizers.modalities or WORLD_MODALITIES
        specs, _ = planned_specs(config.world.size, settings, modalities)
        runs = {run.name: run for run in config.expanded_runs()}
        for name, info in results.get("runs", {}).items():
            if name not in runs or not info.get("train_seconds"):
                continue
            run = runs[name]
            train = stages.train_config(run, Path("shards"), Path("out"))
            run_specs = {key: spec for key, spec in specs.items()
                         if run.universe is None or key in run.universe}
            factor = 1.0
            if train.budget_modalities:
                factor = max(1.0, len(run_specs) / max(1, len(train.budget_modalities)))
            estimate = estimate_run(train, run_specs, throughput, factor)
            ratio = estimate.seconds / info["train_seconds"]
            ratios.append(ratio)
            print(f"{path.parent.name:<28} {name:<28} {run.model_preset:<6} {info['train_seconds']:>10.0f} "
                  f"{estimate.seconds:>11.0f} {ratio:>6.2f}", flush=True)
    if args.now:
        _train_now(args.now, throughput)
    if not ratios:
        print("no timed runs found", file=sys.stderr)
        return 1
    within = sum(abs(ratio - 1) <= 0.30 for ratio in ratios) / len(ratios)
    rates = ", ".join(f"{rate / 1e12:.3f}" for rate in throughput.measured.values())
    print(f"\n{len(ratios)} runs: median estimated/measured {statistics.median(ratios):.2f}, "
          f"{within:.0%} within 30%; measured CPU throughput per run shape (TFLOP/s): {rates}; "
          f"{torch.get_num_threads()} torch threads")
    return 0


def _train_now(steps: int, throughput: Throughput) -> None:
    """A tiny run of the study's shape on random tokens, trained now, against its estimate."""
    import tempfile

    import numpy as np

    from pairless.batch import TokenSpec
    from pairless.config import validate
    from pairless.data.shards import ShardSplit, write_shards
    from pairless.training.config import TrainConfig
    from pairless.training.train import train

    specs = {**{name: TokenSpec(name, "image", 64, vocab, grid=(8, 8))
                for name, vocab in (("rgb", 1000), ("depth", 125), ("normal", 200), ("semseg", 64))},
             "embed": TokenSpec("embed", "vector", 16, 1000),
             "caption": TokenSpec("caption", "sequence", 64, 200, pad_id=0, bos_id=1, eos_id=2),
             "det": TokenSpec("det", "sequence", 48, 200, pad_id=0, bos_id=1, eos_id=2)}
    rng = np.random.default_rng(0)

    def split(count: int) -> ShardSplit:
        return ShardSplit([f"s{index}" for index in range(count)],
                          {name: rng.integers(3, spec.vocab_size, (count, spec.num_tokens))
                           for name, spec in specs.items()},
                          {name: np.ones(count, dtype=bool) for name in specs})

    with tempfile.TemporaryDirectory() as folder:
        shards = write_shards(Path(folder) / "shards", {"train": split(512), "val": split(8)}, specs, {})
        config = validate(TrainConfig, {"shards": str(shards), "out": str(Path(folder) / "run"),
                                        "total_tokens": 32 * 128 * steps, "device": "cpu",
                                        "num_threads": torch.get_num_threads(), "checkpoint_every": 10**6})
        estimate = estimate_run(config, specs, throughput)
        train(config)
        measured = json.loads((Path(folder) / "run" / "COMPLETE.json").read_text())["wall_seconds"]
    print(f"now: a tiny run of {steps} steps, estimated {estimate.seconds:.1f} s, measured {measured:.1f} s, "
          f"ratio {estimate.seconds / measured:.2f}")


if __name__ == "__main__":
    sys.exit(main())
