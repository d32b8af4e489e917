"""Explorer speed: seconds for one click of "generate" in ``pairless explore`` (ROAR 8 steps, one 32x32
image, two runs side by side; target: <= 2 s on 2 cores).

    python benchmarks/explore_speed.py                      # two untrained tiny-preset models, micro data
    python benchmarks/explore_speed.py results/demo         # two runs of `make demo` (trained, tiny preset)
    python benchmarks/explore_speed.py results/demo --runs zs-rgb-depth,many-shot --repeats 7 --threads 1

What is timed is the generate button's callback (``pairless.inference.explore_page.translate``): the schedule,
both runs' rgb -> depth generation, decoding, the metric against the ground truth and the drawing of
the images, with models and tokenizers already loaded (the page loads them once per session; that load
is timed separately). Gradio's own cost (sending three small PNGs) is not included. Without a results
folder the micro demo is made in a temporary folder for its data and tokenizers, and two untrained
models of the tiny preset (what `make demo` trains; speed does not depend on the weights) are timed on
it. Prints figures only, with the load average.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from eval_speed import load

from pairless.experiments.recipes import get_recipe
from pairless.experiments.runner import run_experiment
from pairless.inference.catalogue import discover
from pairless.inference.explore import ExploreSession
from pairless.inference.explore_page import preset_values, translate
from pairless.model import FourM, ModelConfig, save_model
from pairless.utils.threads import choose_threads


def stand_in_runs(folder: Path) -> list[Path]:
    """Two untrained tiny-preset run folders (one zero-shot on rgb:depth) on the micro demo's data."""
    results = run_experiment(get_recipe("demo", "micro"), folder / "results")
    shards = json.loads((results / "results.json").read_text())["paths"]["shards"]
    from pairless.data.shards import open_shards

    specs = open_shards(shards, "val").specs
    runs = []
    for name, withheld in (("zero-shot", [["rgb", "depth"]]), ("many-shot", [])):
        run = folder / "runs" / name
        run.mkdir(parents=True)
        torch.manual_seed(0)
        save_model(run / "model.safetensors", FourM(ModelConfig.from_preset("tiny"), specs))
        (run / "config.json").write_text(json.dumps({"shards": shards, "fragment": {"withheld": withheld}}))
        runs.append(run)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="results or run folders (default: a stand-in)")
    parser.add_argument("--runs", default=None, help="the two runs, name,name (default: the first two)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the usable cores, never chosen from load)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        paths = args.paths or stand_in_runs(Path(scratch))
        catalogue = discover(paths)
        names = args.runs.split(",") if args.runs else list(catalogue.runs)[:2]
        session = ExploreSession(catalogue, threads=choose_threads(args.threads))
        started = time.perf_counter()
        session.warm(progress=lambda line: None)
        print(f"explore speed: runs {', '.join(names)}, threads {session.threads} {load()}")
        print(f"  loading {len(catalogue.runs)} models with their shards and tokenizers (once per session): "
              f"{time.perf_counter() - started:.2f} s")
        shards = catalogue.runs[names[0]].shards
        sample = session.sample(shards, 0)

        def click():
            fields = preset_values("roar8")
            return translate(session, sample, names, ["rgb"], [], "depth", "roar8", *fields, 0)

        click()  # the first generation of a process initialises kernels: not what a click costs
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            click()
            seconds.append(time.perf_counter() - started)
        each = ", ".join(f"{value:.3f}" for value in seconds)
        print(f"  generate (roar8, rgb -> depth, one 32x32 image, {len(names)} runs; decoded, scored and "
              f"drawn): median {statistics.median(seconds):.3f} s (runs {each}) {load()}")
        print("  target: <= 2 s")


if __name__ == "__main__":
    main()
