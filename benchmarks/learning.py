"""Learning efficiency: what quality a training configuration reaches for a given budget, on the demo's data.

Each configuration (a name plus ``--set``-style overrides for the trainer and, optionally, the tokenizers)
is trained on the demo recipe's world (12k scenes, 32x32, rgb/depth/normal/semseg), with checkpoints at a
few points of its token budget. At every checkpoint the benchmark measures, on held-out samples:

- translation cross-entropy and no-input cross-entropy (and their ratio) for rgb -> depth, rgb -> semseg,
  rgb -> normal and depth -> rgb: a ratio near 1 means the model ignores its input;

and on the final model the decoded generations (study schedules) scored against the tokenized ground
truth: rgb -> semseg mIoU, rgb -> depth abs_rel / delta<1.25, rgb -> normal angular error, next to the
tokenizers' own reconstruction ceiling, plus a grid figure per direction (look at it: are the objects of
the input where the prediction puts them?).

    python benchmarks/learning.py --configs default,token-std-1 --work /tmp/learning
    python benchmarks/learning.py --list

``--task caption``: the caption recipe's data instead (its tiny world of 22k scenes with all seven
modalities tokenized), its many-shot run (``--universe rgb,caption`` for a two-modality model that trains
faster), and per configuration: rgb -> caption CE and no-input CE, the same over the content words (colour,
shape, size, number) and the template words, caption -> rgb CE, and generated captions (the study's
``ar-caption`` schedule) scored by fact accuracy and BLEU-4, their texts saved beside the figures.

Results (one JSON per configuration, a markdown table and a curve figure) go to ``--work``; trained runs
are cached there by config hash, so re-running a configuration only re-prints it. Quality per CPU-minute is
read off the curves (x = training seconds of this machine; compare configurations run on one machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pairless.config import merged, overrides_as_data
from pairless.data.shards import open_shards
from pairless.experiments import stages
from pairless.experiments.experiment import TokenizerStage, TrainingRun
from pairless.experiments.recipes import caption, demo
from pairless.inference.evaluate import translation_ce
from pairless.inference.regions import evaluate_regions
from pairless.inference.translations import generate_and_score
from pairless.model import load_model
from pairless.training.checkpoint import MODEL_FILE
from pairless.utils.storage import atomic_write_json, atomic_write_text, config_hash, read_json
from pairless.utils.threads import choose_threads

DIRECTIONS = ["rgb:depth", "rgb:semseg", "rgb:normal", "depth:rgb"]
DECODED = {"rgb:depth": "roar1", "rgb:semseg": "roar1", "rgb:normal": "roar1", "depth:rgb": "roar8"}
# --task caption (the caption recipe's data and many-shot run)
CAPTION_DIRECTIONS = ["rgb:caption", "caption:rgb"]
CAPTION_DECODED = {"rgb:caption": "ar-caption"}

# name -> {"train": trainer overrides, "tokenizers": tokenizer-trainer overrides}; "default" is today's
# recipe.
CONFIGS: dict[str, dict[str, list[str]]] = {
    "default": {},
    "token-std-0.02": {"train": ["model.token_init_std=0.02"]},  # the default until 2026-12
    # the whole recipe until 2026-12 and today's, each with its tokenizers named explicitly (so that a cache
    # of either kind is never mistaken for the other)
    "before-2026-12": {"train": ["model.token_init_std=0.02", "batch_size=64", "base_lr=0.004"],
                       "tokenizers": ["spatial.modality_levels={}"]},
    "adopted-2026-12": {"tokenizers": ['spatial.modality_levels={"semseg":[4,4,4],"depth":[5,5,5],'
                                       '"normal":[8,5,5]}']},
    # the tiny study's sharper image tokenizers (its preset's spatial settings) on the demo's data
    "tiny-tokenizers": {"tokenizers": ["spatial.steps=1600", "spatial.batch_size=64", "spatial.width=64",
                                       "modality_steps.rgb=3000"]},
    "token-std-1": {"train": ["model.token_init_std=1.0"]},
    "position-0.02": {"train": ["model.position_scale=0.02"]},
    "lr-x3": {"train": ["base_lr=0.012"]},
    "lr-x3-token-std-1": {"train": ["base_lr=0.012", "model.token_init_std=1.0"]},
    "local-tokens": {"train": ["model.token_init_std=1.0"], "tokenizers": ["spatial.encoder_kernel=1"]},
    "alphas-mix": {"train": ["model.token_init_std=1.0", "masking.alphas=[0.05,0.5,1.0]"]},
    "batch-32": {"train": ["model.token_init_std=1.0", "batch_size=32", "base_lr=0.008"]},  # same peak lr
    "batch-16": {"train": ["model.token_init_std=1.0", "batch_size=16", "base_lr=0.016"]},
    "batch-32-lr-x2": {"train": ["model.token_init_std=1.0", "batch_size=32", "base_lr=0.016"]},
    "batch-32-small-codebooks": {"train": ["model.token_init_std=1.0", "batch_size=32", "base_lr=0.008"],
                                 "tokenizers": ['spatial.modality_levels={"semseg":[4,4,4],"depth":[5,5,5],'
                                                '"normal":[8,5,5]}']},
    "wide-shallow": {"train": ["model.token_init_std=1.0", "model.dim=256", "model.heads=4",
                               "model.encoder_layers=3", "model.decoder_layers=3"]},
    "small-codebooks": {"train": ["model.token_init_std=1.0"],
                        "tokenizers": ['spatial.modality_levels='
                                       '{"semseg":[4,4,4],"depth":[5,5,5],"normal":[8,5,5]}']},
    # against today's default: rgb's target loss weighs half / twice the others'; fewer inputs and more
    # targets per sample, or the reverse (the total per sample stays 128 tokens)
    "rgb-loss-0.5": {"train": ['loss_weights={"rgb":0.5}']},
    "rgb-loss-2": {"train": ['loss_weights={"rgb":2.0}']},
    "budgets-32-96": {"train": ["masking.input_budget=32", "masking.target_budget=96"]},
    "budgets-96-32": {"train": ["masking.input_budget=96", "masking.target_budget=32"]},
    # the schedule against today's (5% linear warm-up, cosine to 10% of the peak): shorter / longer warm-up,
    # cosine to zero, no decay at all
    "warmup-1pct": {"train": ["warmup_fraction=0.01"]},
    "warmup-20pct": {"train": ["warmup_fraction=0.2"]},
    "min-lr-0": {"train": ["min_lr_fraction=0.0"]},
    "constant-lr": {"train": ["min_lr_fraction=1.0"]},
    # the learned modality embedding starts at std 0.02 against positions of amplitude 1
    "modality-std-1": {"train": ["model.modality_init_std=1.0"]},
    "modality-std-0.3": {"train": ["model.modality_init_std=0.3"]},
    "lr-x2": {"train": ["base_lr=0.016"]},  # peak 2e-3 at batch 32
    # ml-4m's architecture choices (docs/ml4m.md), alone, together, and all of them (model.style=ml4m),
    # each from the model before 2026-12-07 (GELU, the encoder output as context); measured in
    # docs/learning.md, which made SwiGLU with the context projection the default ("default" above)
    "pairless-before": {"train": ["model.mlp=gelu", "model.context_projection=false"]},
    "ml4m-swiglu": {"train": ["model.mlp=swiglu", "model.context_projection=false"]},
    "ml4m-context": {"train": ["model.mlp=gelu", "model.context_projection=true"]},
    "ml4m-swiglu-context": {"train": ["model.mlp=swiglu", "model.context_projection=true"]},
    "ml4m-all": {"train": ["model.style=ml4m"]},
    # sequence masking (pairless.training.masking; mostly for --task caption): 4M's span masking, a share
    # of samples predicting a sequence whole from the other modalities, and both
    "span": {"train": ["masking.sequence_masking=span"]},
    "whole-0.25": {"train": ["masking.whole_sequence_fraction=0.25"]},
    "whole-0.5": {"train": ["masking.whole_sequence_fraction=0.5"]},
    "whole-0.8": {"train": ["masking.whole_sequence_fraction=0.8"]},
    "whole-1.0": {"train": ["masking.whole_sequence_fraction=1.0"]},
    "span-whole-0.5": {"train": ["masking.sequence_masking=span", "masking.whole_sequence_fraction=0.5"]},
}


def parse_config(text: str) -> tuple[str, dict[str, list[str]]]:
    """``name`` from CONFIGS, or ``name=train:k=v;k=v|tokenizers:k=v`` for a new one."""
    if "=" not in text.split(":")[0]:
        if text not in CONFIGS:
            raise SystemExit(f"learning.py: unknown configuration {text!r}; known: {', '.join(CONFIGS)}")
        return text, CONFIGS[text]
    name, spec = text.split("=", 1)
    config: dict[str, list[str]] = {}
    for part in spec.split("|"):
        section, _, items = part.partition(":")
        if section not in ("train", "tokenizers"):
            raise SystemExit(f"learning.py: {text!r}: section {section!r} is not train or tokenizers")
        config[section] = [item for item in items.split(";") if item]
    return name, config


def prepare_data(work: Path, tokenizer_overrides: list[str], task: str = "images") -> tuple[Path, Path]:
    """The demo's (or the caption recipe's) world, tokenizers and token shards (cached by config hash under
    ``work``)."""
    recipe = caption("tiny") if task == "caption" else demo("tiny")
    world_key = config_hash(recipe.world)  # the runner's keys: `pairless run demo`'s cache folders are reused
    world = work / f"world-{world_key}"
    # the configuration's `--set` text becomes typed settings here, at the script's edge
    tokenizer_stage = TokenizerStage(**{**recipe.tokenizers.model_dump(), "settings": merged(
        recipe.tokenizers.settings, overrides_as_data(tokenizer_overrides))})
    key = config_hash({"world": world_key, "tokenizers": stages.tokenizer_key_fields(tokenizer_stage)})
    tokenizers, shards = work / f"tokenizers-{key}", work / f"shards-{key}"
    stages.build_world(recipe.world, world)
    stages.train_tokenizers(tokenizer_stage, world, tokenizers)
    stages.tokenize(world, tokenizers, shards)
    return tokenizers, shards


def training_run(name: str, overrides: list[str], tokens: int, seed: int, checkpoints: int,
                 task: str = "images", universe: list[str] | None = None) -> TrainingRun:
    # the many-shot run: all modalities aligned (the demo's four, or the caption recipe's seven)
    recipe_run = caption("tiny").runs[1] if task == "caption" else demo("tiny").runs[1]
    steps = tokens // (recipe_run.batch_size * (recipe_run.input_budget + recipe_run.target_budget))
    every = max(1, steps // checkpoints)
    fragment = {"seed": seed, **({"universe": list(universe)} if universe else {})}
    run = recipe_run.with_train(total_tokens=tokens, seed=seed, fragment=fragment,
                                **merged(overrides_as_data([f"checkpoint_every={every}",
                                                            f"keep_checkpoints={checkpoints + 1}"]),
                                         overrides_as_data(overrides)))
    return run.model_copy(update={"name": name})


def checkpoint_folders(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("step-*"))


def evaluate_weights(weights: Path, shards: Path, samples: int, threads: int | None,
                     directions: list[str] = DIRECTIONS) -> dict:
    model = load_model(weights)
    data = open_shards(shards, "val")
    out, unconditional = {}, {}
    for direction in directions:
        src, dst = direction.split(":")
        row = translation_ce(model, data, [src], dst, samples, 128, unconditional, choose_threads(threads))
        out[direction] = {"ce": row["ce"], "ce_unconditional": row["ce_unconditional"],
                          "ratio": row["ce"] / row["ce_unconditional"]}
    return out


def measure(name: str, config: dict, args) -> dict:
    tokenizers, shards = prepare_data(args.work, config.get("tokenizers", []), args.task)
    universe = args.universe.split(",") if args.universe else None
    run = training_run(name, config.get("train", []), args.tokens, args.seed, args.checkpoints, args.task,
                       universe)
    # The key holds the resolved TrainConfig (the runner's): a configuration named by its overrides alone
    # would otherwise reuse a run trained before a default changed. The checkpoints make the curve.
    key = config_hash({"shards": shards.name, "train": stages.run_key_fields(run),
                       "checkpoints": args.checkpoints})
    folder = args.work / "runs" / f"{name}-{key}"
    result_file = folder.parent / f"{folder.name}.result.json"  # (a dot in a name is no suffix)
    if result_file.is_file():
        return read_json(result_file)
    if args.task == "caption":
        return measure_caption(name, config, args, run, tokenizers, shards, folder, result_file)
    info, train_seconds = _train(run, args, shards, folder)
    curve = []
    for checkpoint in checkpoint_folders(folder):
        curve.append({"step": int(checkpoint.name.split("-")[1]),
                      **evaluate_weights(checkpoint / MODEL_FILE, shards, args.curve_samples, args.threads)})
    final = evaluate_weights(folder / MODEL_FILE, shards, args.samples, args.threads)
    decoded = _decoded(name, folder, DECODED, args, tokenizers, shards)
    result = {"name": name, "config": config, "tokens": info["total_tokens"], "train_seconds": train_seconds,
              "final_loss": info["final_loss"], "seed": args.seed, "final": final, "decoded": decoded,
              "ceiling": read_json(tokenizers / "report.json"), "curve": _curve_times(folder, curve),
              "run": str(folder)}
    atomic_write_json(result_file, result)
    return result


def _train(run: TrainingRun, args, shards: Path, folder: Path) -> tuple[dict, float]:
    """Train (or resume) ``run`` into ``folder`` on the benchmark's threads: its info and seconds."""
    if args.threads:
        run = run.model_copy(update={"train": {**run.train, "num_threads": args.threads}})
    started = time.perf_counter()
    info = stages.train_run(run, shards, folder)
    return info, info["train_seconds"] or (time.perf_counter() - started)


