"""The runner's stages: thin calls into each stage's own entry point, skipped when cached.

Each function takes the stage's config and its output folder; when the folder
is complete (its ``COMPLETE.json`` marker exists) the stage is skipped, and
when it exists but is incomplete (a killed run) the stage resumes or redoes it.
"""

from __future__ import annotations

from pathlib import Path

from pairless.experiments.recipes import ExperimentConfig, TokenizerStage, TrainingRun, WorldStage
from pairless.storage import atomic_write_json, is_complete, read_json
from pairless.threads import choose_threads


class StageError(RuntimeError):
    """A stage's own entry point reported failure."""


def _call(module_main, argv: list[str], stage: str) -> None:
    code = module_main(argv)
    if code:
        raise StageError(f"stage {stage} failed (exit code {code}); arguments: {' '.join(argv)}")


def build_world(config: WorldStage, out: Path) -> None:
    if is_complete(out):
        return
    from pairless.world.cli import main as world_main

    _call(world_main, ["--out", str(out), "--num-scenes", str(config.num_scenes), "--size", str(config.size),
                       "--seed", str(config.seed), "--val-fraction", str(config.val_fraction)], "world")


def train_tokenizers(config: TokenizerStage, data: Path, out: Path) -> None:
    if is_complete(out):
        return
    from pairless.tokenizers.cli import main as tokenizers_main

    argv = ["train", "--data", str(data), "--out", str(out), "--preset", config.preset, "--seed", str(config.seed)]
    if config.modalities:
        argv += ["--modalities", *config.modalities]
    for override in config.overrides:
        argv += ["--set", override]
    _call(tokenizers_main, argv, "tokenizers")


def tokenize(data: Path, tokenizers: Path, out: Path) -> None:
    if is_complete(out):
        return
    from pairless.tokenizers.shards import main as tokenize_main

    _call(tokenize_main, ["--data", str(data), "--tokenizers", str(tokenizers), "--out", str(out)], "tokenize")


def train_run(run: TrainingRun, shards: Path, out: Path) -> dict:
    """Train (or resume, or reuse) one run; returns what the report needs about it."""
    if not is_complete(out):
        from pairless.train import main as train_main

        argv = ["--shards", str(shards), "--out", str(out), "--preset", run.model_preset,
                "--total-tokens", str(run.total_tokens), "--batch-size", str(run.batch_size),
                "--set", f"masking.input_budget={run.input_budget}",
                "--set", f"masking.target_budget={run.target_budget}",
                "--set", f"seed={run.seed}", "--set", f"fragment.seed={run.seed}"]
        for a, b in run.withheld:
            argv += ["--withhold", f"{a}:{b}"]
        if run.universe:
            argv += ["--universe", ",".join(run.universe)]
        for override in run.overrides:
            argv += ["--set", override]
        # Threads are chosen by load, outside the run's config hash: they change only the last bits. A resumed
        # run keeps the count its checkpoint recorded (``pairless train`` does that when none is given), so
        # that it continues bit-identically whatever the load is now.
        if out.exists():
            argv.append("--resume")
        else:
            argv += ["--set", f"num_threads={choose_threads()}"]
        _call(train_main, argv, f"train {run.name}")
    summary = read_json(out / "COMPLETE.json")
    return {"role": run.role, "label": run.label, "withheld": [list(p) for p in run.withheld],
            "universe": run.universe, "model_preset": run.model_preset, "seed": run.seed, "path": str(out),
            "total_tokens": run.total_tokens, "tokens_per_modality": summary.get("tokens_per_modality", {}),
            "train_seconds": summary.get("wall_seconds"), "final_loss": summary.get("final_loss")}


def _directions_for(run: TrainingRun, directions: list[str]) -> list[str]:
    """Directions whose modalities all lie inside the run's training universe."""
    if run.universe is None:
        return list(directions)
    allowed = set(run.universe)
    out = []
    for direction in directions:
        src, dst = direction.split(":")
        if set(src.split("+")) | {dst} <= allowed:
            out.append(direction)
    return out


def evaluate_run(run: TrainingRun, run_dir: Path, config: ExperimentConfig, cache_file: Path) -> dict:
    """Translation CE of one run for the recipe's directions, cached per (run, samples)."""
    cached = read_json(cache_file) if cache_file.is_file() else {}
    wanted = [d for d in _directions_for(run, config.directions) if d not in cached]
    if wanted:
        from pairless.evaluate import evaluate_directions

        results = evaluate_directions(run_dir, wanted, num_samples=config.eval_samples,
                                      batch_size=config.eval_batch_size)
        cached.update(results)
        atomic_write_json(cache_file, cached)
    return {d: cached[d] for d in _directions_for(run, config.directions) if d in cached}


def make_figures(config: ExperimentConfig, plan) -> dict:
    """Generation grids and decoded metrics for every figure of the recipe."""
    from pairless.generate_cli import generate_and_score

    figures, metrics = {}, {}
    for figure in config.figures:
        runs = {name: plan.runs[name] for name in figure.runs if name in plan.runs}
        if not runs:
            continue
        direction = f"{figure.src}:{figure.dst}"
        out = plan.recipe_dir / "figures" / f"{figure.src}-to-{figure.dst}"
        result = generate_and_score(runs=runs, src=figure.src, dst=figure.dst, schedule=figure.schedule,
                                    num=max(figure.num, config.decoded_samples), tokenizers=plan.tokenizers,
                                    shards=plan.shards, out=out, figure_rows=figure.num)
        if result.get("figure"):
            figures[f"{figure.src} → {figure.dst} ({figure.schedule})"] = str(result["figure"])
        metrics[direction] = result.get("metrics", {})
    return {"figures": figures, "metrics": metrics}


def tokenizer_ceiling(tokenizers: Path) -> dict:
    report = tokenizers / "report.json"
    return read_json(report) if report.is_file() else {}
