"""The runner's measuring stages: translation CE, object / background CE, alignment probes, snapshots along
training, generation figures with decoded metrics, and the unpaired analysis, each over the runs that
:mod:`pairless.experiments.stages` trained.

Per-run results are cached outside the run folder (``cache/evals``, ``cache/probes``, ``cache/regions``: the
runner's :class:`~pairless.experiments.runner.Plan` names the files), stamped with the hash of the weights
they were computed from, so a run trained again under the same key is measured again. Thread count and
device come from the runner's :class:`~pairless.utils.runtime.Runtime`, outside every cache key.
"""

from __future__ import annotations

from pathlib import Path

from pairless.data.shards import open_shards
from pairless.experiments.experiment import ExperimentConfig, TrainingRun
from pairless.experiments.stages import runtime_or_default
from pairless.inference.evaluate import evaluate_directions, load_run_model, run_shards_path
from pairless.inference.probes import probe_model
from pairless.inference.regions import evaluate_regions
from pairless.inference.translations import generate_and_score
from pairless.inference.unpaired import unpaired_analysis
from pairless.modalities import Pair, parse_direction
from pairless.training.saving import SNAPSHOT_FILE, snapshot_folder
from pairless.utils.runtime import Runtime
from pairless.utils.storage import atomic_write_json, read_json
from pairless.utils.tensor_files import weights_digest


def analyse_unpaired(config: ExperimentConfig, plan, runtime: Runtime | None = None) -> dict:
    """For each pair never recorded together, both directions with the all-data run (the first run):
    direct, chained, bridge-proxy, no-input and cycle measures (pairless.inference.unpaired)."""
    if not config.unpaired:
        return {}
    runtime = runtime_or_default(runtime)
    run = config.runs[0]
    out = {}
    for pair in config.unpaired:
        a, b = Pair.parse(pair)
        bridges = config.bridges.get(pair, [])
        for src, dst in ((a, b), (b, a)):
            try:
                folder = Path("unpaired") / f"{src}-to-{dst}"  # relative to the recipe folder
                out[f"{src}:{dst}"] = {"run": run.name, "pair": pair, **unpaired_analysis(
                    plan.runs[run.name], src, dst, bridges, plan.tokenizers, plan.shards,
                    plan.recipe_dir / folder, num=max(config.decoded_samples, 1), threads=runtime.threads,
                    device=runtime.device),
                    "figure": str(folder / "figure.png")}
            except ValueError as error:  # e.g. no held-out sample has src
                out[f"{src}:{dst}"] = {"run": run.name, "pair": pair, "skipped": str(error)}
    return out


def snapshot_runs(run: TrainingRun, run_dir: Path, config: ExperimentConfig, plan,
                  runtime: Runtime | None = None) -> dict:
    """Evaluations and probes of a run's snapshots along training (``run.snapshots``), cached like the final
    weights'; {fraction: {"fraction", "step", "tokens", "evals", "probes"}} of those that exist."""
    out = {}
    for fraction in run.snapshots:
        folder = snapshot_folder(run_dir, fraction)
        if not (folder / SNAPSHOT_FILE).is_file():
            continue
        tag = f"{fraction:g}"
        out[tag] = {**read_json(folder / SNAPSHOT_FILE),
                    "evals": evaluate_run(run, folder, config, plan.eval_file(run.name, tag), runtime),
                    "probes": probe_run_pairs(run, folder, config, plan.probe_file(run.name, tag), runtime)}
    return out


def _directions_for(run: TrainingRun, directions: list[str]) -> list[str]:
    """Directions whose modalities all lie inside the run's training universe."""
    if run.universe is None:
        return list(directions)
    allowed = set(run.universe)
    out = []
    for direction in directions:
        sources, destination = parse_direction(direction)
        if {*sources, destination} <= allowed:
            out.append(direction)
    return out


WEIGHTS_KEY = "_weights"  # in a per-run cache file: the hash of the weights it was computed from


def read_run_cache(cache_file: Path, run_dir: Path) -> dict:
    """A per-run cache (evaluations, probes, regions) if it was computed from the run's present weights, else
    empty: a run trained again under the same config (its folder deleted, say) is evaluated again. A file
    from before the weights were stamped counts when it is newer than the weights."""
    if not cache_file.is_file():
        return {}
    cached = read_json(cache_file)
    stamp = cached.pop(WEIGHTS_KEY, None)
    if stamp is not None:
        return cached if stamp == weights_digest(run_dir) else {}
    weights = run_dir / "model.safetensors"
    fresh = weights.is_file() and cache_file.stat().st_mtime >= weights.stat().st_mtime
    return cached if fresh else {}


def write_run_cache(cache_file: Path, cached: dict, run_dir: Path) -> None:
    atomic_write_json(cache_file, {**cached, WEIGHTS_KEY: weights_digest(run_dir)})


def evaluate_run(run: TrainingRun, run_dir: Path, config: ExperimentConfig, cache_file: Path,
                 runtime: Runtime | None = None) -> dict:
    """Translation CE of one run for the recipe's directions, cached per (run, samples)."""
    cached = read_run_cache(cache_file, run_dir)
    wanted = [d for d in _directions_for(run, config.directions) if d not in cached]
    if wanted:
        runtime = runtime_or_default(runtime)
        results = evaluate_directions(run_dir, wanted, num_samples=config.eval_samples,
                                      batch_size=config.eval_batch_size, threads=runtime.threads,
                                      device=runtime.device)
        cached.update(results)
        write_run_cache(cache_file, cached, run_dir)
    return {d: cached[d] for d in _directions_for(run, config.directions) if d in cached}