def _decoded(name: str, folder: Path, schedules: dict, args, tokenizers: Path, shards: Path) -> dict:
    """Each direction's generations scored (figures under WORK/figures/NAME): ``{direction: metrics}``."""
    decoded = {}
    for direction, schedule in schedules.items():
        src, dst = direction.split(":")
        scored = generate_and_score(runs={name: folder}, src=src, dst=dst, schedule=schedule,
                                    num=args.decoded, tokenizers=tokenizers, shards=shards,
                                    out=args.work / "figures" / name / f"{src}-to-{dst}", figure_rows=6)
        decoded[direction] = scored["metrics"][name]
    return decoded


def measure_caption(name: str, config: dict, args, run: TrainingRun, tokenizers: Path, shards: Path,
                    folder: Path, result_file: Path) -> dict:
    """:func:`measure` for ``--task caption``: CE, content / template word CE, generated captions' facts."""
    info, train_seconds = _train(run, args, shards, folder)
    curve = [{"step": int(checkpoint.name.split("-")[1]),
              **evaluate_weights(checkpoint / MODEL_FILE, shards, args.curve_samples, args.threads,
                                 ["rgb:caption"])} for checkpoint in checkpoint_folders(folder)]
    final = evaluate_weights(folder / MODEL_FILE, shards, args.samples, args.threads, CAPTION_DIRECTIONS)
    regions = evaluate_regions(folder, ["rgb:caption"], tokenizers, num_samples=args.samples,
                               threads=args.threads)
    decoded = _decoded(name, folder, CAPTION_DECODED, args, tokenizers, shards)
    result = {"name": name, "task": "caption", "config": config, "universe": run.universe,
              "tokens": info["total_tokens"], "train_seconds": train_seconds,
              "final_loss": info["final_loss"], "seed": args.seed, "final": final, "regions": regions,
              "decoded": decoded,
              "curve": _curve_times(folder, curve), "run": str(folder)}
    atomic_write_json(result_file, result)
    return result


