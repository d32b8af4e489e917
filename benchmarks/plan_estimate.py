"""The dry run's time estimate per stage against measured times on this CPU.

Two sources of measured times:

- ``--recipe NAME [--preset P] [--data DIR] --out DIR``: plans the recipe (the estimate ``pairless run NAME
  --dry-run`` prints, on this CPU), runs it, and holds every stage's estimate against the time the runner
  recorded (results.json ``timings_seconds``; tokenizers and shards are split with the tokenizers'
  ``timings.json``). Give a fresh ``--out``: cached stages take no time.
- the default: every ``docs/results/*/results.json`` of the built-in world: each stage the committed run
  actually executed (a nonzero time) against the estimate for its recorded config, planned with what that
  invocation found cached (the runs and stages it timed at 0 s, and the pseudo-pairs of those runs); the
  evaluation, regions, probes, snapshots and figures of an invocation that found some runs cached are left
  out (which of their per-run files it found is not recorded). Those times were made on another day, by
  the code of that day, on a 2-core machine shared with other work: identical configs differ by up to 2.6x
  there (pairs-curve pairs-k64: 730 and 253 s).
- ``--measured RECIPE_DIR ...``: the recipe folders of fresh runs made earlier with ``--recipe``, estimated
  again now (after a change to the estimate, against the same measured times).

Prints one line per stage (estimate, measured, ratio) and the median ratio and the share within 30%.
Timings depend on the machine's load: run it alone (``flock /tmp/pairless-cpu.lock``), with the thread
count the runs used (2 on the 2-core machine).

    python benchmarks/plan_estimate.py [--results docs/results] [--seconds 1]
    python benchmarks/plan_estimate.py --recipe demo --preset quick --out /tmp/plan-demo
    python benchmarks/plan_estimate.py --recipe own-data --data DIR --compare rgb:depth --preset quick \
        --out /tmp/plan-own
    python benchmarks/plan_estimate.py --measured /tmp/plan-demo/demo /tmp/plan-own/own-data
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from pairless.experiments.estimate import Throughput
from pairless.experiments.experiment import ExperimentConfig
from pairless.experiments.inference_work import CacheState
from pairless.experiments.plan import plan_stages
from pairless.experiments.runner import Plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("docs/results"))
    parser.add_argument("--recipe", help="plan and run this recipe now, and compare")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--data", help="own-data: the folder")
    parser.add_argument("--compare", action="append", default=[], help="own-data: A:B (repeatable)")
    parser.add_argument("--out", type=Path, help="with --recipe: a fresh output folder")
    parser.add_argument("--measured", type=Path, nargs="+",
                        help="recipe folders of fresh runs made earlier: estimate them again now")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="timing per measured shape (the dry run's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the runs' count)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    throughput = Throughput(None, args.seconds, args.threads)
    if args.measured:
        rows = [row for folder in args.measured for row in _again(folder, throughput)]
    elif args.recipe:
        if args.out is None:
            parser.error("--recipe needs --out (a fresh folder)")
        rows = _run_now(args, throughput)
    else:
        rows = _committed(args.results, throughput)
    return _print(rows, throughput)


def _committed(results_root: Path, throughput: Throughput) -> list[tuple[str, str, float, float]]:
    rows = []
    for path in sorted(results_root.glob("*/results.json")):
        results = json.loads(path.read_text())
        config = ExperimentConfig.model_validate(results["config"])
        if config.data is not None:
            continue  # own data: its folder is not here
        measured = dict(results.get("timings_seconds", {}))
        done = _done(measured)
        estimates = _estimates(config, Path("/nonexistent-plan-estimate"), throughput, done)
        if done & {run.name for run in config.expanded_runs()}:
            # which per-run evaluation, region and probe files and figures that invocation found is not
            # recorded (a cached run's files may have been recomputed for a new direction or sample count)
            for stage in INFERENCE_STAGES:
                measured.pop(stage, None)
        for name, info in results.get("runs", {}).items():  # the run's own wall time, where recorded
            if info.get("train_seconds") and measured.get(f"train {name}", 0) > 0:
                measured[f"train {name}"] = info["train_seconds"]
        rows += _pairs(path.parent.name, estimates, measured)
    return rows


def _run_now(args, throughput: Throughput) -> list[tuple[str, str, float, float]]:
    from pairless.commands.run import main as run_main
    from pairless.experiments.recipes import get_recipe

    compare = [tuple(item.split(":")) for item in args.compare]
    config = get_recipe(args.recipe, args.preset, data=args.data, compare=compare)
    started = time.perf_counter()
    estimates = _estimates(config, args.out, throughput)
    print(f"planned in {time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.1f}")
    argv = [args.recipe, "--preset", args.preset, "--out", str(args.out), "--threads", str(args.threads)]
    argv += ["--data", args.data] if args.data else []
    for item in args.compare:
        argv += ["--compare", item]
    started = time.perf_counter()
    if run_main(argv) != 0:
        raise SystemExit("the run failed")
    wall = time.perf_counter() - started
    print(f"ran in {wall:.0f} s (estimated {sum(estimates.values()):.0f} s); load average "
          f"{os.getloadavg()[0]:.1f}")
    return _pairs(f"{args.recipe} {args.preset}", estimates, _measured(Plan(config, args.out).recipe_dir))


def _again(recipe_dir: Path, throughput: Throughput) -> list[tuple[str, str, float, float]]:
    """A fresh run made earlier (``--measured``), estimated again now as if nothing were cached."""
    results = json.loads((recipe_dir / "results.json").read_text())
    config = ExperimentConfig.model_validate(results["config"])
    estimates = _estimates(config, Path("/nonexistent-plan-estimate"), throughput)
    return _pairs(f"{config.recipe} {config.preset}", estimates, _measured(recipe_dir))


def _measured(recipe_dir: Path) -> dict[str, float]:
    """The stage times a run recorded; tokenizers and shards split by the tokenizers' timings.json."""
    results = json.loads((recipe_dir / "results.json").read_text())
    measured = dict(results["timings_seconds"])
    tokenizer_timings = Path(results["paths"]["tokenizers"]) / "timings.json"
    if not tokenizer_timings.is_absolute():
        tokenizer_timings = recipe_dir.parent / "cache" / tokenizer_timings.parent.name / "timings.json"
    if measured.get("tokenizers+shards") and tokenizer_timings.is_file():
        tokenizers = json.loads(tokenizer_timings.read_text())["total_seconds"]
        measured["tokenizers"] = tokenizers
        measured["shards"] = measured.pop("tokenizers+shards") - tokenizers
    return measured