def make_figures(config: ExperimentConfig, plan, runtime: Runtime | None = None) -> dict:
    """Generation grids and decoded metrics for every figure of the recipe."""
    runtime = runtime_or_default(runtime)
    figures, metrics, chained = {}, {}, {}
    for figure in config.figures:
        runs = {name: plan.runs[name] for name in figure.runs if name in plan.runs}
        if not runs:
            continue
        direction = f"{figure.src}:{figure.dst}"
        if figure.via:
            out = plan.recipe_dir / "figures" / f"{figure.src}-to-{figure.via}-to-{figure.dst}"
            result = generate_and_score(runs=runs, src=figure.src, dst=f"{figure.via}:{figure.dst}",
                                        schedule=figure.schedule, num=max(figure.num, config.decoded_samples),
                                        tokenizers=plan.tokenizers, shards=plan.shards, out=out,
                                        figure_rows=figure.num, threads=runtime.threads,
                                        device=runtime.device)
            if result.get("figure"):
                name = f"{figure.src} → {figure.via} → {figure.dst} ({figure.schedule})"
                figures[name] = str(result["figure"])
            chained[direction] = {"via": figure.via, "metrics": result.get("metrics", {})}
            continue
        out = plan.recipe_dir / "figures" / f"{figure.src}-to-{figure.dst}"
        result = generate_and_score(runs=runs, src=figure.src, dst=figure.dst, schedule=figure.schedule,
                                    num=max(figure.num, config.decoded_samples), tokenizers=plan.tokenizers,
                                    shards=plan.shards, out=out, figure_rows=figure.num,
                                    threads=runtime.threads, device=runtime.device, no_input=True)
        if result.get("figure"):
            figures[f"{figure.src} → {figure.dst} ({figure.schedule})"] = str(result["figure"])
        metrics[direction] = result.get("metrics", {})
        scored = {name: plan.runs[name] for name in figure.scored_runs
                  if name in plan.runs and name not in runs}
        if scored:  # scored with the same samples and schedule, drawn in a grid of their own (not reported)
            extra = generate_and_score(runs=scored, src=figure.src, dst=figure.dst, schedule=figure.schedule,
                                       num=max(figure.num, config.decoded_samples),
                                       tokenizers=plan.tokenizers, shards=plan.shards,
                                       out=out.with_name(f"{out.name}-scored"), figure_rows=figure.num,
                                       threads=runtime.threads, device=runtime.device, no_input=True)
            no_input = {**extra.get("metrics", {}).get("_no_input", {}),
                        **metrics[direction].get("_no_input", {})}
            metrics[direction] = {**extra.get("metrics", {}), **metrics[direction],
                                  **({"_no_input": no_input} if no_input else {})}
    return {"figures": figures, "metrics": metrics, "chained": chained}


def probe_pairs(run: TrainingRun, directions: list[str]) -> list[str]:
    """The modality pairs of a run's single-source directions (``a:b`` once, whichever way it is asked)."""
    pairs: list[str] = []
    for direction in _directions_for(run, directions):
        sources, destination = parse_direction(direction)
        if len(sources) == 1 and not any(set(Pair.parse(p)) == {sources[0], destination} for p in pairs):
            pairs.append(f"{sources[0]}:{destination}")
    return pairs


def probe_run_pairs(run: TrainingRun, run_dir: Path, config: ExperimentConfig, cache_file: Path,
                    runtime: Runtime | None = None) -> dict:
    """Alignment probes of one run (last layer, shuffled control), cached per (run, samples, k)."""
    if not config.probe_samples:
        return {}
    cached = read_run_cache(cache_file, run_dir)
    wanted = [pair for pair in probe_pairs(run, config.directions) if pair not in cached]
    if wanted:
        runtime = runtime_or_default(runtime)
        model, shards = load_run_model(run_dir, runtime.device), open_shards(run_shards_path(run_dir), "val")
        for pair in wanted:
            first, second = Pair.parse(pair)
            try:
                result = probe_model(model, shards, first, second, config.probe_samples,
                                     config.eval_batch_size, runtime.threads, k=config.probe_neighbours)
                cached[pair] = {key: result[key] for key in ("num_samples", "k", "summary", "shuffled")}
            except ValueError as error:  # too few samples with both: say so in the report
                cached[pair] = {"skipped": str(error)}
        write_run_cache(cache_file, cached, run_dir)
    return {pair: cached[pair] for pair in probe_pairs(run, config.directions) if pair in cached}


def region_run(run: TrainingRun, run_dir: Path, config: ExperimentConfig, cache_file: Path,
               tokenizers: Path, runtime: Runtime | None = None) -> dict:
    """Object / background (images) and content / template (captions) CE of one run, cached per (run,
    samples); not on a user's data (its semseg classes need not mean the world's sky and floor)."""
    if not config.region_samples or config.data is not None:
        return {}
    cached = read_run_cache(cache_file, run_dir)
    directions = _directions_for(run, config.directions)
    wanted = [d for d in directions if d not in cached]
    if wanted:  # evaluate_regions splits the directions it applies to (region_directions); the rest: none
        runtime = runtime_or_default(runtime)
        results = evaluate_regions(run_dir, wanted, tokenizers, num_samples=config.region_samples,
                                   batch_size=config.eval_batch_size, threads=runtime.threads,
                                   device=runtime.device)
        for direction in wanted:
            cached[direction] = results.get(direction, {"skipped": "no token split for this destination"})
        write_run_cache(cache_file, cached, run_dir)
    return {d: cached[d] for d in directions if d in cached and "skipped" not in cached[d]}


def tokenizer_ceiling(tokenizers: Path) -> dict:
    report = tokenizers / "report.json"
    return read_json(report) if report.is_file() else {}