def caption_table(results: list[dict]) -> str:
    head = ["config", "tok/s", "loss", "rgb→caption CE/none (ratio)", "content words", "template words",
            "fact accuracy", "bleu4", "caption→rgb CE/none (ratio)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        final, decoded = result["final"], result["decoded"]["rgb:caption"]
        regions = next(iter(result["regions"].values()), {})
        cells = [result["name"], f"{result['tokens'] / max(result['train_seconds'], 1e-9):,.0f}",
                 f"{result['final_loss']:.3f}"]
        for direction in ("rgb:caption",):
            cells.append(f"{final[direction]['ce']:.3f}/{final[direction]['ce_unconditional']:.3f} "
                         f"(**{final[direction]['ratio']:.2f}**)")
        cells += [f"{regions.get(group, {}).get('ratio', float('nan')):.2f}"
                  for group in ("content", "template")]
        cells += [f"{decoded.get(metric, float('nan')):.3f}" for metric in ("fact_accuracy", "bleu4")]
        into_rgb = final["caption:rgb"]
        cells.append(f"{into_rgb['ce']:.3f}/{into_rgb['ce_unconditional']:.3f} ({into_rgb['ratio']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _curve_times(folder: Path, curve: list[dict]) -> list[dict]:
    """Training seconds at each checkpoint step, from the run's log (the nearest logged step)."""
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    for point in curve:
        before = [entry for entry in log if entry.get("step", 0) <= point["step"]]
        point["seconds"] = before[-1].get("seconds") if before else None
        point["tokens"] = before[-1].get("tokens") if before else None
    return curve


def table(results: list[dict]) -> str:
    head = ["config", "tok/s", "loss"] + [f"{d} CE/none" for d in DIRECTIONS]
    head += ["semseg mIoU (ceil)", "depth abs_rel (ceil)", "normal deg (ceil)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        final, decoded, ceiling = result["final"], result["decoded"], result["ceiling"]
        cells = [result["name"], f"{result['tokens'] / max(result['train_seconds'], 1e-9):,.0f}",
                 f"{result['final_loss']:.3f}"]
        cells += [f"{final[d]['ce']:.3f}/{final[d]['ce_unconditional']:.3f} ({final[d]['ratio']:.2f})"
                  for d in DIRECTIONS]
        cells.append(f"{decoded['rgb:semseg'].get('miou', float('nan')):.3f} "
                     f"({ceiling.get('semseg', {}).get('miou', float('nan')):.3f})")
        cells.append(f"{decoded['rgb:depth'].get('abs_rel', float('nan')):.3f} "
                     f"({ceiling.get('depth', {}).get('abs_rel', float('nan')):.3f})")
        cells.append(f"{decoded['rgb:normal'].get('angular_error', float('nan')):.1f} "
                     f"({ceiling.get('normal', {}).get('angular_error_degrees', float('nan')):.1f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_figure(results: list[dict], path: Path, directions: list[str] = DIRECTIONS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(directions), figsize=(4 * len(directions), 3.2), squeeze=False)
    for axis, direction in zip(axes[0], directions, strict=True):
        for result in results:
            points = [(p["seconds"] / 60, p[direction]["ratio"]) for p in result["curve"] if p.get("seconds")]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=result["name"])
        axis.set_title(f"{direction}: CE / no-input CE")
        axis.set_xlabel("training minutes")
        axis.axhline(1.0, color="grey", lw=0.5)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="default,token-std-1",
                        help="comma-separated names (see --list) or name=train:k=v;k=v|tokenizers:k=v")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pairless-learning"))
    parser.add_argument("--tokens", type=int, default=4_000_000, help="training budget per configuration")
    parser.add_argument("--checkpoints", type=int, default=4, help="curve points along the budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=1000, help="val samples for the final CE")
    parser.add_argument("--curve-samples", type=int, default=200, help="val samples per curve point")
    parser.add_argument("--decoded", type=int, default=64, help="generations scored per direction")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the usable cores, never chosen from load)")
    parser.add_argument("--task", choices=["images", "caption"], default="images",
                        help="images: the demo's data and directions; caption: the caption recipe's")
    parser.add_argument("--universe", default=None,
                        help="comma-separated modalities to train on (default: the recipe run's, all)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="a trainer override added to every configuration (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the known configurations and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, config in CONFIGS.items():
            print(f"{name:<24} {json.dumps(config)}")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    configs = [parse_config(text) for text in _split(args.configs)]
    if args.extra:
        configs = [(name, {**config, "train": [*config.get("train", []), *args.extra]})
                   for name, config in configs]
    results = [measure(name, config, args) for name, config in configs]
    text = caption_table(results) if args.task == "caption" else table(results)
    print(text)
    stamp = "-".join(result["name"] for result in results)[:80]
    atomic_write_text(args.work / f"table-{stamp}.md", text + "\n")
    curve_figure(results, args.work / f"curves-{stamp}.png",
                 ["rgb:caption"] if args.task == "caption" else DIRECTIONS)
    print(f"curves: {args.work / f'curves-{stamp}.png'}; figures: {args.work / 'figures'}")
    return 0


def _split(text: str) -> list[str]:
    """Comma-separated configs; commas inside a ``name=...`` spec separate nothing (use ';' there)."""
    return [part for part in text.split(",") if part]


if __name__ == "__main__":
    sys.exit(main())