INFERENCE_STAGES = ("evaluation", "regions", "probes", "snapshots", "generation")


def _done(measured: dict[str, float]) -> set[str]:
    """What a recorded invocation found cached (its cache is not here): the stages and runs it timed at
    0 s (the runner rounds to 0.1 s; a cached run takes ~0.0, a trained one minutes)."""
    done = set()
    for key, seconds in measured.items():
        if seconds <= 0.05:
            name = key.split(" ")[-1] if key.startswith(("train ", "add ")) else key
            done |= {"tokenizers", "shards"} if name == "tokenizers+shards" else {name}
    return done


def _estimates(config, out: Path, throughput: Throughput, done: set[str] | None = None) -> dict[str, float]:
    """Per stage key, the plan's seconds for what is not cached (``done``: assumed made before, see
    :class:`~pairless.experiments.inference_work.CacheState`; None: the files under ``out``)."""
    plan = Plan(config, out, throughput.device_type)  # the runs keyed as the device planned for keys them
    rows, _ = plan_stages(plan, throughput, None if done is None else CacheState(plan, done))
    return {row.key: row.seconds for row in rows if row.seconds is not None and not row.cached}


def _pairs(source: str, estimates: dict, measured: dict) -> list[tuple[str, str, float, float]]:
    """(source, stage, estimated, measured) for every stage measured with a nonzero time."""
    if "tokenizers+shards" in measured:  # committed results time both together
        estimates = {**estimates, "tokenizers+shards": estimates.pop("tokenizers", 0.0)
                     + estimates.pop("shards", 0.0)}
    out = []
    for stage, seconds in measured.items():
        if seconds and seconds > 0.05 and stage in estimates:
            out.append((source, stage, estimates[stage], seconds))
    return out


def _print(rows, throughput: Throughput) -> int:
    if not rows:
        print("no timed stages found", file=sys.stderr)
        return 1
    print(f"{'results':<24} {'stage':<34} {'estimated s':>11} {'measured s':>10} {'ratio':>6}")
    ratios = []
    for source, stage, estimated, measured in rows:
        ratio = estimated / measured
        ratios.append(ratio)
        print(f"{source:<24} {stage:<34} {estimated:>11.1f} {measured:>10.1f} {ratio:>6.2f}")
    within = sum(abs(ratio - 1) <= 0.30 for ratio in ratios) / len(ratios)
    total_estimated = sum(row[2] for row in rows)
    total_measured = sum(row[3] for row in rows)
    rates = ", ".join(f"{name} {rate / 1e12:.3f}" for name, rate in throughput.measured.items())
    print(f"\n{len(ratios)} stages: median estimated/measured {statistics.median(ratios):.2f}, {within:.0%} "
          f"within 30%; in all {total_estimated:.0f} s estimated, {total_measured:.0f} s measured "
          f"({total_estimated / total_measured:.2f}); measured TFLOP/s: {rates}; {torch.get_num_threads()} "
          "torch threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
